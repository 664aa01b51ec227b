"""Writer for cpio "newc" archives (SVR4 without CRC, magic ``070701``).

This is the format the Linux kernel unpacks as an initramfs. The output is
deterministic: every entry gets uid/gid 0 and mtime 0, and inode numbers are
assigned in insertion order, so the same sequence of calls always produces a
byte-identical archive (which keeps cache keys built from it stable).
"""

from __future__ import annotations

import stat
from types import TracebackType
from typing import BinaryIO

__all__ = ["CpioWriter"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"
_MAX_U32 = 0xFFFFFFFF
# 6 bytes of magic + 13 fields of 8 hex digits.
_HEADER_SIZE = 110


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _normalise_path(path: str) -> str:
    """Return the archive-relative form of ``path`` or raise ValueError."""
    if not isinstance(path, str):
        raise TypeError(f"cpio path must be str, not {type(path).__name__}: {path!r}")
    if "\0" in path:
        raise ValueError(f"cpio path contains a NUL byte: {path!r}")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"cpio path must not contain '..': {path!r}")
    if not parts:
        raise ValueError(f"cpio path is empty after normalisation: {path!r}")
    return "/".join(parts)


def _permission_bits(mode: int, file_type: int, path: str) -> int:
    # Accept both bare permission bits and a full st_mode of the right type,
    # because callers often pass os.stat() results straight through.
    given_type = stat.S_IFMT(mode)
    if given_type not in (0, file_type) or mode < 0 or mode > 0o177777:
        raise ValueError(f"invalid mode {mode:#o} for cpio entry {path!r}")
    return stat.S_IMODE(mode)


class CpioWriter:
    """Write a cpio newc archive to a binary stream.

    Parent directories of every entry are emitted automatically (mode 0755)
    the first time they are needed. The stream is not closed by
    :meth:`close`; it stays owned by the caller.

    Usable as a context manager: leaving the ``with`` block normally writes
    the trailer; leaving it with an exception does not, so a half-written
    archive is never mistaken for a complete one.
    """

    def __init__(self, stream: BinaryIO) -> None:
        """Start an archive on ``stream`` (anything with a binary ``write``)."""
        self._stream = stream
        self._next_inode = 1
        # Archive path -> file type (stat.S_IFDIR, ...) of everything written.
        self._entries: dict[str, int] = {}
        self._dir_modes: dict[str, int] = {}
        self._closed = False

    # -- public API ---------------------------------------------------------

    def add_directory(self, path: str, mode: int = 0o755) -> None:
        """Add a directory (and any missing parents).

        Adding a directory that already exists with the same permissions is a
        no-op; with different permissions it is an error, since the earlier
        entry cannot be changed any more.
        """
        name = _normalise_path(path)
        perms = _permission_bits(mode, stat.S_IFDIR, name)
        self._check_open()
        existing = self._entries.get(name)
        if existing is not None:
            if existing != stat.S_IFDIR:
                raise ValueError(f"cpio path {name!r} already exists and is not a directory")
            if self._dir_modes[name] != perms:
                raise ValueError(
                    f"cpio directory {name!r} was already added with mode "
                    f"{self._dir_modes[name]:#o}; add it with mode {perms:#o} before "
                    "adding anything inside it"
                )
            return
        self._ensure_parents(name)
        self._write_directory(name, perms)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file with contents ``data``."""
        name = _normalise_path(path)
        perms = _permission_bits(mode, stat.S_IFREG, name)
        self._check_open()
        self._check_new(name)
        self._ensure_parents(name)
        self._write_entry(name, stat.S_IFREG | perms, nlink=1, data=bytes(data))

    def add_symlink(self, path: str, target: str) -> None:
        """Add a symbolic link at ``path`` pointing to ``target`` (kept verbatim)."""
        name = _normalise_path(path)
        if not target or "\0" in target:
            raise ValueError(f"invalid symlink target {target!r} for cpio entry {name!r}")
        self._check_open()
        self._check_new(name)
        self._ensure_parents(name)
        self._write_entry(name, stat.S_IFLNK | 0o777, nlink=1, data=target.encode())

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node, e.g. ``dev/console`` (5, 1)."""
        name = _normalise_path(path)
        perms = _permission_bits(mode, stat.S_IFCHR, name)
        for label, number in (("major", major), ("minor", minor)):
            if not 0 <= number <= _MAX_U32:
                raise ValueError(f"invalid device {label} {number} for cpio entry {name!r}")
        self._check_open()
        self._check_new(name)
        self._ensure_parents(name)
        self._write_entry(name, stat.S_IFCHR | perms, nlink=1, rdev=(major, minor))

    def close(self) -> None:
        """Write the ``TRAILER!!!`` entry. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._write_header(_TRAILER, inode=0, mode=0, nlink=1, size=0, rdev=(0, 0))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()

    # -- internals ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("cannot add entries to a closed cpio archive")

    def _check_new(self, name: str) -> None:
        if name in self._entries:
            raise ValueError(f"cpio path {name!r} was already added")

    def _ensure_parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            existing = self._entries.get(parent)
            if existing is None:
                self._write_directory(parent, 0o755)
            elif existing != stat.S_IFDIR:
                raise ValueError(
                    f"cannot add {name!r}: parent {parent!r} is in the archive "
                    "but is not a directory"
                )

    def _write_directory(self, name: str, perms: int) -> None:
        self._write_entry(name, stat.S_IFDIR | perms, nlink=2)
        self._dir_modes[name] = perms

    def _write_entry(
        self,
        name: str,
        mode: int,
        *,
        nlink: int,
        data: bytes = b"",
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        if len(data) > _MAX_U32:
            raise ValueError(f"cpio entry {name!r} is too large for the newc format")
        inode = self._next_inode
        self._next_inode += 1
        self._write_header(name, inode=inode, mode=mode, nlink=nlink, size=len(data), rdev=rdev)
        if data:
            self._stream.write(data)
            self._stream.write(_pad4(len(data)))
        self._entries[name] = stat.S_IFMT(mode)

    def _write_header(
        self,
        name: str,
        *,
        inode: int,
        mode: int,
        nlink: int,
        size: int,
        rdev: tuple[int, int],
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            inode,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            0,  # mtime: fixed so archives are reproducible
            size,
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check: only used by the 070702 CRC variant
        )
        header = _MAGIC + b"".join(b"%08X" % field for field in fields)
        self._stream.write(header + encoded + _pad4(_HEADER_SIZE + len(encoded)))
