"""32-bit Arm (hard-float) guests on QEMU's ``virt`` machine, emulated (TCG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform, UefiFirmware


@dataclass(frozen=True)
class ArmHF(Platform):
    """The ``virt`` machine with ``highmem=off`` and a Cortex-A15: Debian's ``armmp`` kernel
    has no LPAE, so on plain ``virt`` it cannot reach the PCIe host's ECAM area above 4 GB
    ("can't claim ECAM area") and no virtio device appears. The ``zImage`` decompresses
    itself in the guest."""

    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        return False


PLATFORM = ArmHF(
    name="armhf",
    debian_arch="armhf",
    qemu_binary="qemu-system-arm",
    qemu_package="qemu-system-arm",
    machine_args=("-machine", "virt,highmem=off", "-cpu", "cortex-a15"),
    console="ttyAMA0",
    kernel_package="linux-image-armmp",
    # ArmVirtQemu for 32-bit Arm: two 64 MiB images, the size of each of virt's two flash
    # banks (below 128 MiB, so highmem=off leaves them where they are). Secure-boot
    # capable, but Debian ships no variable store with keys enrolled for it.
    uefi=UefiFirmware(
        package="qemu-efi-arm",
        code=Path("/usr/share/AAVMF/AAVMF32_CODE.fd"),
        variables=Path("/usr/share/AAVMF/AAVMF32_VARS.fd"),
        efi_arch="arm",
    ),
    compiler="arm-linux-gnueabihf-gcc",
    compiler_packages=("gcc-arm-linux-gnueabihf", "libc6-dev-armhf-cross"),
    guest_machine="armv7l",
    word_size=32,
    aliases=("armv7l", "arm", "armv7"),
    # arm's COMMAND_LINE_SIZE is 1024 with the terminating NUL.
    command_line_limit=1023,
    gdb_architecture="arm",
)
