"""Every registered architecture does what the default guest does on x86_64.

The architectures come from the registry (``platforms.names()``): a new one gets these
tests with no list to edit. The other integration modules go deep on x86_64 and aarch64;
these go wide, cheaply: the bare VMs here are clones of the same template per
architecture as the demo's architecture matrix, every cloned VM with devices has the one
layout of :func:`with_devices`, so each architecture builds two templates in all, and
boots one VM cold (user networking cannot be cloned).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_qemu import (
    VM,
    Disk,
    GuestKernelTrouble,
    Network,
    NetworkInterface,
    P9Directory,
    ReadOnlyDirectory,
    UserNetwork,
    VirtioRandom,
    VMFactory,
)
from pytest_qemu.platforms import Platform, get_platform, names
from pytest_qemu.plugin.kernel_log import check_kernel_log

pytestmark = pytest.mark.vm

WARNING_AT_WARNING_LEVEL = (
    "echo '<4>WARNING: CPU: 0 PID: 1 at drivers/pytest/qemu.c:42 test' > /dev/kmsg"
)
DISK_SIZE = 1 << 20

StartVM = Callable[[NetworkInterface], VM]


def assert_cloned_unless_blocked(vm: VM, platform: Platform) -> None:
    """*vm* is a clone, unless *platform* cannot clone its VMs: then it booted, saying why."""
    blocker = platform.clone_blocker_for(bool(vm.spec.devices))
    if blocker is None:
        assert vm.restored_from is not None, vm.boot_reason
    else:
        assert vm.restored_from is None and vm.boot_reason == blocker


@pytest.fixture(scope="module", params=names())
def arch(request: pytest.FixtureRequest) -> str:
    """Overrides the integration tests' two architectures with every registered one."""
    return str(request.param)


def test_the_agent_runs_the_guests_own_word_size(qemu_vm: VM, arch: str) -> None:
    platform = get_platform(arch)
    # A clone of the architecture's template where migration works on its machine; a
    # cold boot, saying why, where it does not.
    assert_cloned_unless_blocked(qemu_vm, platform)
    assert qemu_vm.check("uname -m") == f"{platform.uname_machine}\n"
    # The ELF class of the running program (the agent's shell, busybox) is the
    # user land's word size; the width of a kernel address is the kernel's.
    elf_class = qemu_vm.check("od -An -tu1 -j4 -N1 /proc/self/exe").strip()
    assert int(elf_class) * 32 == platform.word_size
    address = qemu_vm.check("head -n 1 /proc/kallsyms").split()[0]
    assert len(address) * 4 == platform.word_size
    # Byte order, python-free: od reads two bytes as one number in the CPU's own order,
    # and the ELF header's EI_DATA says the binaries' (1 little, 2 big).
    little = platform.byte_order == "little"
    assert qemu_vm.check(r"printf '\001\000' | od -An -tu2").strip() == ("1" if little else "256")
    assert qemu_vm.check("od -An -tu1 -j5 -N1 /proc/self/exe").strip() == ("1" if little else "2")
    payload = bytes(range(256)) * 16
    assert qemu_vm.run("cat", input=payload).stdout_bytes == payload


@pytest.mark.qemu(kernel_warnings=False)
def test_a_kernel_warning_is_detected(qemu_vm: VM) -> None:
    check_kernel_log(qemu_vm)
    qemu_vm.check(WARNING_AT_WARNING_LEVEL)
    with pytest.raises(GuestKernelTrouble, match=r"drivers/pytest/qemu\.c:42"):
        check_kernel_log(qemu_vm)


@pytest.fixture
def with_devices(qemu_vm_factory: VMFactory, tmp_path: Path) -> StartVM:
    """Starts VMs with a 9p directory, a FAT directory and the given network interface:
    one layout, so one template. Three devices: mips64el's Malta takes no more."""
    for name in ("shared", "fat"):
        (tmp_path / name).mkdir()
    (tmp_path / "fat" / "from-host.txt").write_text("read-only\n")

    def start(interface: NetworkInterface) -> VM:
        devices = [
            interface,
            P9Directory(tmp_path / "shared", "shared"),
            ReadOnlyDirectory(tmp_path / "fat", "fat"),
        ]
        return qemu_vm_factory(devices=devices)

    return start


def test_devices_and_a_network_of_two(
    with_devices: StartVM, qemu_network: Network, tmp_path: Path, arch: str
) -> None:
    interfaces = [qemu_network.new_vm() for _ in range(2)]
    first, second = (with_devices(interface) for interface in interfaces)
    for vm in (first, second):
        assert_cloned_unless_blocked(vm, get_platform(arch))
    first.check("echo from-guest > /mnt/shared/out.txt")
    assert (tmp_path / "shared" / "out.txt").read_text() == "from-guest\n"
    assert first.check("cat /mnt/fat/from-host.txt") == "read-only\n"
    assert "Read-only file system" in first.run("touch /mnt/fat/nope").stderr
    first.check(f"ping -c 1 -W 5 {interfaces[1].address}", timeout=30)
    second.check(f"ping -c 1 -W 5 {interfaces[0].address}", timeout=30)


def test_a_cold_boot_with_user_networking_a_disk_and_entropy(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    # User networking cannot be cloned: this VM boots, and says so.
    (tmp_path / "disk.img").write_bytes(b"D" * DISK_SIZE)
    network = UserNetwork(forwards=[80])
    vm = qemu_vm_factory(
        devices=[network, Disk(tmp_path / "disk.img", serial="data"), VirtioRandom()]
    )
    assert vm.restored_from is None and vm.boot_reason
    disk = vm.check("head -c 4 /dev/disk/by-id/virtio-data; wc -c < /dev/disk/by-id/virtio-data")
    assert disk == f"DDDD{DISK_SIZE}\n"
    assert vm.check("head -c 8 /dev/hwrng | wc -c") == "8\n"
    vm.check("mkdir -p /srv && echo hello-from-the-guest > /srv/index.html && httpd -h /srv -p 80")
    host, port = network.host_address(80)
    with urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=30) as response:
        assert response.read() == b"hello-from-the-guest\n"


@pytest.mark.parametrize("qemu_arch", [None], ids=["mixed"])
def test_a_big_endian_vm_and_a_little_endian_vm_share_a_network(
    qemu_vm_factory: VMFactory, qemu_network: Network
) -> None:
    # s390x (big-endian, CCW devices) and riscv64 (little-endian, PCI, always booted).
    nics = {arch: qemu_network.new_vm() for arch in ("s390x", "riscv64")}
    vms = {arch: qemu_vm_factory(devices=[nic], arch=arch) for arch, nic in nics.items()}
    assert vms["s390x"].check("uname -m") == "s390x\n"
    vms["s390x"].check(f"ping -c 1 -W 5 {nics['riscv64'].address}", timeout=30)
    vms["riscv64"].check(f"ping -c 1 -W 5 {nics['s390x'].address}", timeout=30)
