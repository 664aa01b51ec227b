"""Writing the default guest's initramfs: busybox, our init and agent, and modules."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from pytest_qemu.errors import SetupError
from pytest_qemu.guests.cpio import CpioWriter
from pytest_qemu.guests.modules import KernelModule

#: The guest scripts shipped in pytest_qemu/guests/files, and where they go in the guest.
GUEST_SCRIPTS = {
    "init": "init",
    "setup": "etc/pytest-qemu/setup",
}
#: Where the compiled command agent goes in the guest.
AGENT_GUEST_PATH = "etc/pytest-qemu/agent"

_BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


def find_busybox(root: Path = Path("/")) -> Path:
    """The static busybox under *root*, which becomes the guest's whole userland."""
    for candidate in _BUSYBOX_CANDIDATES:
        if (root / candidate.relative_to("/")).is_file():
            return root / candidate.relative_to("/")
    raise SetupError(
        f"busybox was not found in {root}: install it with `apt-get install busybox-static` "
        "(the default guest needs the static build), or pass your own --qemu-initramfs"
    )


def check_static(busybox: Path) -> None:
    """Refuse a dynamically linked *busybox*: the default guest has no C library."""
    if not _is_static(busybox):
        raise SetupError(
            f"{busybox} is dynamically linked and cannot run in the default guest: "
            "install `busybox-static` instead of `busybox`"
        )


def busybox_applets(busybox: Path) -> list[str]:
    """The applets *busybox* provides, as guest paths such as ``bin/ls``."""
    try:
        listing = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise SetupError(f"cannot list the applets of {busybox}: {error}") from error
    return [line.strip().lstrip("/") for line in listing.splitlines() if line.strip()]


def guest_script(name: str) -> bytes:
    """The text of one of the guest scripts shipped with the package."""
    return resources.files("pytest_qemu.guests").joinpath("files").joinpath(name).read_bytes()


def write_initramfs(
    stream: BinaryIO,
    busybox: Path,
    applets: Sequence[str],
    modules: Sequence[KernelModule],
    agent: Path,
) -> None:
    """Write a newc initramfs: busybox with its applet links, our scripts and *agent*, *modules*.

    *modules* must be in load order; the init loads them in that order.
    """
    check_static(busybox)
    with CpioWriter(stream) as archive:
        for directory in (
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "root",
            "mnt",
            "etc",
            "usr/bin",
            "usr/sbin",
            "sbin",
        ):
            archive.add_directory(directory)
        archive.add_char_device("dev/console", 5, 1)
        archive.add_char_device("dev/null", 1, 3, mode=0o666)
        archive.add_file("bin/busybox", busybox.read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "bin/busybox":
                archive.add_symlink(applet, "/bin/busybox")
        for name, guest_path in GUEST_SCRIPTS.items():
            archive.add_file(guest_path, guest_script(name), mode=0o755)
        archive.add_file(AGENT_GUEST_PATH, agent.read_bytes(), mode=0o755)
        for module in modules:
            archive.add_file(f"lib/modules/{module.name}.ko", module.load_bytes())
        order = "".join(f"{module.name}\n" for module in modules)
        archive.add_file("etc/pytest-qemu/modules", order.encode())
        archive.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        archive.add_file("etc/group", b"root:x:0:\n")


def _is_static(executable: Path) -> bool:
    """Whether an ELF file (32- or 64-bit, either byte order) has no PT_INTERP segment,
    i.e. needs no dynamic loader."""
    with executable.open("rb") as file:
        header = file.read(64)
        if header[:4] != b"\x7fELF" or header[4] not in (1, 2) or header[5] not in (1, 2):
            return False
        order = "<" if header[5] == 1 else ">"
        # e_phoff, e_phentsize and e_phnum sit at different offsets in ELF32 and ELF64.
        if header[4] == 1:
            (program_headers,) = struct.unpack_from(f"{order}I", header, 28)
            entry_size, count = struct.unpack_from(f"{order}HH", header, 42)
        else:
            (program_headers,) = struct.unpack_from(f"{order}Q", header, 32)
            entry_size, count = struct.unpack_from(f"{order}HH", header, 54)
        file.seek(program_headers)
        table = file.read(entry_size * count)
    pt_interp = 3
    return all(
        struct.unpack_from(f"{order}I", table, i * entry_size)[0] != pt_interp
        for i in range(count)
        if len(table) >= (i * entry_size) + 4
    )
