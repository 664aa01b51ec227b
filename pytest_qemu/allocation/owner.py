"""Process identity that survives pid reuse: a pid plus that process's start time."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.allocation.errors import AllocationError

_PROC = Path("/proc")
# Index of field 22 (starttime) among the fields that follow "(comm)", which start at field 3.
_STARTTIME_INDEX = 22 - 3
# A zombie (Z) or dying (X) process holds no sockets and runs no QEMU: its leases are free.
_DEAD_STATES = frozenset({"Z", "X"})


def _read_stat(pid: int) -> tuple[str, int]:
    """Return ``(state, starttime)`` of *pid* from ``/proc/<pid>/stat``.

    Raises :class:`ProcessLookupError` when there is no such process.
    """
    try:
        data = (_PROC / str(pid) / "stat").read_bytes()
    except FileNotFoundError as error:
        raise ProcessLookupError(pid) from error
    except OSError as error:
        # ESRCH: the process exited between open() and read().
        if error.errno == errno.ESRCH:
            raise ProcessLookupError(pid) from error
        raise
    # comm may itself contain spaces and parentheses; it ends at the last ")".
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode("ascii", "replace"), int(fields[_STARTTIME_INDEX])


@dataclass(frozen=True)
class Owner:
    """A live process, identified so that a recycled pid is not mistaken for it.

    ``start_time`` is field 22 of ``/proc/<pid>/stat`` (clock ticks since boot).
    Liveness is only meaningful inside one pid namespace: processes that share
    a state directory must see each other's pids (they do under pytest-xdist).
    """

    pid: int
    start_time: int

    @classmethod
    def current(cls) -> Owner:
        """The calling process."""
        pid = os.getpid()
        cached = _current_cache.get(pid)
        if cached is not None:
            return cached
        try:
            _, start_time = _read_stat(pid)
        except (OSError, ValueError, IndexError) as error:
            raise AllocationError(
                f"cannot read /proc/{pid}/stat ({error}): pytest-qemu leases need the Linux "
                "/proc filesystem to tell live lease holders from dead ones"
            ) from error
        owner = cls(pid, start_time)
        # After fork the pid changes, so the cache never hands a child its parent's identity.
        _current_cache.clear()
        _current_cache[pid] = owner
        return owner

    def is_alive(self) -> bool:
        """Whether the process still runs: the pid exists and its start time matches."""
        if self.pid <= 0:
            return False
        try:
            state, start_time = _read_stat(self.pid)
        except ProcessLookupError:
            return False
        except (OSError, ValueError, IndexError):
            # Cannot tell: keeping a lease too long is safe, stealing a live one is not.
            return True
        return start_time == self.start_time and state not in _DEAD_STATES


_current_cache: dict[int, Owner] = {}


def boot_id() -> str | None:
    """The kernel's per-boot random id, or None if this kernel does not expose it."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None
