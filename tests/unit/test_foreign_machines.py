"""ppc64le, s390x and riscv64: consoles, the CCW transport, kernels named vmlinux-*,
Debian 13's merged-/usr packages, clone blockers and harmless boot warnings (no QEMU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qemu import Disk, P9Directory, ReadOnlyDirectory, VirtioRandom
from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.guests.agent import AgentGuest
from pytest_qemu.platforms import get_platform
from pytest_qemu.platforms.foreign import merge_usr
from pytest_qemu.platforms.kernel import find_host_kernel
from pytest_qemu.plugin.kernel_log import kernel_trouble
from pytest_qemu.vm.argv import MachineSpec, RuntimePaths, build_command_line
from pytest_qemu.vm.plan import plan_launch
from pytest_qemu.vm.snapshot import SnapshotStore


def _argv(tmp_path: Path, arch: str, devices: list[Device]) -> list[str]:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0" * 1024)
    spec = MachineSpec(kernel=kernel, platform=get_platform(arch), devices=devices)
    return build_command_line(spec, RuntimePaths.in_directory(tmp_path, tmp_path)).argv


def test_ppc64el_is_an_alias_of_ppc64le() -> None:
    assert get_platform("ppc64el") is get_platform("ppc64le")


@pytest.mark.parametrize(
    ("arch", "console_device", "console"),
    [("ppc64le", "spapr-vty,chardev=console", "hvc0"),
     ("s390x", "sclpconsole,chardev=console", "ttysclp0"),
     ("riscv64", None, "ttyS0")],
)  # fmt: skip
def test_each_machine_has_its_console(
    tmp_path: Path, arch: str, console_device: str | None, console: str
) -> None:
    argv = _argv(tmp_path, arch, [])
    if console_device is None:
        assert "chardev:console" in argv
    else:
        assert argv[argv.index(console_device) - 1] == "-device"
        assert "-serial" not in argv
    assert get_platform(arch).console == console


def test_every_s390x_device_attaches_on_ccw(tmp_path: Path) -> None:
    (tmp_path / "share").mkdir()
    (tmp_path / "fat").mkdir()
    (tmp_path / "disk.img").write_bytes(b"\0" * 4096)
    devices: list[Device] = [
        P9Directory(tmp_path / "share"),
        ReadOnlyDirectory(tmp_path / "fat"),
        Disk(tmp_path / "disk.img"),
        VirtioRandom(),
    ]
    argv = " ".join(_argv(tmp_path, "s390x", devices))
    for driver in ("virtio-9p-ccw", "virtio-blk-ccw", "virtio-rng-ccw"):
        assert driver in argv
    assert "-pci" not in argv and "ahci" not in argv and "ide-" not in argv
    ctx = DeviceContext(get_platform("s390x"))
    assert ctx.virtio_device("serial") == "virtio-serial-ccw"
    assert ctx.virtio_device("net") == "virtio-net-ccw"


def test_a_device_without_a_ccw_form_names_itself_and_s390x() -> None:
    with pytest.raises(ConfigurationError, match=r"virtio iommu device .* s390x"):
        DeviceContext(get_platform("s390x")).virtio_device("iommu")


def test_a_vmlinux_named_kernel_is_found(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    image = tmp_path / "boot" / "vmlinux-6.12.118+deb13-riscv64"
    image.write_bytes(b"MZ")
    (tmp_path / "lib" / "modules" / "6.12.118+deb13-riscv64").mkdir(parents=True)
    prefix = get_platform("riscv64").kernel_image_prefix
    found = find_host_kernel(tmp_path / "boot", tmp_path / "lib" / "modules", prefix)
    assert (found.image, found.release) == (image, "6.12.118+deb13-riscv64")
    with pytest.raises(Exception, match=r"vmlinuz-\*"):
        find_host_kernel(tmp_path / "boot", tmp_path / "lib" / "modules")


def test_debian_13_packages_unpack_to_a_merged_usr_root(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib" / "modules" / "6.12").mkdir(parents=True)
    (tmp_path / "usr" / "bin").mkdir()
    merge_usr(tmp_path)
    assert (tmp_path / "lib" / "modules" / "6.12").is_dir()
    assert (tmp_path / "bin").resolve() == (tmp_path / "usr" / "bin").resolve()
    # An unmerged Debian 12 root stays as it is.
    old = tmp_path / "old"
    (old / "lib" / "modules").mkdir(parents=True)
    (old / "usr" / "lib").mkdir(parents=True)
    merge_usr(old)
    assert not (old / "lib").is_symlink()


@pytest.mark.parametrize(
    ("arch", "cloned"), [("riscv64", False), ("ppc64le", False), ("s390x", True)]
)
def test_platforms_say_why_their_vms_boot_instead_of_cloning(
    tmp_path: Path, arch: str, cloned: bool
) -> None:
    platform = get_platform(arch)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0" * 1024)
    spec = MachineSpec(kernel=kernel, platform=platform, devices=[VirtioRandom()])
    paths = RuntimePaths.in_directory(tmp_path, tmp_path)
    plan = plan_launch(spec, paths, [], AgentGuest(platform), SnapshotStore(tmp_path / "snapshots"))
    assert (plan.snapshot is not None) == cloned
    if not cloned:
        assert plan.boot_reason == platform.clone_blocker


def test_a_platforms_harmless_boot_warning_is_not_trouble() -> None:
    harmless = get_platform("ppc64le").harmless_kernel_messages
    log = "[0.1] WARNING: nvram corruption detected: 0-length partition\n[0.2] fine\n"
    assert kernel_trouble(log) is not None
    assert kernel_trouble(log, harmless) is None
    real = log + "[0.3] WARNING: CPU: 0 PID: 1 at x.c:1 f\n"
    trouble = kernel_trouble(real, harmless)
    assert trouble is not None and trouble.startswith("[0.3] WARNING: CPU")


@pytest.mark.parametrize(("arch", "order"), [("s390x", "big"), ("ppc64le", "little")])
def test_byte_order_is_a_platform_fact(arch: str, order: str) -> None:
    assert get_platform(arch).byte_order == order


def test_mips64el_vms_with_devices_boot_and_bare_ones_clone(tmp_path: Path) -> None:
    platform = get_platform("mips64el")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 1024)
    paths = RuntimePaths.in_directory(tmp_path, tmp_path)
    store = SnapshotStore(tmp_path / "snapshots")
    plans = [
        plan_launch(
            MachineSpec(kernel=kernel, platform=platform, devices=devices),
            paths,
            [],
            AgentGuest(platform),
            store,
        )
        for devices in ([], [VirtioRandom()])
    ]
    assert plans[0].snapshot is not None
    assert plans[1].snapshot is None and plans[1].boot_reason == platform.device_clone_blocker
