"""Shared directories and disks in a real guest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pytest_qemu import (
    ArbitraryArgs,
    Disk,
    GuestSetupError,
    P9Directory,
    ReadOnlyDirectory,
    VMExited,
)
from pytest_qemu.plugin.factory import VMFactory

pytestmark = pytest.mark.vm


def test_awkward_names_and_many_shares_in_one_vm(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    # A comma must reach QEMU as a literal comma, and an option-looking name must stay a name.
    comma = tmp_path / "a,b"
    injection = tmp_path / "x,security_model=none"
    fat_one = tmp_path / "fat one:rw:"
    fat_two = tmp_path / "fat,two"
    for directory in (comma, injection, fat_one, fat_two):
        directory.mkdir()
        (directory / "name.txt").write_text(directory.name)
    image = tmp_path / "disk.img"
    image.write_bytes(b"DISK-CONTENT" + b"\0" * (1024 * 1024 - 12))
    shares = [P9Directory(comma), P9Directory(injection, read_only=True)]
    fats = [ReadOnlyDirectory(fat_one), ReadOnlyDirectory(fat_two)]
    disk = Disk(image, read_only=True)
    vm = qemu_vm_factory(devices=[*shares, *fats, disk])

    for device in (*shares, *fats):
        assert vm.check(f"cat {device.guest_path}/name.txt") == device.directory.name
    assert vm.check(f"head -c 12 {disk.guest_device}") == "DISK-CONTENT"

    # The read-only 9p share and both FAT disks refuse writes; the host files stay as they were.
    for device in (shares[1], *fats):
        result = vm.run(f"echo changed > {device.guest_path}/name.txt")
        assert result.returncode != 0, device
        assert "Read-only file system" in result.stderr
        assert (device.directory / "name.txt").read_text() == device.directory.name
    # mapped-file keeps guest metadata beside files; security_model=none would not.
    vm.check(f"echo new > {shares[0].guest_path}/new.txt")
    assert (comma / "new.txt").read_text() == "new\n"
    assert (comma / ".virtfs_metadata").is_dir()


def test_writable_disk_round_trip(qemu_vm_factory: VMFactory, tmp_path: Path) -> None:
    image = tmp_path / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "8M"], check=True)
    disk = Disk(image, format="qcow2", serial="data", persistent=True)
    vm = qemu_vm_factory(devices=[disk])
    vm.check(f"echo persisted | dd of={disk.guest_device} conv=fsync 2>/dev/null")
    vm.shutdown()
    raw_copy = tmp_path / "data.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw_copy)], check=True)
    raw = raw_copy.read_bytes()
    assert raw.startswith(b"persisted\n")


def test_a_disk_is_a_throwaway_overlay_by_default(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    golden = tmp_path / "golden.img"
    golden.write_bytes(b"GOLDEN" + b"\0" * (2 * 1024 * 1024 - 6))
    before = golden.read_bytes()
    first, second = Disk(golden, serial="one"), Disk(golden, serial="two")
    # Two VMs at once on one image: each writes to its own overlay.
    vms = [qemu_vm_factory(devices=[disk]) for disk in (first, second)]
    for vm, disk in zip(vms, (first, second), strict=True):
        vm.check(f"echo scribbled | dd of={disk.guest_device} conv=fsync 2>/dev/null")
        assert vm.check(f"head -c 9 {disk.guest_device}") == "scribbled"
    for vm in vms:
        vm.shutdown()
    assert golden.read_bytes() == before, "a guest write reached the user's image"
    assert not list(tmp_path.glob("*.qcow2")) and sorted(tmp_path.iterdir()) == [golden]


def test_a_disk_another_vm_writes_to_is_refused_plainly(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    image = tmp_path / "shared.img"
    image.write_bytes(b"\0" * (1024 * 1024))
    qemu_vm_factory(devices=[Disk(image, persistent=True, serial="a")])
    with pytest.raises(VMExited, match=r"(?s)likely cause: the disk image .*shared.img is in use"):
        qemu_vm_factory(devices=[Disk(image, persistent=True, serial="b")])


def test_a_setting_the_guest_cannot_apply_fails_the_start(qemu_vm_factory: VMFactory) -> None:
    broken_mount = ArbitraryArgs(
        kernel_args=["pytest_qemu.mount=9p,no-such-tag,/mnt/nothing,rw"], guest_modules=["9p"]
    )
    with pytest.raises(GuestSetupError, match="cannot mount 9p share no-such-tag on /mnt/nothing"):
        qemu_vm_factory(devices=[broken_mount])
