"""An on-disk cache of built guest files, safe for concurrent pytest workers."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, cast

from filelock import FileLock


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
        lock_path = directory / f"{key}.lock"
        with FileLock(str(lock_path)):
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
            # Built: later callers find the file and never take the lock, and processes
            # waiting on this lock file still get it. Unlinked so that locks do not pile up.
            lock_path.unlink(missing_ok=True)
        return target
