"""Failure reports: what went wrong with a VM, in plain words, with what is needed to debug it.

Pure: it reads QEMU's stderr text and the console's tail. :func:`user_error`
says what the user can change when QEMU failed because of their set-up: a
start that fails for one of these reasons must not be blamed on a snapshot
(which is then kept) and must not be retried by booting. :func:`failure_report`
is the text of every error a VM raises.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

_PANIC = re.compile(r"Kernel panic - not syncing:[^\n]*")

_KNOWN = (
    (
        re.compile(
            r'Failed to get "write" lock.*?'
            r"Is another process using the image \[(?P<path>[^\]]+)\]",
            re.S,
        ),
        "the disk image {path} is in use by another VM (or another QEMU): open it read-only "
        "(Disk(..., read_only=True)), give each VM its own overlay (the default, unless "
        "persistent=True), or give each VM its own copy",
    ),
    (
        re.compile(r'Failed to get "write" lock'),
        "a disk image is in use by another VM (or another QEMU): open it read-only, or give "
        "each VM its own overlay or copy",
    ),
    (
        re.compile(
            r"vvfat.*?(?P<detail>Directory does not fit in FAT\d+|too many|too large)[^\n]*",
            re.S | re.I,
        ),
        "a ReadOnlyDirectory (FAT) holds too much for QEMU's virtual FAT driver: {detail}; "
        "share it with P9Directory instead",
    ),
    (
        # QEMU 7.2: "could not load PC BIOS 'bios-256k.bin'", "Could not find ROM image 'x'".
        re.compile(r"(?:could not load PC BIOS|Could not find ROM image) '(?P<file>[^']+)'", re.I),
        "QEMU cannot find the firmware file {file}: firmware comes with QEMU's packages and "
        "those they depend on (on Debian and Ubuntu: seabios, ipxe-qemu, qemu-system-data, "
        "ovmf, opensbi, qemu-efi-*); install them, or name a file that exists",
    ),
)


#: What a guest's console says when its firmware gave up before starting a kernel.
_FIRMWARE_REFUSALS = (
    (
        # EDK II: LoadImage/StartImage of an image whose signature is not in db.
        re.compile(r"Security Violation"),
        "secure boot: the UEFI firmware refused to start an image not signed with a key "
        "in its database (Microsoft's); Debian's kernels and GRUB are signed for shim, not "
        "for the firmware: with secure_boot=True boot a disk image through shim, or leave "
        "secure_boot off",
    ),
    (
        re.compile(r"BdsDxe: No bootable option or device was found"),
        "the UEFI firmware found nothing it could boot: no kernel it could load, and no "
        "disk with an EFI system partition holding EFI/BOOT/BOOT<arch>.EFI",
    ),
)


def firmware_refusal(console: str) -> str | None:
    """Why the firmware started no kernel, if the *console* text says so; else None."""
    for pattern, explanation in _FIRMWARE_REFUSALS:
        if pattern.search(console):
            return explanation
    return None


def user_error(stderr: str) -> str | None:
    """A plain explanation of *stderr* if QEMU failed because of the user's set-up, else None."""
    for pattern, explanation in _KNOWN:
        match = pattern.search(stderr)
        if match:
            return explanation.format(**match.groupdict())
    return None


def failure_report(
    headline: str,
    *,
    argv: Sequence[str],
    status: int | None,
    stderr: str,
    stderr_log: Path,
    console_tail: str,
    console_log: Path,
) -> str:
    """*headline*, its likely cause and what is needed to debug it: QEMU's exit status,
    command line and stderr, and the console's last lines (with a kernel panic named)."""
    if stderr and (explanation := user_error(stderr)) is not None:
        headline += f"\nlikely cause: {explanation}"
    if refusal := firmware_refusal(console_tail):
        headline += f"\nlikely cause: {refusal}"
    if panic := _PANIC.search(console_tail):
        headline += f"\nthe guest kernel panicked: {panic.group(0).strip()}"
    lines = [
        headline,
        f"QEMU exit status: {status}" if status is not None else "QEMU was running",
        f"command line: {shlex.join(argv)}",
        f"QEMU stderr ({stderr_log}):\n{stderr or '(empty)'}",
        f"last console lines ({console_log}):\n{console_tail or '(empty)'}",
    ]
    return "\n".join(lines)


def describe(error: BaseException) -> str:
    """*error* in words, even when its message is empty (a bare ``TimeoutError()``)."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
