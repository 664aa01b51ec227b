"""The allocator devices use unless they are given one: one per state directory."""

from __future__ import annotations

import threading
from pathlib import Path

from pytest_qemu.allocation.allocator import Allocator
from pytest_qemu.allocation.statedir import default_state_dir

_lock = threading.Lock()
_allocators: dict[Path, Allocator] = {}


def default_allocator() -> Allocator:
    """This process's allocator for :func:`default_state_dir` (``$PYTEST_QEMU_STATE_DIR``)."""
    state_dir = default_state_dir()
    with _lock:
        if state_dir not in _allocators:
            _allocators[state_dir] = Allocator(state_dir)
        return _allocators[state_dir]
