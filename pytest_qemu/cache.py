"""An on-disk cache of built guest files, safe for concurrent pytest workers."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from filelock import FileLock, Timeout

from pytest_qemu.errors import CacheFull, SetupError


def default_cache_dir() -> Path:
    """Where built guests live.

    ``$PYTEST_QEMU_CACHE_DIR``, else ``$XDG_CACHE_HOME/pytest-qemu``, else
    ``~/.cache/pytest-qemu``.
    """
    return default_cache_dir_and_source()[0]


#: What :func:`default_cache_dir_and_source` says when no variable chose the directory.
DEFAULT_SOURCE = "the default ~/.cache"


def default_cache_dir_and_source() -> tuple[Path, str]:
    """:func:`default_cache_dir`, and what chose it (a variable's name, or ``~/.cache``)."""
    if configured := os.environ.get("PYTEST_QEMU_CACHE_DIR"):
        return Path(configured).expanduser().absolute(), "PYTEST_QEMU_CACHE_DIR"
    if base := os.environ.get("XDG_CACHE_HOME"):
        return Path(base).expanduser().absolute() / "pytest-qemu", "XDG_CACHE_HOME"
    return Path.home() / ".cache" / "pytest-qemu", DEFAULT_SOURCE


def make_writable_directory(path: Path) -> None:
    """Create *path* if needed and check a file can be written in it; ``OSError`` if not."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


#: ``CACHEDIR.TAG`` as the Cache Directory Tagging Specification has it
#: (https://bford.info/cachedir/): backup and archiving tools that honour it skip the
#: directory, and a test suite can tell its pytest-qemu caches apart.
CACHEDIR_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by pytest-qemu.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def tag_cache_directory(root: Path) -> None:
    """Mark the existing directory *root* as a cache with a ``CACHEDIR.TAG``, unless it is.

    A courtesy to backup tools: a directory that cannot take the tag (a full disk) works
    as a cache all the same, so that failure is not reported.
    """
    tag = root / "CACHEDIR.TAG"
    if tag.is_file():
        return
    try:
        # Whole or not at all, whichever process writes it.
        descriptor, part = tempfile.mkstemp(dir=root, prefix=".CACHEDIR.TAG.")
    except OSError:
        return
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(CACHEDIR_TAG)
        os.replace(part, tag)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(part)


def file_fingerprint(path: Path) -> str:
    """Identifies a file's version cheaply: path, size and modification time."""
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def build_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the file lock at *path* while building what it guards; remove the lock file
    before letting go, so that locks do not pile up in the cache.

    Builders check for their result after taking the lock: a process still waiting on
    the removed file then finds the result (or, after a failure, builds again, at worst
    beside one that took a new lock file). *on_wait* is called if another holds it.
    """
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.release()


#: errno values that mean the file system holding the cache has no room left.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def _is_out_of_space(error: BaseException) -> bool:
    """Whether *error* (or what caused it) says a file system is full."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _NO_ROOM:
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def _cache_full_error(directory: Path, what: str) -> CacheFull:
    """The error for a cache whose file system filled up while writing *what*."""
    return CacheFull(
        f"the pytest-qemu cache is full: writing {what} in {directory} failed "
        f"(No space left on device). Free space on that file system, or point "
        "--qemu-cache-dir (or PYTEST_QEMU_CACHE_DIR) at one with a few hundred MB free; "
        "see the troubleshooting page, 'Cache problems'"
    )


class BuildCache:
    """Files built once per key; other processes wait for the builder and reuse its file.

    Each file is published with a record of its size and SHA-256 (``<file>.sum``),
    checked before the file is handed out: a file that was truncated or damaged
    since it was built is rebuilt instead of being trusted.

    Hashing a 66 MB kernel costs each pytest process a tenth of a second or more,
    so a full check is done once per file, not once per process: the record then
    also holds the file's identity (size, modification and change times, inode), and a
    process that finds the file with that identity trusts it. Any write, truncation,
    ``touch`` or replacement changes the change time, which no one can set back. As in
    git's "racy clean" rule, the identity is recorded only for a file last changed
    more than :data:`_SETTLED` seconds before the check, so that a change in the same
    clock tick as the check cannot go unseen.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        # Files this process has checked, by (path, size, mtime, inode): checked once.
        self._verified: set[tuple[str, int, int, int]] = set()
        self._verified_lock = threading.Lock()

    def get(self, kind: str, key: str, suffix: str, build: Callable[[BinaryIO], None]) -> Path:
        """Return the cached file for *key*, calling *build* to write it if it is missing
        or does not match what was recorded when it was built.

        Raises :class:`~pytest_qemu.errors.CacheFull` if the cache's file system is full.
        """
        directory = self.root / kind
        target = directory / f"{key}{suffix}"
        if self._intact(target):
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tag_cache_directory(self.root)
            with build_lock(directory / f"{key}.lock"):
                if not self._intact(target):
                    self._build(directory, key, target, build)
        except OSError as error:
            if _is_out_of_space(error):
                raise _cache_full_error(directory, f"{kind} {target.name}") from None
            if not str(error.filename or "").startswith(f"{self.root}{os.sep}"):
                raise  # not about the cache's own files: the builder's error, as it is
            raise SetupError(
                f"cannot write {kind} {target.name} to the pytest-qemu cache in {directory} "
                f"({error.strerror}: {error.filename}): give --qemu-cache-dir (or "
                "PYTEST_QEMU_CACHE_DIR) a directory you can write to"
            ) from None
        return target

    def _build(
        self, directory: Path, key: str, target: Path, build: Callable[[BinaryIO], None]
    ) -> None:
        # Write beside the target and rename, so nobody ever sees half a file.
        out = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{key}.", delete=False)  # noqa: SIM115
        try:
            with out:
                build(cast(BinaryIO, out))
            size, digest = _measure(Path(out.name))
            record = Path(f"{out.name}.sum")
            record.write_text(f"{size} {digest}\n")
            os.replace(out.name, target)
            os.replace(record, _record_path(target))
        except BaseException:
            with contextlib.suppress(OSError):
                out.close()
            for leftover in (out.name, f"{out.name}.sum"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            raise

    def _intact(self, target: Path) -> bool:
        """Whether *target* exists with the size and checksum recorded when it was built."""
        try:
            stat = target.stat()
            recorded = _record_path(target).read_text().split()
        except (OSError, ValueError):
            return False
        identity = (str(target), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._verified_lock:
            if identity in self._verified:
                return True
        if len(recorded) not in (2, 3) or recorded[0] != str(stat.st_size):
            return False
        if recorded[2:] != [_identity(stat)]:
            try:
                if _measure(target)[1] != recorded[1]:
                    return False
            except OSError:
                return False
            _record_identity(target, stat, recorded[:2])
        with self._verified_lock:
            self._verified.add(identity)
        return True


#: Seconds since a file's last change after which its identity may be recorded (far more
#: than any file system's timestamp granularity).
_SETTLED = 2.0


def _identity(stat: os.stat_result) -> str:
    """A file's identity: size, modification and change times (ns), inode."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"


def _record_identity(target: Path, stat: os.stat_result, record: list[str]) -> None:
    """Add *target*'s identity to its checked *record*, once the file has settled (best
    effort: a read-only cache is simply checked in full each time)."""
    if time.time_ns() - stat.st_ctime_ns < _SETTLED * 1e9:
        return
    with contextlib.suppress(OSError):
        with tempfile.NamedTemporaryFile(
            "w", dir=target.parent, prefix=f".{target.name}.", suffix=".sum", delete=False
        ) as out:
            out.write(f"{record[0]} {record[1]} {_identity(stat)}\n")
        try:
            os.replace(out.name, _record_path(target))
        except OSError:
            os.unlink(out.name)
            raise


def _record_path(target: Path) -> Path:
    return target.with_name(f"{target.name}.sum")


def _measure(path: Path) -> tuple[int, str]:
    """The size and SHA-256 of the file at *path*."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return size, digest.hexdigest()
