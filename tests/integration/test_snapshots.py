"""Snapshot-backed VMs: saved once per hardware layout, restored, then personalised."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_qemu import VM, MachineSpec, Network, P9Directory, VirtioRandom
from pytest_qemu.devices.base import Device
from pytest_qemu.guest.default import DEFAULT_KERNEL_ARGS, DefaultGuest
from pytest_qemu.plugin.session import accelerator_choice, default_guest
from pytest_qemu.vm.machine import SnapshotWarning
from pytest_qemu.vm.snapshot import SnapshotStore

pytestmark = pytest.mark.vm

StartVM = Callable[[list[Device]], VM]


@pytest.fixture
def start_vm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartVM]:
    """Starts VMs on the default guest with a snapshot store private to this test."""
    guest: DefaultGuest = default_guest(request.config)
    accelerator = accelerator_choice(request.config).accelerator
    store = SnapshotStore(tmp_path / "snapshots")
    vms: list[VM] = []

    def start(devices: list[Device]) -> VM:
        modules = [module for device in devices for module in device.guest_modules]
        spec = MachineSpec(
            kernel=guest.kernel_image(),
            initramfs=guest.initramfs(modules),
            kernel_args=DEFAULT_KERNEL_ARGS,
            devices=devices,
            accelerator=accelerator,
        )
        vm = VM(spec, log_dir=tmp_path / f"vm{len(vms)}", boot_timeout=120, snapshots=store)
        vms.append(vm)
        return vm.start()

    try:
        yield start
    finally:
        for vm in vms:
            vm.kill()


def test_restored_vms_are_isolated_and_personalised(start_vm: StartVM, tmp_path: Path) -> None:
    with Network() as network:
        first_nic, second_nic, third_nic = (network.new_vm() for _ in range(3))
        first = start_vm([first_nic, VirtioRandom()])
        assert first.restored_from is None, "the first VM of a layout boots and saves"
        first.check("echo left-behind > /root/marker")

        share = tmp_path / "share"
        share.mkdir()
        (share / "hello.txt").write_text("hello\n")
        second = start_vm([second_nic, VirtioRandom()])
        third = start_vm([third_nic, VirtioRandom()])
        for vm in (second, third):
            assert vm.restored_from is not None
            assert (vm.boot_seconds or 0) < (first.boot_seconds or 0)
            assert vm.run("cat /root/marker").returncode != 0, "state leaked between VMs"
        assert second.check("cat /sys/class/net/eth0/address").strip() == second_nic.mac
        assert abs(int(second.check("date +%s")) - time.time()) < 30
        # Each restored guest was given its own entropy: their random streams differ.
        assert second.check("head -c 16 /dev/urandom | od -An -tx1") != third.check(
            "head -c 16 /dev/urandom | od -An -tx1"
        )
        for vm, nic in ((second, third_nic), (third, first_nic)):
            vm.check(f"ping -c 1 -W 5 {nic.address}", timeout=30)


def test_shared_directories_are_mounted_after_restore(start_vm: StartVM, tmp_path: Path) -> None:
    directories = []
    for name in ("one", "two"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "name.txt").write_text(name)
        directories.append(directory)
    start_vm([P9Directory(directories[0])])
    share = P9Directory(directories[1])
    restored = start_vm([share])
    assert restored.restored_from is not None
    assert restored.check(f"cat {share.guest_path}/name.txt") == "two"


def test_a_broken_snapshot_falls_back_to_booting(start_vm: StartVM) -> None:
    first = start_vm([VirtioRandom()])
    snapshot = first._snapshot
    assert snapshot is not None and snapshot.exists()
    snapshot.state.write_bytes(b"not a migration stream")
    with pytest.warns(SnapshotWarning, match="booting instead"):
        second = start_vm([VirtioRandom()])
    assert second.restored_from is None
    assert second.check("echo ok") == "ok\n"
    assert snapshot.exists(), "the VM that booted saves a good snapshot again"
