"""Choosing the accelerator: KVM only when it really runs a guest, otherwise TCG.

``/dev/kvm`` can exist and answer ioctls while every guest hangs (nested
virtualisation without VMX/SVM, seen on our own CI machines). So the probe
boots a guest under KVM and waits, for a bounded time, for proof that guest
code ran: the kernel's first console line, or, with no kernel at hand, the
platform's tiny probe guest (on a PC, a boot sector that makes QEMU exit). The verdict is
cached per host boot, host kernel and QEMU (binary and version), in a directory
the caller gives (the user's state directory: not per cache directory, so a new
cache directory does not pay the 5 s probe again).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.cache import cache_key, file_fingerprint
from pytest_qemu.errors import ConfigurationError, troubleshooting
from pytest_qemu.platforms import get_platform

#: Under a working KVM both probes answer in well under a second.
PROBE_TIMEOUT = 5.0
_KERNEL_MARKER = b"Linux version"


def _base_command(qemu: str, accelerator: str) -> list[str]:
    return [
        qemu, "-accel", accelerator, "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot",
    ]  # fmt: skip


def kernel_probe_command(qemu: str, accelerator: str, kernel: Path) -> list[str]:
    """A probe that boots *kernel* on the host's platform, its console on stdout."""
    platform = get_platform()
    return [
        *_base_command(qemu, accelerator), *platform.machine_args, "-m", "128",
        "-serial", "stdio", "-kernel", str(kernel),
        "-append", f"console={platform.console} panic=-1",
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


def kvm_device_problem(device: Path = Path("/dev/kvm")) -> str | None:
    """Why this user cannot open *device*, with what fixes it; None if it can."""
    if not device.exists():
        return (
            f"{device} does not exist: the CPU (or the hypervisor of this VM) offers no "
            "virtualisation, or the kvm module is not loaded (`sudo modprobe kvm_intel` or "
            "`sudo modprobe kvm_amd`)"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return (
            f"{device} is not readable and writable by this user: join its group "
            "(`sudo usermod -aG kvm $USER`, then log in again)"
        )
    return None


def probe_accelerator(qemu: str, accelerator: str, kernel: Path | None = None) -> ProbeResult:
    """Boot a probe guest of the host's platform under *accelerator*; it works if guest
    code visibly ran in time: the kernel's first line, or, without a kernel, the
    platform's own probe guest (KVM runs only guests of the host's architecture)."""
    try:
        platform = get_platform()
    except ConfigurationError as unknown:
        return ProbeResult(False, str(unknown))
    if accelerator == "kvm" and (problem := kvm_device_problem()) is not None:
        return ProbeResult(False, problem)
    try:
        with tempfile.TemporaryDirectory(prefix="pytest-qemu-probe-") as directory:
            program = platform.kvm_probe_args(Path(directory)) if kernel is None else None
            if program is None:
                if kernel is None:
                    return ProbeResult(False, f"{platform.name} has no kernel-less probe")
                seen, status, error = _run_until(
                    kernel_probe_command(qemu, accelerator, kernel),
                    _KERNEL_MARKER,
                    PROBE_TIMEOUT,
                )
                what = "a test kernel printed nothing"
            else:
                argv = [*_base_command(qemu, accelerator), *program]
                _, status, error = _run_until(argv, None, PROBE_TIMEOUT)
                seen = status == platform.kvm_probe_status
                what = "a tiny test guest did not finish"
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


def _qemu_identity(qemu: str) -> str:
    """The QEMU binary's path, size, modification time and ``--version``."""
    binary = shutil.which(qemu) or qemu
    try:
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"{file_fingerprint(Path(binary))}:{version}"
    except (OSError, subprocess.SubprocessError):
        return qemu


def _kernel_identity(kernel: Path | None) -> str:
    """The probe kernel by name and size: the default guest's extracted kernel has the
    same name in every cache directory."""
    if kernel is None:
        return "boot sector"
    try:
        return f"{kernel.name}:{kernel.stat().st_size}"
    except OSError:
        return str(kernel)


def probe_key(qemu: str, accelerator: str, kernel: Path | None) -> str:
    """What a verdict depends on: host boot, host kernel, QEMU, accelerator, probe kernel."""
    return cache_key(
        [
            _boot_id(),
            os.uname().release,
            _qemu_identity(qemu),
            accelerator,
            _kernel_identity(kernel),
            "v5",
        ]
    )


def cached_probe(
    qemu: str, accelerator: str, verdicts: Path, kernel: Path | None = None
) -> ProbeResult:
    """:func:`probe_accelerator`, remembered in *verdicts* under :func:`probe_key`."""
    path = verdicts / f"{probe_key(qemu, accelerator, kernel)}.json"
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
    #: Why no VM can start under the accelerator that was asked for (``--qemu-accel=kvm``
    #: on a host whose KVM hangs), or None.
    problem: str | None = None


def choose_accelerator(
    requested: str, qemu: str, verdicts: Path, kernel: Path | None = None
) -> AcceleratorChoice:
    """Resolve ``auto``, ``kvm`` or ``tcg``; ``auto`` takes KVM only if a probe guest runs.

    *verdicts* is the directory where probe verdicts are kept (see :func:`cached_probe`).
    """
    if requested == "tcg":
        return AcceleratorChoice("tcg", "accelerator: tcg (requested)")
    probe = cached_probe(qemu, "kvm", verdicts, kernel)
    if requested == "kvm":
        # Probed too (once per host boot, cached): a KVM that hangs every guest is then
        # named at once, instead of as a boot timeout after the whole timeout.
        if probe.works:
            return AcceleratorChoice(
                "kvm", "accelerator: kvm (requested; probed: a test guest ran)"
            )
        return AcceleratorChoice(
            "kvm",
            f"accelerator: kvm (requested) — but KVM does not work here ({probe.detail}): "
            "no VM can start",
            problem=(
                f"--qemu-accel=kvm was given, but KVM does not work on this host: "
                f"{probe.detail}. Use --qemu-accel=auto (KVM when a probe guest runs under "
                f"it, else TCG) or --qemu-accel=tcg; {troubleshooting('kvm-hangs-or-is-missing')}"
            ),
        )
    if probe.works:
        return AcceleratorChoice("kvm", "accelerator: kvm (probed: a test guest ran)")
    return AcceleratorChoice(
        "tcg",
        f"accelerator: tcg — KVM does not work here ({probe.detail}); VMs are emulated and slower",
    )
