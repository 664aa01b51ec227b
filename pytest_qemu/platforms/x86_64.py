"""x86-64 guests on QEMU's ``pc`` machine, booted through PVH when the kernel allows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.base import Platform, UefiFirmware
from pytest_qemu.platforms.kernel import KernelError, extract_vmlinux, has_pvh_note

_DEBUG_EXIT_PORT = 0xF4
_DEBUG_EXIT_VALUE = 0x21

#: What OVMF's secure boot builds need of the machine: they keep the variable store safe
#: in system management mode (SMM), which QEMU emulates on q35 only, and the flash must
#: refuse writes from outside SMM.
OVMF_SMM_ARGS = (
    "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
)  # fmt: skip


def probe_boot_sector() -> bytes:
    """A boot sector that writes to the debug-exit port, then halts."""
    code = bytes(
        [
            0xBA, _DEBUG_EXIT_PORT, 0x00,  # mov dx, 0xf4
            0xB0, _DEBUG_EXIT_VALUE,  # mov al, 0x21
            0xEE,  # out dx, al
            0xF4,  # hlt
            0xEB, 0xFD,  # jmp back to hlt
        ]
    )  # fmt: skip
    return code.ljust(510, b"\0") + b"\x55\xaa"


@dataclass(frozen=True)
class X86_64(Platform):
    """The ``pc`` machine: a compressed ``vmlinuz`` is extracted to a PVH ``vmlinux``,
    which QEMU boots directly, skipping about 4 s of in-guest decompression under TCG."""

    #: isa-debug-exit makes QEMU exit with (value << 1) | 1.
    kvm_probe_status = (_DEBUG_EXIT_VALUE << 1) | 1

    def kvm_probe_args(self, directory: Path) -> list[str]:
        # A boot sector that writes to QEMU's isa-debug-exit port, on a floppy.
        boot_sector = directory / "probe.img"
        boot_sector.write_bytes(probe_boot_sector())
        return [
            *self.machine_args, "-m", "16",
            "-drive", f"file={boot_sector},format=raw,if=floppy,readonly=on",
            "-device", f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=0x04",
        ]  # fmt: skip

    def kernel_memory_size(self, image: Path) -> int | None:
        size = super().kernel_memory_size(image)
        try:
            with image.open("rb") as kernel:
                header = kernel.read(0x264)
        except OSError:
            return size
        # A bzImage decompresses itself in guest memory: the setup header's init_size
        # (boot protocol 2.10+) is what it needs there, not its compressed file size.
        if (
            header[0x202:0x206] == b"HdrS"
            and int.from_bytes(header[0x206:0x208], "little") >= 0x20A
        ):
            return max(size or 0, int.from_bytes(header[0x260:0x264], "little"))
        return size

    def uefi_kernel(self, image: Path, prepared: Path) -> Path:
        # OVMF loads a bzImage through its EFI stub; the PVH vmlinux is for QEMU's loader.
        return image

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
    cloud_kernel_package="linux-image-cloud-amd64",
    uefi=UefiFirmware(
        package="ovmf",
        code=Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
        variables=Path("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        secure_code=Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
        secure_variables=Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
        secure_args=OVMF_SMM_ARGS,
        secure_direct_boot=True,
    ),
    compiler="x86_64-linux-gnu-gcc",
    compiler_packages=("gcc", "libc6-dev"),
    # An emulated CPU starved by a loaded host fails the kernel's early IO-APIC timer
    # check and panics ("IO-APIC + timer doesn't work!"), seen with 16 VMs on 2 cores.
    kernel_args=("no_timer_check",),
    aliases=("amd64", "x86-64"),
    # x86 kernels take at most 2048 bytes with the terminating NUL. QEMU passes a
    # longer -append on, and the guest then prints nothing and never boots.
    command_line_limit=2047,
    gdb_architecture="i386:x86-64",
)
