"""The lease state file and the lock that serialises every change to it.

Each operation is one transaction: take the lock, read ``leases.json``, drop
the leases of dead owners, let the caller change the list, write the file
atomically, release the lock. Nothing is cached between transactions, so
processes that share the state directory always see each other's leases.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import filelock

from pytest_qemu.allocation.errors import AllocationError
from pytest_qemu.allocation.lease import LeaseKind, LeaseRecord
from pytest_qemu.allocation.owner import Owner, boot_id
from pytest_qemu.allocation.statedir import prepare_state_dir

STATE_FILE = "leases.json"
LOCK_FILE = "leases.lock"
_FORMAT_VERSION = 1
# filelock polls a busy lock at a fixed interval. Its 50 ms default leaves
# waiters idle far longer than a transaction (about a millisecond) holds the
# lock, while a short fixed interval has many waiters burn the CPU the holder
# needs; so poll fast first and back off, with jitter against lockstep.
_FIRST_POLL = 0.001
_MAX_POLL = 0.05


class CorruptStateError(ValueError):
    """The state file's content is not a lease list this version understands."""


@dataclass
class State:
    """The leases seen inside one transaction; set ``dirty`` after changing them."""

    leases: list[LeaseRecord]
    reclaimed: list[LeaseRecord] = field(default_factory=list)
    dirty: bool = False


class LeaseStore:
    """``leases.json`` in *state_dir*, guarded by ``leases.lock`` and a thread lock."""

    def __init__(self, state_dir: Path, lock_timeout: float) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self.lock_path = state_dir / LOCK_FILE
        self._lock_timeout = lock_timeout
        self._boot_id = boot_id()
        # The last content read or written, parsed: a file with exactly these
        # bytes need not be parsed again (usually we wrote it ourselves).
        self._cache: tuple[bytes, list[LeaseRecord]] = (b"", [])
        self._init_locks()
        _stores.add(self)

    def _init_locks(self) -> None:
        # A flock is held per open file, so it also excludes other threads and
        # other LeaseStores of this process; the thread lock just spares threads
        # of one store from polling the file lock against each other.
        self._thread_lock = threading.Lock()
        self._file_lock = filelock.FileLock(str(self.lock_path), mode=0o600)

    @contextmanager
    def transaction(self) -> Iterator[State]:
        """Hold the lock and yield the current leases, dead owners' already removed.

        The file is rewritten only if the state is ``dirty`` when the block
        ends without an exception.
        """
        deadline = time.monotonic() + self._lock_timeout
        # threading rejects an infinite timeout; -1 means the same: wait forever.
        thread_timeout = -1 if math.isinf(self._lock_timeout) else self._lock_timeout
        if not self._thread_lock.acquire(timeout=thread_timeout):
            raise AllocationError(self._lock_timeout_message(other_thread=True))
        try:
            if not self.state_dir.is_dir():
                # A /tmp cleaner may have removed it; filelock would otherwise
                # retry the missing lock file until the timeout.
                prepare_state_dir(self.state_dir)
            self._acquire_file_lock(deadline)
            try:
                state = State(self._load())
                self._reclaim(state)
                yield state
                if state.dirty:
                    self._write(state.leases)
            finally:
                self._file_lock.release()
        finally:
            self._thread_lock.release()

    def _acquire_file_lock(self, deadline: float) -> None:
        delay = _FIRST_POLL
        while True:
            try:
                self._file_lock.acquire(timeout=0)
                return
            except filelock.Timeout:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AllocationError(self._lock_timeout_message()) from None
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, _MAX_POLL)

    def _load(self) -> list[LeaseRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            self._quarantine(f"cannot read it: {error}")
            return []
        if raw == self._cache[0] and raw:
            return list(self._cache[1])
        try:
            leases = self._parse(raw)
        except (CorruptStateError, ValueError) as error:
            self._quarantine(str(error))
            return []
        self._cache = (raw, leases)
        return list(leases)

    def _parse(self, raw: bytes) -> list[LeaseRecord]:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION:
            raise CorruptStateError(f"not a version {_FORMAT_VERSION} lease file")
        records = data.get("leases")
        if not isinstance(records, list):
            raise CorruptStateError("'leases' is not a list")
        file_boot_id = data.get("boot_id")
        if self._boot_id is not None and file_boot_id not in (None, self._boot_id):
            # Written before the last reboot: every owner is gone, and start
            # times restart from zero, so is_alive() could be fooled.
            return []
        return [_lease_from_record(record) for record in records]

    def _quarantine(self, reason: str) -> None:
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S.%f")
        aside = self.path.with_name(f"{STATE_FILE}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            kept = f"moved it to {aside}"
        except OSError as error:
            kept = f"could not move it aside ({error}); it will be overwritten"
        warnings.warn(
            f"pytest-qemu lease state {self.path} is unusable ({reason}); {kept} and "
            "started again with no leases. Values held by still running pytest-qemu "
            "processes may be handed out twice until those processes end.",
            RuntimeWarning,
            stacklevel=6,  # the caller of the Allocator method
        )

    def _write(self, leases: list[LeaseRecord]) -> None:
        data = {
            "version": _FORMAT_VERSION,
            "boot_id": self._boot_id,
            "leases": [_record_from_lease(lease) for lease in leases],
        }
        payload = json.dumps(data, separators=(",", ":")).encode()
        # A fixed temporary name is safe: only the lock holder writes it. No
        # fsync: the file protects against killed processes, not power loss,
        # and after a reboot boot_id invalidates it anyway.
        tmp = self.path.with_name(STATE_FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as error:
            raise AllocationError(f"cannot write the lease state {self.path}: {error}") from error
        self._cache = (payload, list(leases))

    def _reclaim(self, state: State) -> None:
        me = Owner.current()
        verdicts: dict[Owner, bool] = {me: True}
        kept: list[LeaseRecord] = []
        for lease in state.leases:
            alive = verdicts.get(lease.owner)
            if alive is None:
                alive = verdicts[lease.owner] = lease.owner.is_alive()
            (kept if alive else state.reclaimed).append(lease)
        if state.reclaimed:
            state.leases = kept
            state.dirty = True

    def _lock_timeout_message(self, *, other_thread: bool = False) -> str:
        holder = _lock_holder(self.lock_path)
        if holder:
            held_by = f"it is held by {holder}"
        elif other_thread:
            held_by = f"another thread of this process (pid {os.getpid()}) held the allocator"
        else:
            held_by = f"its holder could not be identified (try `fuser -v {self.lock_path}`)"
        return (
            f"timed out after {self._lock_timeout:g} s waiting for the lease lock "
            f"{self.lock_path}: {held_by}. A process stuck inside the pytest-qemu allocator "
            "(or anything else that locked that file) blocks every test run of this user: "
            "end it, or pass a larger lock_timeout"
        )


_KINDS = {kind.value: kind for kind in LeaseKind}


def _lease_from_record(record: Any) -> LeaseRecord:
    try:
        kind = _KINDS[record["kind"]]
        value, pid, start_time = record["value"], record["pid"], record["start_time"]
        purpose, token = record.get("purpose", ""), record.get("token", "")
    except (KeyError, TypeError, AttributeError):
        raise CorruptStateError(f"bad lease record {record!r}") from None
    # type() rather than isinstance(): bools are ints too, and this runs per record.
    if not (type(value) is type(pid) is type(start_time) is int):
        raise CorruptStateError(f"bad number in lease record {record!r}")
    if type(purpose) is not str or type(token) is not str:
        raise CorruptStateError(f"bad purpose or token in lease record {record!r}")
    return LeaseRecord(kind, value, Owner(pid, start_time), purpose, token=token)


def _record_from_lease(lease: LeaseRecord) -> dict[str, object]:
    return {
        "kind": lease.kind.value,
        "value": lease.value,
        "pid": lease.owner.pid,
        "start_time": lease.owner.start_time,
        "purpose": lease.purpose,
        "token": lease.token,
    }


def _lock_holder(lock_path: Path) -> str | None:
    """Describe the process holding a flock on *lock_path*, from ``/proc/locks``."""
    try:
        info = lock_path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    wanted = (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
    for line in lines:
        fields = line.split()
        # Format: "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"; "->" marks waiters.
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            location = (int(major, 16), int(minor, 16), int(inode))
            pid = int(fields[4])
        except ValueError:
            continue
        if location == wanted:
            return _describe_process(pid)
    return None


def _describe_process(pid: int) -> str:
    with suppress(OSError):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        command = " ".join(" ".join(arg.decode(errors="replace").split()) for arg in argv if arg)
        if command:
            return f"pid {pid} ({command[:200]})"
    return f"pid {pid}"


_stores: weakref.WeakSet[LeaseStore] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    # Another thread may have held a store's locks at fork time; in the child
    # that thread no longer exists, so its locks would never be released.
    for store in list(_stores):
        store._init_locks()


os.register_at_fork(after_in_child=_reinit_after_fork)
