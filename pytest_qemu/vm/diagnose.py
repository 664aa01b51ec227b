"""Recognising QEMU errors that come from the user's set-up, not from pytest-qemu.

Pure: it reads QEMU's stderr text and says, in plain words, what the user can
change. A start that fails for one of these reasons must not be blamed on a
snapshot (which is then kept) and must not be retried by booting.
"""

from __future__ import annotations

import re

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
        "qemu-efi-aarch64, ovmf, opensbi); install them, or name a file that exists",
    ),
)


def user_error(stderr: str) -> str | None:
    """A plain explanation of *stderr* if QEMU failed because of the user's set-up, else None."""
    for pattern, explanation in _KNOWN:
        match = pattern.search(stderr)
        if match:
            return explanation.format(**match.groupdict())
    return None
