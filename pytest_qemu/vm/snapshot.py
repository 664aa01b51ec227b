"""Saved, booted guests (templates): cloned in tens of milliseconds instead of booted.

A snapshot is a VM template: the guest RAM of a VM booted with its memory in
a file (``<key>.ram``), and its device state saved with QMP ``migrate`` and
the ``x-ignore-shared`` capability (``<key>.state``, a few hundred KB) right
after its command agent first answered, before any per-VM setting (mounts,
addresses) was applied. Clones map the RAM file privately, copy-on-write, so
they share its pages through the page cache. It is keyed on everything that
shapes the guest: QEMU, kernel, initramfs, machine, memory, kernel arguments
and the device layout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.cache import build_lock, cache_key, file_fingerprint, tag_cache_directory
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.vm.argv import MachineSpec

_FORMAT_VERSION = "3"


def snapshot_key(
    spec: MachineSpec, qemu_path: Path, kernel_args: Sequence[str], layout: Sequence[str]
) -> str:
    """A key that changes whenever anything that shapes the saved guest changes."""
    parts = [
        _FORMAT_VERSION,
        file_fingerprint(qemu_path),
        file_fingerprint(spec.kernel) if spec.kernel else "-",
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
    #: The template's guest RAM, mapped copy-on-write by every clone.
    ram: Path

    def exists(self) -> bool:
        """Whether a usable state is saved; an empty one (a crashed writer) is discarded."""
        try:
            size = self.state.stat().st_size
        except FileNotFoundError:
            return False
        if size == 0 or not self.ram.is_file():
            self.discard()
            return False
        return True

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """Held by the one process that builds this snapshot; the others wait for it."""
        with build_lock(self.lock_path):
            yield

    def partial_path(self) -> Path:
        """Where this process writes the state before publishing it."""
        return self.state.with_name(f".{self.state.name}.{os.getpid()}.partial")

    def partial_ram_path(self) -> Path:
        """Where this process's template VM keeps its RAM before it is published.

        A new file for every build: clones of an earlier template map theirs
        privately, and writes to that file would show through in them.
        """
        return self.ram.with_name(f".{self.ram.name}.{os.getpid()}.partial")

    def disk(self, index: int) -> Path:
        """The template's frozen copy of a disk the guest wrote to (its overlay), by position."""
        return self.state.with_name(f"{self.state.stem}.disk{index}")

    def publish(
        self,
        partial: Path,
        partial_ram: Path,
        console_log: Path,
        disks: Sequence[Path] = (),
    ) -> None:
        """Make a completed save visible to every process; the state file goes last,
        since its presence is what says the snapshot is there. *disks* (the overlays
        the template VM wrote to) are moved in, frozen: clones only read them."""
        console_partial = self.console.with_name(f".{self.console.name}.{os.getpid()}.partial")
        shutil.copyfile(console_log, console_partial)
        os.replace(console_partial, self.console)
        for index, disk in enumerate(disks):
            disk.chmod(0o444)
            os.replace(disk, self.disk(index))
        os.replace(partial_ram, self.ram)
        os.replace(partial, self.state)

    def mark_used(self) -> None:
        """Record a restore, so that pruning keeps the snapshots in use."""
        with contextlib.suppress(OSError):
            os.utime(self.state)

    def discard(self) -> None:
        """Remove a snapshot that failed to restore, so the next VM rebuilds it."""
        # Clones running from it keep their mapping of the RAM file: unlinking is safe.
        for path in (
            self.state,
            self.console,
            self.ram,
            *self.state.parent.glob(f"{self.state.stem}.disk*"),
        ):
            path.unlink(missing_ok=True)


class SnapshotStore:
    """Snapshots under a cache directory (``<cache>/snapshots``).

    Each RAM file is a sparse file as large as the guest memory, of which the
    guest touched about 70 MB for the default guest, so only the *keep* most
    recently used are kept.
    """

    def __init__(self, root: Path, keep: int = 16) -> None:
        self.root = root
        self.keep = keep

    def get(self, key: str) -> Snapshot:
        """The snapshot of *key* (its files need not exist yet)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigurationError(
                f"cannot keep VM templates in {self.root} ({error.strerror}): point "
                "--qemu-cache-dir (or PYTEST_QEMU_CACHE_DIR) at a writable directory, "
                "or turn templates off with --qemu-snapshots=off"
            ) from None
        tag_cache_directory(self.root)
        self._prune()
        return Snapshot(
            state=self.root / f"{key}.state",
            console=self.root / f"{key}.console",
            lock_path=self.root / f"{key}.lock",
            ram=self.root / f"{key}.ram",
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
            Snapshot(
                stale, stale.with_suffix(".console"), stale.with_suffix(".lock"),
                stale.with_suffix(".ram"),
            ).discard()  # fmt: skip
        # Half-written states of processes that were killed mid-save (named .KEY.PID.partial).
        for partial in self.root.glob(".*.partial"):
            owner = partial.name.rsplit(".", 2)[-2]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                partial.unlink(missing_ok=True)
