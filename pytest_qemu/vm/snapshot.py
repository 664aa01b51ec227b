"""Saved, booted guests: restored in a fraction of a second instead of booted.

A snapshot is the state of a VM saved with QMP ``migrate`` right after its
command agent first answered, before any per-VM setting (mounts, addresses)
was applied. It is keyed on everything that shapes the guest: QEMU, kernel,
initramfs, machine, memory, kernel arguments and the device layout. A restored
VM is then personalised through the agent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pytest_qemu.cache import cache_key, file_fingerprint
from pytest_qemu.vm.argv import MachineSpec

_FORMAT_VERSION = "2"


def snapshot_key(
    spec: MachineSpec, qemu_path: Path, kernel_args: Sequence[str], layout: Sequence[str]
) -> str:
    """A key that changes whenever anything that shapes the saved guest changes."""
    parts = [
        _FORMAT_VERSION,
        file_fingerprint(qemu_path),
        file_fingerprint(spec.kernel),
        file_fingerprint(spec.initramfs) if spec.initramfs else "-",
        spec.platform.name,
        "\0".join(spec.platform.machine_args),
        spec.accelerator,
        str(spec.memory),
        str(spec.cpus),
        "\0".join(kernel_args),
        "\0".join(layout),
        "\0".join(spec.qemu_args),
    ]
    return cache_key(parts)


@dataclass(frozen=True)
class Snapshot:
    """One saved state on disk and its files."""

    state: Path
    console: Path
    lock_path: Path

    def exists(self) -> bool:
        """Whether a usable state is saved; an empty one (a crashed writer) is discarded."""
        try:
            size = self.state.stat().st_size
        except FileNotFoundError:
            return False
        if size == 0:
            self.discard()
            return False
        return True

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """Held by the one process that builds this snapshot; the others wait for it."""
        lock = FileLock(str(self.lock_path))
        with lock:
            yield
            if self.state.is_file():
                # Built: later VMs find the state and never take the lock, and processes
                # waiting on this file's lock still get it. Unlinked so locks do not pile up.
                self.lock_path.unlink(missing_ok=True)

    def partial_path(self) -> Path:
        return self.state.with_name(f".{self.state.name}.{os.getpid()}.partial")

    def publish(self, partial: Path, console_log: Path) -> None:
        """Make a completed save visible to every process, console log first."""
        console_partial = self.console.with_name(f".{self.console.name}.{os.getpid()}.partial")
        shutil.copyfile(console_log, console_partial)
        os.replace(console_partial, self.console)
        os.replace(partial, self.state)

    def mark_used(self) -> None:
        """Record a restore, so that pruning keeps the snapshots in use."""
        with contextlib.suppress(OSError):
            os.utime(self.state)

    def discard(self) -> None:
        """Remove a snapshot that failed to restore, so the next VM rebuilds it."""
        for path in (self.state, self.console):
            path.unlink(missing_ok=True)


class SnapshotStore:
    """Snapshots under a cache directory (``<cache>/snapshots``).

    Each is as large as the guest memory in use (about 70 MB for the default
    guest), so only the *keep* most recently used are kept.
    """

    def __init__(self, root: Path, keep: int = 16) -> None:
        self.root = root
        self.keep = keep

    def get(self, key: str) -> Snapshot:
        self.root.mkdir(parents=True, exist_ok=True)
        self._prune()
        return Snapshot(
            state=self.root / f"{key}.state",
            console=self.root / f"{key}.console",
            lock_path=self.root / f"{key}.lock",
        )

    def _prune(self) -> None:
        def last_used(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except FileNotFoundError:
                return 0.0

        states = sorted(self.root.glob("*.state"), key=last_used, reverse=True)
        for stale in states[self.keep :]:
            # A VM restoring from it has the file open already; unlinking is safe.
            Snapshot(stale, stale.with_suffix(".console"), stale.with_suffix(".lock")).discard()
        # Half-written states of processes that were killed mid-save (named .KEY.PID.partial).
        for partial in self.root.glob(".*.partial"):
            owner = partial.name.rsplit(".", 2)[-2]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                partial.unlink(missing_ok=True)
