"""Starting QEMU so that it cannot outlive the pytest process that started it."""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO

_PR_SET_PDEATHSIG = 1

# The parent-death signal fires when the *thread* that forked the child exits,
# so a VM started from a short-lived thread would die with that thread. All
# QEMU processes are forked from this one thread, which lives as long as the
# process does.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pytest-qemu-spawner")

# util-linux's setpriv sets the parent-death signal and execs QEMU. Without a
# preexec_fn, subprocess starts the child with vfork instead of copying the
# whole pytest process, which is most of the cost of a start (~6 ms of a clone).
_SETPRIV = shutil.which("setpriv")


@functools.cache
def _executable(program: str) -> str | None:
    return shutil.which(program)


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


def spawn(
    argv: Sequence[str],
    stderr: IO[bytes],
    env: Mapping[str, str] | None = None,
    pass_fds: Collection[int] = (),
) -> subprocess.Popen[bytes]:
    """Start *argv* with no stdin and stdout, killed with SIGKILL if we die.

    *pass_fds* stay open in the child, at the same numbers.
    """
    parent_pid = os.getpid()
    if _SETPRIV is not None and _executable(argv[0]) is None:
        # setpriv would report it only on its stderr, with exit status 127.
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    # With setpriv, no preexec_fn: see _SETPRIV. Without it, prctl in the forked child.
    command = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else list(argv)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            pass_fds=tuple(pass_fds),
            preexec_fn=None if _SETPRIV else lambda: _die_with_parent(parent_pid),
        )

    return _spawner.submit(start).result()
