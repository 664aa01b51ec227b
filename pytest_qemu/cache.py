"""An on-disk cache of built guest files, safe for concurrent pytest workers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from filelock import FileLock, Timeout


def default_cache_dir() -> Path:
    """Where built guests live.

    ``$PYTEST_QEMU_CACHE_DIR``, else ``$XDG_CACHE_HOME/pytest-qemu``, else
    ``~/.cache/pytest-qemu``.
    """
    if configured := os.environ.get("PYTEST_QEMU_CACHE_DIR"):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-qemu"


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


class BuildCache:
    """Files built once per key; other processes wait for the builder and reuse its file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, kind: str, key: str, suffix: str, build: Callable[[BinaryIO], None]) -> Path:
        """Return the cached file for *key*, calling *build* to write it if it is missing."""
        directory = self.root / kind
        target = directory / f"{key}{suffix}"
        if target.exists():
            return target
        directory.mkdir(parents=True, exist_ok=True)
        with build_lock(directory / f"{key}.lock"):
            if not target.exists():
                # Write beside the target and rename, so nobody ever sees half a file.
                with tempfile.NamedTemporaryFile(
                    dir=directory, prefix=f".{key}.", delete=False
                ) as out:
                    try:
                        build(cast(BinaryIO, out))
                    except BaseException:
                        out.close()
                        os.unlink(out.name)
                        raise
                os.replace(out.name, target)
        return target
