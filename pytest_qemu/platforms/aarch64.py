"""64-bit Arm guests on QEMU's ``virt`` machine, emulated (TCG) on any host."""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform, UefiFirmware

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class AArch64(Platform):
    """The ``virt`` machine with a Cortex-A57: its PCIe bus takes the same ``virtio-*-pci``
    devices as x86. ``-cpu max`` boots five times slower under TCG (it emulates pointer
    authentication), and ``virt``'s default CPU is 32-bit, on which an arm64 kernel hangs
    silently, so the CPU is always named."""

    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        # Debian's arm64 vmlinuz is already an uncompressed Image, booted as it is; a
        # gzip-compressed one (Ubuntu's) is unpacked once.
        with image.open("rb") as kernel:
            if kernel.read(2) != _GZIP_MAGIC:
                return False
        with gzip.open(image, "rb") as compressed, destination.open("wb") as out:
            shutil.copyfileobj(compressed, out, 1 << 20)
        return True


PLATFORM = AArch64(
    name="aarch64",
    debian_arch="arm64",
    qemu_binary="qemu-system-aarch64",
    qemu_package="qemu-system-arm",
    machine_args=("-machine", "virt", "-cpu", "cortex-a57"),
    console="ttyAMA0",
    kernel_package="linux-image-arm64",
    cloud_kernel_package="linux-image-cloud-arm64",
    uefi=UefiFirmware(
        package="qemu-efi-aarch64",
        code=Path("/usr/share/AAVMF/AAVMF_CODE.fd"),
        variables=Path("/usr/share/AAVMF/AAVMF_VARS.fd"),
        secure_code=Path("/usr/share/AAVMF/AAVMF_CODE.ms.fd"),
        secure_variables=Path("/usr/share/AAVMF/AAVMF_VARS.ms.fd"),
        efi_arch="aa64",
    ),
    compiler="aarch64-linux-gnu-gcc",
    compiler_packages=("gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"),
    aliases=("arm64",),
    # arm64's COMMAND_LINE_SIZE is 2048 with the terminating NUL.
    command_line_limit=2047,
    gdb_architecture="aarch64",
)
