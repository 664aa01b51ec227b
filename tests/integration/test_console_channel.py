"""The serial-console channel, driven against the default guest's console shell."""

from __future__ import annotations

import io
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_qemu import VM, CommandTimeout, MachineSpec
from pytest_qemu.cache import BuildCache
from pytest_qemu.channels.base import CommandChannel
from pytest_qemu.channels.console import ConsoleChannel
from pytest_qemu.guests.base import BootFiles
from pytest_qemu.guests.cpio import CpioWriter
from pytest_qemu.guests.default import DefaultGuest
from pytest_qemu.guests.initramfs import guest_script
from pytest_qemu.platforms import get_platform
from pytest_qemu.plugin.session import QemuSession

pytestmark = pytest.mark.vm


class _ConsoleGuest(DefaultGuest):
    """The default guest, reached through the shell on its console instead of its agent."""

    def channel(self, socket_dir: Path) -> CommandChannel:
        return ConsoleChannel(socket_dir)


def _machine(session: QemuSession, guest: DefaultGuest) -> MachineSpec:
    """The machine of *guest*'s VMs, with nothing else."""
    boot = guest.boot_files([])
    return MachineSpec(
        kernel=boot.kernel,
        initramfs=boot.initramfs,
        kernel_args=boot.kernel_args,
        platform=guest.platform,
        accelerator=session.accelerator(guest.platform).accelerator,
    )


@pytest.fixture(scope="module")
def console_vm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, arch: str
) -> Iterator[VM]:
    session = QemuSession.of(request.config)
    guest = _ConsoleGuest(BuildCache(session.cache_dir), platform=get_platform(arch))
    spec = _machine(session, guest)
    with VM(spec, log_dir=tmp_path_factory.mktemp("console"), guest=guest) as vm:
        yield vm


def test_status_and_separate_streams(console_vm: VM) -> None:
    result = console_vm.run("echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_binary_input_env_and_cwd(console_vm: VM) -> None:
    payload = bytes(range(256)) * 40
    result = console_vm.run(
        'cat; echo "[$GREETING]"; pwd', input=payload, env={"GREETING": "a b"}, cwd="/tmp"
    )
    assert result.stdout_bytes == payload + b"[a b]\n/tmp\n"


def test_timeout_keeps_the_console_usable(console_vm: VM) -> None:
    with pytest.raises(CommandTimeout):
        console_vm.run("sleep 30", timeout=1)
    assert console_vm.check("echo still here") == "still here\n"


def test_files_both_ways(console_vm: VM, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(bytes(range(256)) * 400)
    source.chmod(0o640)
    console_vm.put(source, "/tmp/data.bin")
    back = console_vm.get("/tmp/data.bin", tmp_path / "back.bin")
    assert back.read_bytes() == source.read_bytes()
    assert back.stat().st_mode & 0o777 == 0o640


def test_a_login_prompt_is_answered_with_the_credentials(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    session = QemuSession.of(request.config)
    guest = _LoginGuest(BuildCache(session.cache_dir), tmp_path, "tester-s3cret")
    with VM(_machine(session, guest), log_dir=tmp_path / "vm", guest=guest) as vm:
        assert vm.check("id -un") == "root\n"
    assert "login:" in vm.console.text()


class _LoginGuest(DefaultGuest):
    """The default guest with ``login`` instead of a shell on its console, and a password."""

    def __init__(self, cache: BuildCache, directory: Path, password: str) -> None:
        super().__init__(cache)
        self._directory = directory
        self._password = password

    def boot_files(self, devices: object) -> BootFiles:
        boot = super().boot_files([])
        assert boot.initramfs is not None
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", self._password], capture_output=True, text=True, check=True
        ).stdout.strip()
        init = guest_script("init").replace(b"setsid cttyhack sh -l", b"setsid cttyhack login")
        overlay = io.BytesIO()
        # Later entries of an initramfs replace earlier ones: this init and these accounts win.
        with CpioWriter(overlay) as archive:
            archive.add_file("init", init, 0o755)
            archive.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
            archive.add_file("etc/shadow", f"root:{hashed}:19000:0:99999:7:::\n".encode(), 0o600)
        combined = self._directory / "login.cpio"
        combined.write_bytes(boot.initramfs.read_bytes() + overlay.getvalue())
        return BootFiles(boot.kernel, combined, boot.kernel_args)

    def channel(self, socket_dir: Path) -> CommandChannel:
        return ConsoleChannel(socket_dir, credentials=("root", self._password))


class _EagerConsoleGuest(_ConsoleGuest):
    """A console guest whose channel types its probe from the moment it connects."""

    def channel(self, socket_dir: Path) -> CommandChannel:
        channel = ConsoleChannel(socket_dir)
        channel.silent_console_grace = 0.0
        channel.probe_interval = 0.25
        return channel


def test_probes_typed_throughout_the_boot_do_not_wedge_the_console(
    request: pytest.FixtureRequest, tmp_path: Path, arch: str
) -> None:
    # Bytes typed before the kernel opens aarch64's UART wait in QEMU; more than about 32
    # of them there when it opens, and the UART never raises a receive interrupt again.
    # Probing four times a second from the start, with another VM booting beside it (which
    # is what made the timing bite), wedged aarch64's console in three boots out of three.
    session = QemuSession.of(request.config)
    guest = _EagerConsoleGuest(BuildCache(session.cache_dir), platform=get_platform(arch))
    spec = _machine(session, guest)
    neighbour_guest = DefaultGuest(BuildCache(session.cache_dir))
    neighbour = VM(_machine(session, neighbour_guest), log_dir=tmp_path / "neighbour")
    # Both boot at once: the neighbour's start runs in a thread.
    booting = threading.Thread(target=neighbour.start)
    booting.start()
    try:
        with VM(spec, log_dir=tmp_path / "console", guest=guest, boot_timeout=60) as vm:
            assert vm.check("echo up") == "up\n"
    finally:
        booting.join()
        neighbour.kill()
    assert neighbour.boot_seconds is not None  # it did boot, beside the console VM


def test_the_idle_agent_keeps_off_the_console(console_vm: VM) -> None:
    # The default guest's agent finds no virtio-serial port in a VM reached through its
    # console. It used to say so on the console after about ten seconds of guest time,
    # in the middle of whatever command's output was coming back there.
    console_vm.check("while [ $(cut -d. -f1 /proc/uptime) -lt 30 ]; do sleep 1; done", timeout=300)
    assert console_vm.check("echo quiet") == "quiet\n"
    assert b"pytest-qemu agent:" not in console_vm.console_log.read_bytes()
