"""64-bit little-endian MIPS guests on QEMU's ``malta`` board, emulated (TCG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform


@dataclass(frozen=True)
class Mips64El(Platform):
    """The Malta board with a 5KEc CPU, the one Debian's ``5kc-malta`` kernel is built for.
    Its PCI bus takes the ``virtio-*-pci`` devices; the kernel is an ELF booted as it is."""

    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        return False


PLATFORM = Mips64El(
    name="mips64el",
    debian_arch="mips64el",
    qemu_binary="qemu-system-mips64el",
    qemu_package="qemu-system-mips",
    machine_args=("-machine", "malta", "-cpu", "5KEc"),
    console="ttyS0",
    kernel_package="linux-image-5kc-malta",
    compiler="mips64el-linux-gnuabi64-gcc",
    compiler_packages=("gcc-mips64el-linux-gnuabi64", "libc6-dev-mips64el-cross"),
    # The guest's `uname -m` says mips64; Debian calls the architecture mips64el.
    guest_machine="mips64",
    aliases=("mips64",),
    # Linux routes interrupts only for the Malta's four PCI slots (18 to 21,
    # arch/mips/pci/fixup-malta.c); QEMU puts a fifth device in slot 22, whose driver
    # then waits for interrupts that never come (a clone of such a VM never answers).
    pci_slots=4,
    # The kernel takes 4096 bytes, but QEMU's Malta firmware hands it over in one
    # 256-byte environment entry (NUL included), after "rd_start=0x<16 hex> rd_size=<up
    # to 9 digits> " for the initramfs, and cuts the rest off without a word (measured).
    command_line_limit=255 - len("rd_start=0xffffffff80000000 rd_size=999999999 "),
    gdb_architecture="mips:isa64r2",
    # Seen in CI: a clone with the agent, 9p, FAT and a NIC (the four slots) lost a 9p
    # request's interrupt and hung; bare clones have never failed.
    device_clone_blocker=(
        "a Malta guest restored under QEMU 7.2 can lose the interrupts of its PCI devices "
        "(a clone hung on a 9p request): VMs with devices boot"
    ),
)
