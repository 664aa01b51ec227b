"""The process-wide :class:`Allocator` that devices use when not given one."""

from __future__ import annotations

import os
import threading

from pytest_qemu.allocation.allocator import Allocator

_lock = threading.Lock()
_default: Allocator | None = None


def default_allocator() -> Allocator:
    """The allocator on :func:`default_state_dir`, created on first use in each process."""
    global _default
    with _lock:
        if _default is None:
            _default = Allocator()
        return _default


def _reset_after_fork() -> None:
    # The parent's lock may have been held by a thread the child does not have.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
