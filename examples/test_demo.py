"""A tour of pytest-qemu: every test here boots real VMs on the default guest.

Run it with `.venv/bin/pytest examples` (add `-n 2` to boot VMs in parallel).
"""

from __future__ import annotations

import pytest

from pytest_qemu import VM, Network, P9Directory, ReadOnlyDirectory, VirtioRandom
from pytest_qemu.plugin.factory import VMFactory


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
