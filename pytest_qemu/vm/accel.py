"""Choosing the accelerator: KVM only when it really runs a guest, otherwise TCG.

``/dev/kvm`` can exist and answer ioctls while every guest hangs (nested
virtualisation without VMX/SVM, seen on our own CI machines). So the probe
boots a guest under KVM and waits, for a bounded time, for proof that guest
code ran: the kernel's first console line, or, with no kernel at hand, a
512-byte guest that writes to QEMU's ``isa-debug-exit`` port. The verdict is
cached until the host reboots.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.cache import cache_key

_DEBUG_EXIT_PORT = 0xF4
_DEBUG_EXIT_VALUE = 0x21
#: QEMU's isa-debug-exit makes QEMU exit with (value << 1) | 1.
_EXPECTED_STATUS = (_DEBUG_EXIT_VALUE << 1) | 1
#: Under a working KVM both probes answer in well under a second.
PROBE_TIMEOUT = 5.0
_KERNEL_MARKER = b"Linux version"


def probe_boot_sector() -> bytes:
    """A boot sector that writes to the debug-exit port, then halts."""
    code = bytes(
        [
            0xBA, _DEBUG_EXIT_PORT, 0x00,  # mov dx, 0xf4
            0xB0, _DEBUG_EXIT_VALUE,  # mov al, 0x21
            0xEE,  # out dx, al
            0xF4,  # hlt
            0xEB, 0xFD,  # jmp back to hlt
        ]
    )  # fmt: skip
    return code.ljust(510, b"\0") + b"\x55\xaa"


def _base_command(qemu: str, accelerator: str) -> list[str]:
    return [
        qemu, "-accel", accelerator, "-machine", "pc", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot",
    ]  # fmt: skip


def boot_sector_probe_command(qemu: str, accelerator: str, boot_sector: Path) -> list[str]:
    return [
        *_base_command(qemu, accelerator), "-m", "16",
        "-drive", f"file={boot_sector},format=raw,if=floppy,readonly=on",
        "-device", f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=0x04",
    ]  # fmt: skip


def kernel_probe_command(qemu: str, accelerator: str, kernel: Path) -> list[str]:
    return [
        *_base_command(qemu, accelerator), "-m", "128", "-serial", "stdio",
        "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip


@dataclass(frozen=True)
class ProbeResult:
    works: bool
    detail: str


def _run_until(
    argv: list[str], marker: bytes | None, timeout: float
) -> tuple[bool, int | None, str]:
    """Run *argv* until *marker* appears on stdout or it exits.

    Returns (marker seen, exit status or None if it was still running, last stderr line).
    """
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
        assert process.stdout is not None
        output = b""
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([process.stdout], [], [], remaining)
                if not ready:
                    break
                chunk = os.read(process.stdout.fileno(), 65536)
                output += chunk
                if marker is not None and marker in output:
                    return True, None, ""
                if not chunk:
                    process.wait(remaining)
                    break
        finally:
            timed_out = process.poll() is None
            if timed_out:
                process.kill()
            process.wait()
            process.stdout.close()
        if timed_out:
            return False, None, ""
        stderr.seek(0)
        lines = stderr.read().decode(errors="replace").strip().splitlines()
        return False, process.returncode, lines[-1] if lines else ""


def probe_accelerator(qemu: str, accelerator: str, kernel: Path | None = None) -> ProbeResult:
    """Boot a probe guest under *accelerator*; it works if guest code visibly ran in time."""
    if accelerator == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ProbeResult(False, "/dev/kvm is missing or not accessible")
    try:
        if kernel is not None:
            seen, status, error = _run_until(
                kernel_probe_command(qemu, accelerator, kernel), _KERNEL_MARKER, PROBE_TIMEOUT
            )
            what = "a test kernel printed nothing"
        else:
            with tempfile.TemporaryDirectory(prefix="pytest-qemu-probe-") as directory:
                boot_sector = Path(directory) / "probe.img"
                boot_sector.write_bytes(probe_boot_sector())
                _, status, error = _run_until(
                    boot_sector_probe_command(qemu, accelerator, boot_sector), None, PROBE_TIMEOUT
                )
            seen = status == _EXPECTED_STATUS
            what = "a 512-byte test guest did not finish"
    except OSError as failure:
        return ProbeResult(False, f"the probe could not start QEMU: {failure}")
    if seen:
        return ProbeResult(True, f"a test guest ran under {accelerator}")
    if status is None:
        return ProbeResult(False, f"{what} within {PROBE_TIMEOUT:g} s under {accelerator}")
    return ProbeResult(
        False, f"QEMU failed under {accelerator}: {error or f'exit status {status}'}"
    )


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def cached_probe(
    qemu: str, accelerator: str, cache_dir: Path, kernel: Path | None = None
) -> ProbeResult:
    """:func:`probe_accelerator`, remembered until the host reboots or QEMU changes."""
    try:
        binary = Path(
            subprocess.run(["which", qemu], capture_output=True, text=True).stdout.strip() or qemu
        )
        fingerprint = f"{binary}:{binary.stat().st_mtime_ns}"
    except OSError:
        fingerprint = qemu
    key = cache_key([_boot_id(), fingerprint, accelerator, str(kernel), "v3"])
    path = cache_dir / "accelerator" / f"{key}.json"
    try:
        stored = json.loads(path.read_text())
        return ProbeResult(bool(stored["works"]), str(stored["detail"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = probe_accelerator(qemu, accelerator, kernel)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps({"works": result.works, "detail": result.detail}))
        os.replace(temporary, path)
    except OSError:
        # A full or read-only cache: the answer holds for this run all the same.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    return result


@dataclass(frozen=True)
class AcceleratorChoice:
    accelerator: str
    notice: str


def choose_accelerator(
    requested: str, qemu: str, cache_dir: Path, kernel: Path | None = None
) -> AcceleratorChoice:
    """Resolve ``auto``, ``kvm`` or ``tcg``; ``auto`` takes KVM only if a probe guest runs."""
    if requested == "tcg":
        return AcceleratorChoice("tcg", "accelerator: tcg (requested)")
    if requested == "kvm":
        return AcceleratorChoice("kvm", "accelerator: kvm (requested; not probed)")
    probe = cached_probe(qemu, "kvm", cache_dir, kernel)
    if probe.works:
        return AcceleratorChoice("kvm", "accelerator: kvm (probed: a test guest ran)")
    return AcceleratorChoice(
        "tcg",
        f"accelerator: tcg — KVM does not work here ({probe.detail}); VMs are emulated and slower",
    )
