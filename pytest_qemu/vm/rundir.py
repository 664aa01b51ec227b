"""Each VM's private directory for its UNIX sockets and QEMU's temporary files."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

_PREFIX = "pytest-qemu-vm-"
_swept = False
_sweep_lock = threading.Lock()


def remove_orphaned_run_directories() -> list[Path]:
    """Remove the run directories of processes that are gone (killed before their
    teardown); return them."""
    removed = []
    for directory in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        owner = directory.name[len(_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def _alive(pid: int) -> bool:
    """Whether process *pid* runs (a killed xdist worker not yet reaped is a zombie: gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "PID (COMMAND) STATE ...": the command may hold spaces and parentheses.
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _sweep_orphans() -> None:
    """Remove directories left by processes that were killed (once per process)."""
    global _swept
    with _sweep_lock:
        if _swept:
            return
        _swept = True
    remove_orphaned_run_directories()


def make_run_directory() -> Path:
    """A new directory for one VM, named after this process so that orphans can be swept.

    UNIX socket paths are limited to 108 bytes: the directory is kept out of
    deep ``tmp_path`` trees, in the system's temporary directory.
    """
    _sweep_orphans()
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
