"""Find a kernel and its modules, and turn a compressed x86 bzImage into a bootable vmlinux.

QEMU's ``-kernel`` can boot an uncompressed ELF ``vmlinux`` directly through
its PVH entry point, skipping the real-mode setup and in-guest decompression
of a bzImage; that is markedly faster under TCG. Distributions only ship the
compressed bzImage, so the ELF is extracted from its payload here.
"""

from __future__ import annotations

import contextlib
import importlib
import lzma
import os
import re
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from pytest_qemu.errors import KernelError, KernelNotFoundError

__all__ = [
    "HostKernel",
    "KernelError",
    "KernelNotFoundError",
    "extract_vmlinux",
    "find_host_kernel",
    "has_pvh_note",
]

_ELF_MAGIC: Final = b"\x7fELF"
_XZ_MAGIC: Final = b"\xfd7zXZ\x00"
_GZIP_MAGIC: Final = b"\x1f\x8b\x08\x00"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_CHUNK: Final = 1 << 20

_PT_NOTE: Final = 4
_XEN_ELFNOTE_PHYS32_ENTRY: Final = 18

_INSTALL_HINT: Final = (
    "Install a kernel with `apt-get install linux-image-amd64` (Debian/Ubuntu: "
    "linux-image-generic), or pass --qemu-kernel PATH to use a specific kernel image."
)


@dataclass(frozen=True)
class HostKernel:
    """A kernel installed on the host, with its modules."""

    image: Path
    """The compressed kernel, e.g. ``/boot/vmlinuz-6.1.0-56-amd64``."""
    release: str
    """``uname -r`` of that kernel, e.g. ``6.1.0-56-amd64``."""
    modules_dir: Path
    """Its modules, e.g. ``/lib/modules/6.1.0-56-amd64``."""


def kernel_release(image: Path) -> str | None:
    """``uname -r`` of the kernel *image*, or None if it cannot be told.

    An x86 ``bzImage`` names its version in its boot header (``kernel_version``); an
    uncompressed kernel holds ``Linux version <release>``; else a Debian-style file
    name (``vmlinuz-<release>``, also through a ``/boot/vmlinuz`` symlink) says it.
    """
    try:
        with image.open("rb") as f:
            header = f.read(0x210)
            if len(header) >= 0x210 and header[0x202:0x206] == b"HdrS":
                (pointer,) = struct.unpack_from("<H", header, 0x20E)
                if pointer:
                    f.seek(pointer + 0x200)
                    version = f.read(256).split(b"\0", 1)[0].decode(errors="replace")
                    if version.split():
                        return version.split()[0]
            f.seek(0)
            found = re.search(rb"Linux version (\S+) ", f.read(64 << 20))
    except OSError:
        return None
    if found:
        return found[1].decode(errors="replace")
    name = image.resolve().name
    for prefix in ("vmlinuz-", "vmlinux-", "Image-"):
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return None


# -- finding the kernel -------------------------------------------------------


def _version_key(release: str) -> list[str | int]:
    # re.split with a capturing group alternates text and digit runs, always
    # starting with text, so two keys compare str-to-str and int-to-int.
    parts: list[str | int] = []
    for index, part in enumerate(re.split(r"(\d+)", release)):
        parts.append(int(part) if index % 2 else part)
    return parts


def _is_readable(path: Path) -> bool:
    # Opening for real rather than trusting os.access(): ACLs, LSMs and
    # root-squashed network mounts all make access() unreliable.
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


def find_host_kernel(
    boot_dir: Path = Path("/boot"),
    modules_root: Path = Path("/lib/modules"),
    image_prefix: str = "vmlinuz",
) -> HostKernel:
    """Return the newest readable host kernel that has a modules directory.

    Candidates are ``boot_dir/vmlinuz-<release>`` and, as used by Fedora and
    Arch, ``modules_root/<release>/vmlinuz``; releases are compared
    version-aware (``6.1.0-10`` is newer than ``6.1.0-9``). Architectures whose
    kernels are installed under another name (ppc64el's ``vmlinux-<release>``)
    give it as *image_prefix*.

    Raises:
        KernelNotFoundError: nothing usable, with a message saying what was
            found, what was wrong with it and what to do.
    """
    candidates: list[tuple[str, Path]] = []
    try:
        boot_entries = sorted(boot_dir.glob(f"{image_prefix}-*"))
    except OSError:
        boot_entries = []
    candidates.extend((p.name[len(image_prefix) + 1 :], p) for p in boot_entries)
    try:
        module_dirs = sorted(p for p in modules_root.iterdir() if p.is_dir())
    except OSError:
        module_dirs = []
    candidates.extend(
        (d.name, d / image_prefix) for d in module_dirs if (d / image_prefix).is_file()
    )

    without_modules: list[Path] = []
    unreadable: list[Path] = []
    usable: list[tuple[list[str | int], int, HostKernel]] = []
    for order, (release, image) in enumerate(candidates):
        if not release or not image.is_file():
            continue
        modules_dir = modules_root / release
        if not modules_dir.is_dir():
            without_modules.append(image)
            continue
        if not _is_readable(image):
            unreadable.append(image)
            continue
        # -order: for equal releases the /boot image (listed first) wins.
        usable.append((_version_key(release), -order, HostKernel(image, release, modules_dir)))

    if usable:
        return max(usable, key=lambda item: (item[0], item[1]))[2]

    if unreadable:
        names = ", ".join(str(p) for p in unreadable)
        mode = _mode_string(unreadable[0])
        raise KernelNotFoundError(
            f"the host kernel image {names} is not readable by this user{mode} "
            "(Ubuntu installs kernels root-only). Make it readable, e.g. "
            f"`sudo chmod 0644 {unreadable[0]}` (`sudo dpkg-statoverride --update --add "
            f"root root 0644 {unreadable[0]}` keeps it so across kernel updates), "
            "or pass --qemu-kernel PATH to use a readable kernel image."
        )
    if without_modules:
        names = ", ".join(str(p) for p in without_modules)
        raise KernelNotFoundError(
            f"found kernel image(s) {names} but no matching modules directory in "
            f"{modules_root}. {_INSTALL_HINT}"
        )
    raise KernelNotFoundError(
        f"no kernel image ({image_prefix}-*) found in {boot_dir} or "
        f"{modules_root}/*/{image_prefix}. "
        f"{_INSTALL_HINT}"
    )


def _mode_string(path: Path) -> str:
    try:
        return f" (mode {stat.S_IMODE(path.stat().st_mode):04o})"
    except OSError:
        return ""


# -- extracting vmlinux ---------------------------------------------------------


class _Decompressor(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    @property
    def eof(self) -> bool: ...


class _LzmaXz:
    def __init__(self) -> None:
        self._dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def feed(self, data: bytes) -> bytes:
        return self._dec.decompress(data)

    @property
    def eof(self) -> bool:
        return self._dec.eof


class _Gzip:
    def __init__(self) -> None:
        # 16 + MAX_WBITS: expect a gzip header; the object stops at the end of
        # the member and leaves the rest in unused_data, as needed here.
        self._dec = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        return self._dec.decompress(data)

    @property
    def eof(self) -> bool:
        return self._dec.eof


def _zstd_factory() -> Callable[[], _Decompressor] | None:
    try:
        zstandard = importlib.import_module("zstandard")
    except ImportError:
        return None

    class _Zstd:
        def __init__(self) -> None:
            self._dec = zstandard.ZstdDecompressor().decompressobj()
            self._eof = False

        def feed(self, data: bytes) -> bytes:
            out = self._dec.decompress(data)
            # Older zstandard releases lack .eof; a non-empty unused_data
            # also means the frame has ended.
            self._eof = bool(getattr(self._dec, "eof", False) or self._dec.unused_data)
            return bytes(out)

        @property
        def eof(self) -> bool:
            return self._eof

    return _Zstd


def _candidates(data: bytes) -> Iterator[tuple[int, str, Callable[[], _Decompressor]]]:
    formats: list[tuple[bytes, str, Callable[[], _Decompressor]]] = [
        (_XZ_MAGIC, "xz", _LzmaXz),
        (_GZIP_MAGIC, "gzip", _Gzip),
    ]
    zstd = _zstd_factory()
    if zstd is not None:
        formats.append((_ZSTD_MAGIC, "zstd", zstd))
    found: list[tuple[int, str, Callable[[], _Decompressor]]] = []
    for magic, label, factory in formats:
        start = data.find(magic)
        while start != -1:
            found.append((start, label, factory))
            start = data.find(magic, start + 1)
    yield from sorted(found, key=lambda item: item[0])


def _try_decompress(data: memoryview, factory: Callable[[], _Decompressor], out: BinaryIO) -> bool:
    """Stream one candidate into ``out``; True if it is a complete ELF stream."""
    dec = factory()
    checked = False
    head = b""
    for offset in range(0, len(data), _CHUNK):
        chunk = dec.feed(bytes(data[offset : offset + _CHUNK]))
        if not checked:
            head += chunk
            if len(head) < len(_ELF_MAGIC) and not dec.eof:
                continue
            # Bail out on the first bytes: a stray magic sequence inside the
            # kernel would otherwise be decompressed in full for nothing.
            if not head.startswith(_ELF_MAGIC):
                return False
            checked = True
            out.write(head)
        else:
            out.write(chunk)
        if dec.eof:
            return True
    return False


def extract_vmlinux(bzimage: Path, destination: Path) -> Path:
    """Extract the uncompressed ELF kernel from ``bzimage`` into ``destination``.

    The payload is located by its compression magic (xz; gzip; zstd if the
    ``zstandard`` package is installed) and each candidate is tried in order
    of position until one decompresses to an ELF file. Data after the end of
    the compressed stream is ignored, as bzImages always have some. An image
    that already is an ELF file is copied as is. The result is written
    atomically, so concurrent extractions of the same image are safe.

    Raises:
        KernelError: unreadable image or no usable payload.
    """
    try:
        data = bzimage.read_bytes()
    except OSError as exc:
        raise KernelError(f"cannot read kernel image {bzimage}: {exc}") from exc

    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=_CHUNK) as out:
            if data.startswith(_ELF_MAGIC):
                out.write(data)
                ok = True
            else:
                ok = _extract_payload(data, out)
        if not ok:
            zstd_hint = (
                "zstd"
                if _zstd_factory() is not None
                else "zstd (needs the 'zstandard' package: pip install zstandard)"
            )
            raise KernelError(
                f"cannot extract vmlinux from kernel image {bzimage}: no xz, gzip or "
                f"{zstd_hint} payload in it decompresses to an ELF file (lz4, lzo, bzip2 "
                "and lzma kernels are not supported). Pass a supported bzImage or an "
                "uncompressed vmlinux instead."
            )
        tmp.chmod(0o644)
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return destination


def _extract_payload(data: bytes, out: BinaryIO) -> bool:
    view = memoryview(data)
    for start, _label, factory in _candidates(data):
        out.seek(0)
        out.truncate()
        try:
            if _try_decompress(view[start:], factory, out):
                return True
        except (lzma.LZMAError, zlib.error, EOFError, ValueError):
            continue
        except Exception as exc:
            # zstandard raises its own ZstdError; anything else is a bug.
            if type(exc).__name__ != "ZstdError":
                raise
    return False


# -- inspecting vmlinux ---------------------------------------------------------


def has_pvh_note(vmlinux: Path) -> bool:
    """Whether ``vmlinux`` is an ELF kernel with a Xen PVH entry point note.

    That note (name ``Xen``, type ``XEN_ELFNOTE_PHYS32_ENTRY``) is what lets
    ``qemu-system-x86_64 -kernel vmlinux`` boot the ELF directly. Files that
    are not ELF, or are truncated, yield False.
    """
    try:
        with vmlinux.open("rb") as f:
            return _has_pvh_note(f)
    except (OSError, struct.error):
        return False


def _has_pvh_note(f: BinaryIO) -> bool:
    ident = f.read(16)
    if len(ident) < 16 or not ident.startswith(_ELF_MAGIC):
        return False
    elf_class, encoding = ident[4], ident[5]
    if encoding not in (1, 2) or elf_class not in (1, 2):
        return False
    endian = "<" if encoding == 1 else ">"
    if elf_class == 2:
        # e_type..e_shstrndx after e_ident, ELF64 layout.
        header = struct.unpack(endian + "HHIQQQIHHHHHH", f.read(48))
        phoff, phentsize, phnum = header[4], header[8], header[9]
        phdr_format = endian + "IIQQQQQQ"
    else:
        header = struct.unpack(endian + "HHIIIIIHHHHHH", f.read(36))
        phoff, phentsize, phnum = header[4], header[8], header[9]
        phdr_format = endian + "IIIIIIII"
    if phnum == 0 or phentsize < struct.calcsize(phdr_format):
        return False
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    for index in range(phnum):
        entry = table[index * phentsize : (index + 1) * phentsize]
        fields = struct.unpack(phdr_format, entry[: struct.calcsize(phdr_format)])
        if elf_class == 2:
            p_type, p_offset, p_filesz, p_align = fields[0], fields[2], fields[5], fields[7]
        else:
            p_type, p_offset, p_filesz, p_align = fields[0], fields[1], fields[4], fields[7]
        if p_type != _PT_NOTE:
            continue
        f.seek(p_offset)
        if _notes_contain_pvh(f.read(p_filesz), endian, 8 if p_align == 8 else 4):
            return True
    return False


def _notes_contain_pvh(notes: bytes, endian: str, align: int) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, note_type = struct.unpack_from(endian + "III", notes, pos)
        pos += 12
        name = notes[pos : pos + namesz]
        pos += namesz + (-namesz % align)
        pos += descsz + (-descsz % align)
        if name.rstrip(b"\0") == b"Xen" and note_type == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
    return False
