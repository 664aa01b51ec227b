"""64-bit IBM Z guests (big-endian) on QEMU's ``s390-ccw-virtio`` machine, emulated (TCG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform


@dataclass(frozen=True)
class S390X(Platform):
    """The ``s390-ccw-virtio`` machine: no PCI, every virtio device sits on the channel
    subsystem (``virtio-*-ccw``), and the console is the SCLP line-mode-free console
    (``sclpconsole``, ``ttysclp0`` in the guest). Debian's kernel has virtio and its CCW
    transport built in, and its image boots as it is."""

    def console_args(self, chardev: str) -> list[str]:
        return ["-device", f"sclpconsole,chardev={chardev}"]

    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        return False


PLATFORM = S390X(
    name="s390x",
    debian_arch="s390x",
    qemu_binary="qemu-system-s390x",
    qemu_package="qemu-system-misc",
    machine_args=("-machine", "s390-ccw-virtio"),
    console="ttysclp0",
    kernel_package="linux-image-s390x",
    compiler="s390x-linux-gnu-gcc",
    compiler_packages=("gcc-s390x-linux-gnu", "libc6-dev-s390x-cross"),
    byte_order="big",
    virtio_transport="ccw",
    gdb_architecture="s390:64-bit",
    virtio_modules=(),
    # Every virtio device pytest-qemu attaches has a CCW form; these have none in 7.2.
    unavailable_devices=("iommu", "mem", "pmem"),
    # CONFIG_COMMAND_LINE_SIZE=4096 in Debian's kernel, which QEMU reads from its parameter area.
    command_line_limit=4095,
)
