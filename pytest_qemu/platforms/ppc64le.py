"""64-bit little-endian POWER guests on QEMU's ``pseries`` machine, emulated (TCG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform


@dataclass(frozen=True)
class PPC64LE(Platform):
    """The ``pseries`` machine with a POWER9 CPU and virtio-pci devices.

    ``x-vof=on`` replaces the SLOF firmware with QEMU's Virtual Open Firmware, which
    hands the kernel its device tree at once: SLOF costs 6.5 s of every boot under TCG.
    The console is the hypervisor's virtual terminal (``spapr-vty``), ``hvc0`` in the
    guest. Debian installs ppc64el kernels as an uncompressed ELF ``vmlinux``, which
    QEMU boots as it is."""

    def console_args(self, chardev: str) -> list[str]:
        return ["-device", f"spapr-vty,chardev={chardev}"]

    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        return False


PLATFORM = PPC64LE(
    name="ppc64le",
    debian_arch="ppc64el",
    qemu_binary="qemu-system-ppc64",
    qemu_package="qemu-system-ppc",
    # The spectre/meltdown capabilities TCG cannot provide are declared broken, so that
    # QEMU does not warn about each of them on every start.
    machine_args=(
        "-machine",
        "pseries,x-vof=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off",
        "-cpu",
        "POWER9",
    ),
    console="hvc0",
    kernel_package="linux-image-powerpc64le",
    kernel_image_prefix="vmlinux",
    compiler="powerpc64le-linux-gnu-gcc",
    compiler_packages=("gcc-powerpc64le-linux-gnu", "libc6-dev-ppc64el-cross"),
    aliases=("ppc64el",),
    gdb_architecture="powerpc:common64",
    # pseries' NVRAM starts out zeroed (SLOF, skipped here, would format it); the
    # kernel's partition scan says so with a "WARNING:" line on every boot.
    device_clone_blockers=(
        (
            "net",
            "a pseries guest restored with a virtio-net device hangs as its interface comes up "
            "(QEMU 7.2, TCG, XIVE or XICS alike)",
        ),
    ),
    harmless_kernel_messages=("nvram corruption detected: 0-length partition",),
    # powerpc's COMMAND_LINE_SIZE is 2048 with the terminating NUL.
    command_line_limit=2047,
)
