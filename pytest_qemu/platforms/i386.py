"""32-bit x86 guests on QEMU's ``pc`` machine, emulated (TCG) on any host."""

from __future__ import annotations

from pathlib import Path

from pytest_qemu.platforms.base import UefiFirmware
from pytest_qemu.platforms.x86_64 import OVMF_SMM_ARGS, X86_64

#: The x86-64 platform's kernel handling (PVH extraction, the bzImage's memory size, the
#: debug-exit probe) is the same for the 32-bit kernel; only the facts differ.
PLATFORM = X86_64(
    name="i386",
    debian_arch="i386",
    qemu_binary="qemu-system-i386",
    qemu_package="qemu-system-x86",
    machine_args=("-machine", "pc"),
    console="ttyS0",
    # The non-PAE 686 flavour: it boots on every CPU QEMU emulates (qemu32 has no PAE).
    kernel_package="linux-image-686",
    # Debian's 32-bit OVMF comes only as a secure boot build (secure boot stays off with
    # its empty variable store): every VM then needs SMM, on q35. Debian ships no store
    # with Microsoft's keys for it.
    uefi=UefiFirmware(
        package="ovmf-ia32",
        code=Path("/usr/share/OVMF/OVMF32_CODE_4M.secboot.fd"),
        variables=Path("/usr/share/OVMF/OVMF32_VARS_4M.fd"),
        machine_args=OVMF_SMM_ARGS,
        efi_arch="ia32",
    ),
    compiler="i686-linux-gnu-gcc",
    compiler_packages=("gcc-i686-linux-gnu", "libc6-dev-i386-cross"),
    kernel_args=("no_timer_check",),
    guest_machine="i686",
    word_size=32,
    aliases=("i686", "i586", "i486", "x86"),
    command_line_limit=2047,
    gdb_architecture="i386",
)
