"""Each VM's files: a private directory for its UNIX sockets and QEMU's temporary files,
and the directory its logs go to."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_qemu.errors import VMError
from pytest_qemu.vm.argv import RuntimePaths

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


@dataclass
class RunFiles:
    """Where one VM's sockets (a new run directory) and logs (*log_dir*, else the run
    directory) are."""

    socket_dir: Path
    log_dir: Path
    paths: RuntimePaths

    @classmethod
    def create(cls, log_dir: Path | None, gdb: bool) -> RunFiles:
        """A new run directory, and *log_dir* made if it is missing."""
        socket_dir = make_run_directory()
        log_dir = log_dir if log_dir is not None else socket_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        return cls(socket_dir, log_dir, RuntimePaths.in_directory(socket_dir, log_dir, gdb=gdb))

    @property
    def stderr_log(self) -> Path:
        """QEMU's stderr."""
        return self.log_dir / "qemu-stderr.log"

    @property
    def transcript_log(self) -> Path:
        """What happened to the VM, in order."""
        return self.log_dir / "transcript.log"

    def remove_sockets(self) -> None:
        """Remove the sockets of a QEMU that is gone (before another is launched)."""
        for path in self.socket_dir.glob("*.sock"):
            path.unlink(missing_ok=True)

    def move_logs(self, destination: Path) -> None:
        """Move the log directory to *destination* (absent, or an empty directory, on the
        same file system); QEMU keeps writing to its open files."""
        if self.log_dir == self.socket_dir:
            raise VMError("this VM keeps its logs with its sockets: they cannot be moved")
        os.replace(self.log_dir, destination)
        self.log_dir = destination
        self.paths = replace(self.paths, console_log=destination / self.paths.console_log.name)

    def adopt(self, other: RunFiles) -> None:
        """Use *other*'s run directory (where its QEMU's sockets are) instead of this one,
        which is removed; *other*'s logs must already be in this log directory."""
        if other.log_dir != self.log_dir or self.log_dir == self.socket_dir:
            raise VMError(f"the logs of {other.socket_dir} are not in {self.log_dir}")
        self.remove()
        self.socket_dir, self.paths = other.socket_dir, other.paths

    def remove(self) -> None:
        """Remove the run directory (a log directory of its own stays)."""
        # Without a log directory of its own, the console log lives here: keep it.
        if self.log_dir != self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
