"""Starting QEMU so that it cannot outlive the pytest process that started it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO

_PR_SET_PDEATHSIG = 1

# The parent-death signal fires when the *thread* that forked the child exits,
# so a VM started from a short-lived thread would die with that thread. All
# QEMU processes are forked from this one thread, which lives as long as the
# process does.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pytest-qemu-spawner")


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


def spawn(
    argv: Sequence[str], stderr: IO[bytes], env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start *argv* with no stdin and stdout, killed with SIGKILL if we die."""
    parent_pid = os.getpid()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            preexec_fn=lambda: _die_with_parent(parent_pid),
        )

    return _spawner.submit(start).result()
