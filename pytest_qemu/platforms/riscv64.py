"""64-bit RISC-V guests on QEMU's ``virt`` machine with OpenSBI, emulated (TCG).

Debian ships riscv64 from Debian 13 (trixie) on: its kernel and busybox come from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform


@dataclass(frozen=True)
class RISCV64(Platform):
    """The ``virt`` machine with QEMU's OpenSBI (``-bios default``, ``fw_dynamic``, which
    places the kernel itself; ``fw_jump`` leaves it too little room) and virtio-pci
    devices on its PCIe host. Debian's riscv64 kernel is an uncompressed ``Image``,
    booted as it is."""

    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        return False


PLATFORM = RISCV64(
    name="riscv64",
    debian_arch="riscv64",
    qemu_binary="qemu-system-riscv64",
    qemu_package="qemu-system-misc",
    machine_args=("-machine", "virt", "-bios", "default"),
    console="ttyS0",
    kernel_package="linux-image-riscv64",
    compiler="riscv64-linux-gnu-gcc",
    compiler_packages=("gcc-riscv64-linux-gnu", "libc6-dev-riscv64-cross"),
    debian_suite="trixie",
    gdb_architecture="riscv:rv64",
    # Debian installs it as /boot/vmlinux-<release>, an uncompressed Image (EFI stub).
    kernel_image_prefix="vmlinux",
    # riscv's COMMAND_LINE_SIZE is 1024 with the terminating NUL.
    command_line_limit=1023,
    uefi_missing=(
        "Debian 13's qemu-efi-riscv64 (EDK II 2025.02) needs QEMU 8.1 or later, where "
        "OpenSBI starts the firmware from flash unit 0; QEMU 7.2 runs flash unit 0 at reset "
        "instead of OpenSBI and starts unit 1, and the firmware prints nothing"
    ),
    clone_blocker=(
        "QEMU 7.2 does not migrate a riscv64 guest's timers, so a restored riscv64 VM "
        "never resumes (fixed upstream in 2025)"
    ),
)
