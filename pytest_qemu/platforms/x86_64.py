"""x86-64 guests on QEMU's ``pc`` machine, booted through PVH when the kernel allows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform
from pytest_qemu.platforms.kernel import KernelError, extract_vmlinux, has_pvh_note


@dataclass(frozen=True)
class X86_64(Platform):
    """The ``pc`` machine: a compressed ``vmlinuz`` is extracted to a PVH ``vmlinux``,
    which QEMU boots directly, skipping about 4 s of in-guest decompression under TCG."""

    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        try:
            extract_vmlinux(image, destination)
        except KernelError:
            return False
        return has_pvh_note(destination)


PLATFORM = X86_64(
    name="x86_64",
    debian_arch="amd64",
    qemu_binary="qemu-system-x86_64",
    qemu_package="qemu-system-x86",
    machine_args=("-machine", "pc"),
    console="ttyS0",
    kernel_package="linux-image-amd64",
    compiler="x86_64-linux-gnu-gcc",
    compiler_packages=("gcc", "libc6-dev"),
    # An emulated CPU starved by a loaded host fails the kernel's early IO-APIC timer
    # check and panics ("IO-APIC + timer doesn't work!"), seen with 16 VMs on 2 cores.
    kernel_args=("no_timer_check",),
)
