"""A tour of pytest-qemu: every test here boots real VMs on the default guest.

Run it with `.venv/bin/pytest examples` (add `-n 2` to boot VMs in parallel).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_qemu import (
    VM,
    CommandTimeout,
    Network,
    P9Directory,
    ReadOnlyDirectory,
    VirtioRandom,
    VMFactory,
    architectures,
)


def test_run_a_command(qemu_vm: VM) -> None:
    result = qemu_vm.run("uname -s; echo to-stderr >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "Linux\n"
    assert result.stderr == "to-stderr\n"
    assert "pytest-qemu: guest ready" in qemu_vm.console.text()


def test_p9_round_trip(qemu_vm_factory: VMFactory, p9_dir: P9Directory) -> None:
    (p9_dir.directory / "from-host.txt").write_text("written on the host\n")
    vm = qemu_vm_factory(devices=[p9_dir])
    assert vm.check(f"cat {p9_dir.guest_path}/from-host.txt") == "written on the host\n"
    vm.check(f"echo written in the guest > {p9_dir.guest_path}/from-guest.txt")
    assert (p9_dir.directory / "from-guest.txt").read_text() == "written in the guest\n"


def test_fat_directory_is_read_only(qemu_vm_factory: VMFactory, fat_dir: ReadOnlyDirectory) -> None:
    (fat_dir.directory / "readme.txt").write_text("read me\n")
    vm = qemu_vm_factory(devices=[fat_dir])
    assert vm.check(f"cat {fat_dir.guest_path}/readme.txt") == "read me\n"
    overwrite = vm.run(f"echo changed > {fat_dir.guest_path}/readme.txt")
    assert overwrite.returncode != 0
    assert "Read-only file system" in overwrite.stderr
    assert (fat_dir.directory / "readme.txt").read_text() == "read me\n"


def test_two_vms_ping_each_other(qemu_vm_factory: VMFactory, qemu_network: Network) -> None:
    first = qemu_vm_factory(devices=[qemu_network.new_vm(), VirtioRandom()])
    second_interface = qemu_network.new_vm()
    second = qemu_vm_factory(devices=[second_interface])
    first.check(f"ping -c 3 -W 5 {second_interface.address}", timeout=30)
    second.check(f"ping -c 3 -W 5 {qemu_network.interfaces[0].address}", timeout=30)


@pytest.mark.parametrize("qemu_devices", [[], [VirtioRandom()]], ids=["bare", "virtio-rng"])
def test_device_matrix(qemu_vm: VM, qemu_devices: list[object]) -> None:
    hw_random = qemu_vm.run("cat /sys/class/misc/hw_random/rng_current").stdout.strip()
    assert hw_random.startswith("virtio_rng") == bool(qemu_devices)


def test_streamed_output_timeouts_and_files(qemu_vm: VM, tmp_path: Path) -> None:
    # Output of any size streams back; past 16 MiB it waits in a file, not in memory.
    big = qemu_vm.run("dd if=/dev/zero bs=1M count=40 2>/dev/null", timeout=120)
    assert big.stdout_output.size == 40 * 1024 * 1024
    # A timeout kills the command and everything it started; the VM carries on.
    with pytest.raises(CommandTimeout):
        qemu_vm.run("sleep 60 & sleep 60", timeout=1)
    # Files travel both ways through the same channel, permission bits included.
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $(uname -m), $GREETING\n")
    script.chmod(0o755)
    qemu_vm.put(script, "/usr/bin/hello")
    assert qemu_vm.check("hello", env={"GREETING": "hi"}).startswith("hello from")
    assert qemu_vm.get("/usr/bin/hello", tmp_path / "back.sh").read_bytes() == script.read_bytes()


@pytest.mark.qemu(userland="host")
def test_the_hosts_own_programs(qemu_vm: VM, tmp_path: Path) -> None:
    # The host's root, read-only: python3 and everything else installed on the host.
    (tmp_path / "data.json").write_text('{"answer": 42}')
    check = f'python3 -c \'import json; print(json.load(open("{tmp_path}/data.json"))["answer"])\''
    assert qemu_vm.check(check) == "42\n"
    assert "Read-only file system" in qemu_vm.run("touch /usr/nope").stderr


@pytest.mark.parametrize("qemu_arch", architectures())
def test_architecture_matrix(qemu_vm: VM, qemu_arch: str) -> None:
    # Every architecture pytest-qemu runs (i386's kernel says i686, mips64el's mips64).
    assert qemu_vm.check("uname -m") == f"{qemu_vm.spec.platform.uname_machine}\n"


@pytest.fixture(scope="module")
def shared_server(qemu_session_vm_factory: VMFactory) -> Iterator[VM]:
    # One VM for every test of the module, shut down when the module is done.
    with qemu_session_vm_factory() as vm:
        vm.check("echo ready > /tmp/state")
        yield vm


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_vm_shared_by_a_module(shared_server: VM, attempt: int) -> None:
    assert shared_server.check("cat /tmp/state") == "ready\n"
