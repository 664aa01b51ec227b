"""``python -m pytest_qemu doctor``: what this host can run, and what it is missing.

For every architecture of the platform registry it runs the checks a first VM
would, with the same code and so the same words: the QEMU emulator (and its
version), whether QEMU starts the platform's machine (its firmware), the kernel
and busybox the default guest boots, the command agent, its UEFI firmware, and the
accelerator probe. Then the cache directory and ``/dev/shm``. A missing piece is shown with
the error a test would get, which names the command that installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu import __version__
from pytest_qemu.cache import make_writable_directory
from pytest_qemu.errors import QemuError, SetupError
from pytest_qemu.guests.agent_build import agent_origin
from pytest_qemu.guests.initramfs import check_static, find_busybox
from pytest_qemu.platforms import Platform, get_platform, names
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.diagnose import user_error

OK, WARN, MISSING = "ok", "warn", "missing"
#: Below this, the cache (kernels, a foreign architecture's unpacked packages, templates'
#: RAM files) may fill the disk.
_LOW_SPACE = 1 << 30
_QEMU_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Finding:
    """One row of the report: what was checked, how it went, and what was found or is wrong."""

    status: str
    what: str
    detail: str


@dataclass(frozen=True)
class Section:
    """The findings for one architecture (or for the host), and whether it can run VMs."""

    #: The architecture's name, or "host".
    name: str
    title: str
    findings: tuple[Finding, ...]

    @property
    def can_run(self) -> bool:
        """Whether nothing needed is missing."""
        return all(finding.status != MISSING for finding in self.findings)


def _checked(what: str, check: Callable[[], str]) -> Finding:
    """Run *check*; its text is the detail of an ``ok`` row, and a :class:`QemuError` (the
    setup error a test would get) that of a ``missing`` one."""
    try:
        return Finding(OK, what, check())
    except QemuError as error:
        return Finding(MISSING, what, str(error))


def qemu_version(binary: str) -> str:
    """The first line of ``qemu-system-* --version``."""
    result = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.splitlines()[0] if result.stdout else "version unknown"


def machine_start_command(binary: str, platform: Platform) -> list[str]:
    """QEMU creating *platform*'s machine, paused, quit at once over QMP on stdin:
    QEMU loads the machine's firmware while it creates the machine."""
    return [
        binary, *platform.machine_args, "-accel", "tcg", "-nodefaults", "-no-user-config",
        "-display", "none", "-S", "-qmp", "stdio",
    ]  # fmt: skip


def machine_finding(binary: str, platform: Platform) -> Finding:
    quit_commands = '{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
    try:
        result = subprocess.run(
            machine_start_command(binary, platform),
            input=quit_commands,
            capture_output=True,
            text=True,
            timeout=_QEMU_START_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Finding(MISSING, "machine", f"QEMU did not start: {error}")
    machine = " ".join(platform.machine_args)
    if result.returncode == 0:
        return Finding(OK, "machine", f"QEMU starts `{machine}` (firmware found)")
    # The words a test's VM error has for a missing firmware file (vm/diagnose.py).
    lines = result.stderr.strip().splitlines()
    reason = user_error(result.stderr) or (lines[-1] if lines else f"exit {result.returncode}")
    return Finding(
        MISSING,
        "machine",
        f"QEMU cannot start `{machine}`: {reason}. Reinstalling QEMU brings back what its "
        f"package depends on: `apt-get install --reinstall {platform.qemu_package}`",
    )


def _kernel(session: QemuSession, platform: Platform) -> str:
    kernel = session.default_guest(platform).host_kernel
    return f"{kernel.image} ({kernel.release}), readable; modules in {kernel.modules_dir}"


def _busybox(session: QemuSession, platform: Platform) -> str:
    busybox = find_busybox(session.default_guest(platform).system_root)
    check_static(busybox)
    if platform.is_host:
        return f"{busybox}, statically linked"
    # A foreign busybox cannot run here: the host's lists the applets.
    return f"{busybox}, statically linked; applets listed by {find_busybox(Path('/'))}"


def _agent(platform: Platform) -> str:
    found, prebuilt = agent_origin(platform)
    if prebuilt:
        return f"prebuilt in the installed package ({found})"
    return f"compiled on first use with {found} (no prebuilt agent, or PYTEST_QEMU_AGENT=compile)"


def _accelerator(session: QemuSession, platform: Platform) -> Finding:
    try:
        choice = session.accelerator(platform)
    except QemuError as error:
        return Finding(MISSING, "KVM", str(error))
    if choice.accelerator == "kvm" or not platform.can_use_kvm:
        return Finding(OK, "KVM", choice.notice)
    # TCG runs every guest, only slower: worth knowing, not missing.
    return Finding(WARN, "KVM", choice.notice)


def uefi_finding(platform: Platform) -> Finding | None:
    """Whether *platform*'s UEFI firmware is installed, for ``firmware="uefi"`` (a warning
    if not: only VMs that ask for it need it); None where it has none."""
    if platform.uefi is None:
        return None
    try:
        code, _variables, _args = platform.uefi_files()
    except SetupError as error:
        return Finding(WARN, "UEFI", str(error))
    return Finding(OK, "UEFI", f"{code} ({platform.uefi.package})")


def platform_section(session: QemuSession, platform: Platform) -> Section:
    """The findings for *platform*'s default guest."""
    findings = []
    try:
        binary = session.settings.resolved_binary(platform)
    except QemuError as error:
        findings.append(Finding(MISSING, "QEMU", str(error)))
    else:
        findings.append(Finding(OK, "QEMU", f"{binary}: {qemu_version(binary)}"))
        findings.append(machine_finding(binary, platform))
    findings.append(_checked("kernel", lambda: _kernel(session, platform)))
    findings.append(_checked("busybox", lambda: _busybox(session, platform)))
    findings.append(_checked("agent", lambda: _agent(platform)))
    if (uefi := uefi_finding(platform)) is not None:
        findings.append(uefi)
    if findings[0].status == OK:
        findings.append(_accelerator(session, platform))
    role = "this host's architecture: the default guest" if platform.is_host else "emulated"
    return Section(platform.name, f"{platform.name} ({role})", tuple(findings))


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def directory_finding(what: str, path: Path, purpose: str) -> Finding:
    """Whether *path* can be created and written to, and its free space."""
    try:
        make_writable_directory(path)
    except OSError as error:
        return Finding(
            MISSING,
            what,
            f"{path} is not a writable directory ({error.strerror}): {purpose}",
        )
    free = shutil.disk_usage(path).free
    if free < _LOW_SPACE:
        return Finding(WARN, what, f"{path}: only {_gib(free)} free; {purpose}")
    return Finding(OK, what, f"{path}: {_gib(free)} free")


def host_section(session: QemuSession) -> Section:
    """The findings that do not depend on the architecture."""
    cache = directory_finding(
        "cache",
        session.cache_dir,
        "built kernels, initramfs images, agents, foreign packages and VM templates go "
        "here; set PYTEST_QEMU_CACHE_DIR or --qemu-cache-dir to another directory",
    )
    shm = directory_finding(
        "/dev/shm",
        Path("/dev/shm"),
        "QEMU and Python's multiprocessing use shared memory there; mount a tmpfs on /dev/shm "
        "(a container: `docker run --shm-size=1g`)",
    )
    # Nothing of the default guest lives in /dev/shm: a problem there is only a warning.
    if shm.status == MISSING:
        shm = Finding(WARN, shm.what, shm.detail)
    return Section("host", "this host", (cache, shm))


def diagnose(arches: Sequence[str] = ()) -> list[Section]:
    """The sections for *arches* (every architecture if empty), then the host's."""
    session = QemuSession(QemuSettings.defaults())
    platforms = [get_platform(name) for name in (arches or names())]
    return [*(platform_section(session, platform) for platform in platforms), host_section(session)]


def render(sections: Sequence[Section], required: Sequence[str]) -> str:
    """The report as text: a block per section, a row per finding, then the verdict."""
    lines = [f"pytest-qemu {__version__}: what this host can run"]
    for section in sections:
        lines.append(section.title)
        for finding in section.findings:
            lines.append(f"  {finding.status:<8} {finding.what:<9} {finding.detail}")
    lines.append("")
    for section in sections[:-1]:
        verdict = "can run VMs" if section.can_run else "cannot run VMs: see 'missing' above"
        lines.append(f"{section.name}: {verdict}")
    needed = ", ".join(required)
    lines.append(
        f"ready: {needed} can run" if ready(sections, required) else f"NOT ready: {needed}"
    )
    return "\n".join(lines)


def ready(sections: Sequence[Section], required: Sequence[str]) -> bool:
    """Whether every *required* architecture, and the host, lack nothing needed."""
    return all(section.can_run for section in sections if section.name in {*required, "host"})


def main(arches: Sequence[str]) -> int:
    """Print the report; 0 if the default guest (or every architecture in *arches*) can run."""
    names_wanted = [get_platform(name).name for name in arches]
    required = names_wanted or [get_platform().name]
    sections = diagnose(names_wanted)
    print(render(sections, required))
    return 0 if ready(sections, required) else 1
