"""The QEMU process: started so that it cannot outlive the pytest process that started it,
with its QMP session, its events, its exit and the shutdown escalation."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from pytest_qemu.sockets import connect_unix
from pytest_qemu.vm.qmp import EventCallback, QMPConnection

_PR_SET_PDEATHSIG = 1

#: How long QEMU may take to create its sockets.
SOCKET_WAIT = 10.0

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


class QemuProcess:
    """One running QEMU: its process, its QMP session and the events QMP reports.

    :meth:`start` spawns it with QMP listeners registered from the first
    moment; :meth:`connect_qmp` starts the session; :meth:`stop` is the
    shutdown escalation (QMP ``quit``, wait, SIGKILL); :meth:`kill` ends it at once.
    """

    def __init__(self, process: subprocess.Popen[bytes], qmp: QMPConnection) -> None:
        self.process = process
        self.qmp = qmp
        #: The reason of QEMU's SHUTDOWN event ("guest-shutdown"...), once it came.
        self.shutdown_reason: str | None = None
        qmp.on_events(["SHUTDOWN"], self._on_shutdown)

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        stderr: IO[bytes],
        env: Mapping[str, str],
        pass_fds: Collection[int] = (),
        events: Mapping[str, EventCallback] | None = None,
    ) -> QemuProcess:
        """Spawn QEMU on *argv* (see :func:`spawn`), listening for QMP *events*."""
        process = spawn(argv, stderr=stderr, env=env, pass_fds=pass_fds)
        qmp = QMPConnection(f"vm-{process.pid}")
        for name, callback in (events or {}).items():
            qmp.on_events([name], callback)
        return cls(process, qmp)

    def connect_qmp(self, socket_path: Path, wait: float) -> None:
        """Connect to QEMU's QMP socket, retrying for *wait* seconds while QEMU runs."""
        connection = connect_unix(socket_path, time.monotonic() + wait, self.is_running)
        self.qmp.connect(connection, wait)

    @property
    def pid(self) -> int:
        """QEMU's process id."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has exited, else None."""
        return self.process.poll()

    def is_running(self) -> bool:
        """Whether QEMU is alive."""
        return self.process.poll() is None

    def has_exited(self, grace: float = 1.0) -> bool:
        """Whether QEMU has exited, allowing *grace* seconds for an exit already under way."""
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _on_shutdown(self, _name: str, data: dict[str, Any]) -> None:
        self.shutdown_reason = str(data.get("reason", "unknown"))

    def exit_reason(self) -> str:
        """Why QEMU exited, in words: the guest's own power-off or reset, a signal..."""
        reason = self.shutdown_reason
        if reason == "guest-shutdown":
            return "the guest powered off (QEMU reported SHUTDOWN, reason guest-shutdown)"
        if reason == "guest-reset":
            return (
                "the guest rebooted (QEMU reported SHUTDOWN, reason guest-reset; VMs run with "
                "-no-reboot, so a reboot ends QEMU)"
            )
        if reason == "guest-panic":
            return "the guest kernel panicked (QEMU reported SHUTDOWN, reason guest-panic)"
        if reason is not None:
            return f"QEMU reported SHUTDOWN, reason {reason}"
        status = self.returncode
        if status is not None and status < 0:
            return f"QEMU was killed by signal {-status}"
        return f"QEMU exited with status {status}"

    def execute(self, command: str, arguments: dict[str, object] | None, timeout: float) -> Any:
        """Run a QMP command (see :meth:`QMPConnection.execute`)."""
        return self.qmp.execute(command, arguments, timeout)

    def stop(self, timeout: float) -> None:
        """QMP ``quit``, then wait up to *timeout* for QEMU to exit; :meth:`kill` after."""
        if self.is_running():
            with contextlib.suppress(Exception):
                self.qmp.execute("quit", None, timeout=min(timeout, 5.0))
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """End QEMU with SIGKILL and close the QMP session. Idempotent."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.qmp.close()
