"""Your own image: a real Debian 12 built with mmdebstrap, through qga and the console."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from pytest_qemu import BootTimeout, ConfigurationError, P9Directory, VMFactory
from pytest_qemu.guests.default import DefaultGuest
from pytest_qemu.images import DebianImage, build_debian_image
from pytest_qemu.plugin.session import QemuSession

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def arch() -> str:
    # The test image is Debian for the host's architecture (amd64).
    return "x86_64"


@pytest.fixture(scope="session")
def debian(pytestconfig: pytest.Config) -> DebianImage:
    """A small Debian 12 image, built once per machine into the cache (about 30 s)."""
    return build_debian_image(QemuSession.of(pytestconfig).cache_dir)


def _boot(factory: VMFactory, debian: DebianImage, **options: object):  # type: ignore[no-untyped-def]
    return factory(
        image=debian.disk,
        kernel=debian.kernel,
        initramfs=debian.initramfs,
        kernel_args=["root=/dev/vda2", "rw", "quiet"],
        memory=512,
        boot_timeout=240,
        **options,
    )


def test_the_guest_agent_runs_commands_and_the_image_stays_unchanged(
    qemu_vm_factory: VMFactory, debian: DebianImage, tmp_path: Path
) -> None:
    before = hashlib.sha256(debian.disk.read_bytes()).hexdigest()
    share = tmp_path / "share"
    share.mkdir()
    (share / "from-host.txt").write_text("shared over 9p")
    device = P9Directory(share)
    vm = _boot(qemu_vm_factory, debian, devices=[device])
    assert vm.check("cat /proc/1/comm") == "systemd\n"
    assert vm.check(f"cat {device.guest_path}/from-host.txt") == "shared over 9p"
    result = vm.run('echo "$GREETING"; pwd; exit 4', env={"GREETING": "hi"}, cwd="/tmp")
    assert (result.returncode, result.stdout) == (4, "hi\n/tmp\n")
    vm.check("echo scribbled > /etc/scribbled; sync")
    source = tmp_path / "tool"
    source.write_bytes(os.urandom(300_000))
    source.chmod(0o750)
    vm.put(source, "/usr/local/bin/tool")
    assert vm.get("/usr/local/bin/tool", tmp_path / "back").read_bytes() == source.read_bytes()
    # A second VM of the same layout is a clone, disk included: it never sees the first's writes.
    starting = time.monotonic()
    second = _boot(qemu_vm_factory, debian, devices=[P9Directory(share)])
    assert second.restored_from is not None
    # The template was saved well after the image had finished booting (a clone must not
    # boot on): in guest time, the save came at least this long after systemd finished.
    finished, uptime = second.check(
        "systemctl show -p FinishTimestampMonotonic --value; cut -d' ' -f1 /proc/uptime"
    ).split()
    saved_at_least = float(uptime) - (time.monotonic() - starting)
    assert saved_at_least - int(finished) / 1e6 > 1.0
    assert second.run("cat /etc/scribbled").returncode != 0
    assert second.check("cat /proc/1/comm") == "systemd\n"
    # Personalised on restore: the host's clock, and entropy of its own.
    assert abs(int(second.check("date +%s")) - time.time()) < 10
    random_bytes = "head -c 16 /dev/urandom | od -An -tx1"
    assert vm.check(random_bytes) != second.check(random_bytes)
    for machine in (vm, second):
        machine.shutdown()
    assert hashlib.sha256(debian.disk.read_bytes()).hexdigest() == before


def test_the_serial_console_channel(qemu_vm_factory: VMFactory, debian: DebianImage) -> None:
    vm = _boot(qemu_vm_factory, debian, channel="console")
    result = vm.run("echo out; echo err >&2; id -un; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\nroot\n", "err\n")
    assert vm.check("systemctl is-system-running --wait >/dev/null; echo ok") == "ok\n"
    assert vm.restored_from is not None
    # Personalised on restore through the shell's first line: the host's clock.
    assert abs(int(vm.check("date +%s")) - time.time()) < 10


def test_an_image_without_an_agent_times_out_naming_it(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * (1024 * 1024 - 512))
    started = time.monotonic()
    with pytest.raises(BootTimeout, match="qemu-guest-agent"):
        qemu_vm_factory(image=blank, boot_timeout=5, snapshot=False)
    assert time.monotonic() - started < 15


def test_bad_images_are_refused_plainly(qemu_vm_factory: VMFactory, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        qemu_vm_factory(image=tmp_path / "missing.qcow2")
    text = tmp_path / "notes.txt"
    text.write_text("not a disk\n" * 1000)
    with pytest.raises(ConfigurationError, match="is not a disk image"):
        qemu_vm_factory(image=text)
    with pytest.raises(ConfigurationError, match="channel 'serial' is not one of"):
        qemu_vm_factory(image=text, channel="serial")


def _bootable_fat_image(directory: Path, kernel: Path, initramfs: Path) -> Path:
    """A disk that boots by itself: SYSLINUX in a FAT file system's boot sector, loading
    *kernel* and *initramfs* (made with mtools, no mounts)."""
    disk = directory / "bootable.img"
    with disk.open("wb") as file:
        file.truncate(64 * 1024 * 1024)
    config = directory / "syslinux.cfg"
    config.write_text(
        "DEFAULT linux\nPROMPT 0\nTIMEOUT 1\nLABEL linux\n  KERNEL vmlinuz\n  INITRD initrd\n"
        "  APPEND console=ttyS0 panic=-1 rdinit=/init quiet no_timer_check booted-by=syslinux\n"
    )
    for command in (
        ["mkfs.fat", "-F", "16", "-n", "PQBOOT", str(disk)],
        ["mcopy", "-i", str(disk), str(kernel), "::vmlinuz"],
        ["mcopy", "-i", str(disk), str(initramfs), "::initrd"],
        ["mcopy", "-i", str(disk), str(config), "::syslinux.cfg"],
        ["syslinux", "--install", str(disk)],
    ):
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    return disk


def test_an_image_boots_through_its_own_boot_loader(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    guest = qemu_vm_factory.guest
    assert isinstance(guest, DefaultGuest)
    # The default guest's initramfs, with what it takes to mount the FAT disk it boots from.
    initramfs = guest.initramfs(["virtio_blk", "vfat"])
    disk = _bootable_fat_image(tmp_path, guest.host_kernel.image, initramfs)
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    # No kernel=: SeaBIOS boots the disk, SYSLINUX the kernel; a shell answers on the console.
    vm = qemu_vm_factory(image=disk, channel="console", boot_timeout=120)
    assert "booted-by=syslinux" in vm.check("cat /proc/cmdline")
    assert "-kernel" not in vm.argv
    vm.check("mkdir -p /boot && mount -t vfat /dev/vda /boot && echo scribbled > /boot/note")
    vm.shutdown()
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before, "the image was written"
    # persistent=True: the guest writes into the image itself (and it is synced at shutdown).
    keeper = qemu_vm_factory(image=disk, channel="console", persistent=True, boot_timeout=120)
    assert keeper.restored_from is None, "a persistent image changes: it is never cloned"
    keeper.check("mkdir -p /boot && mount -t vfat /dev/vda /boot && echo kept > /boot/kept")
    keeper.check("umount /boot")
    keeper.shutdown()
    kept = subprocess.run(
        ["mtype", "-i", str(disk), "::kept"], capture_output=True, text=True, check=True
    )
    assert kept.stdout == "kept\n"


def test_an_image_whose_backing_file_moved_is_refused_naming_it(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    base, overlay = tmp_path / "base.raw", tmp_path / "overlay.qcow2"
    with base.open("wb") as file:
        file.truncate(16 * 1024 * 1024)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)],
        check=True,
    )
    base.rename(tmp_path / "moved.raw")
    with pytest.raises(ConfigurationError, match=r"(?s)base\.raw.*backing file may have moved"):
        qemu_vm_factory(image=overlay)
