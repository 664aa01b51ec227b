"""The shell command line a channel without an agent of its own runs a request as (pure)."""

from __future__ import annotations

import shlex
import time

from pytest_qemu.channels.base import CommandRequest


def set_clock_line() -> str:
    """The shell command that sets the guest's clock to the host's, now (to the second)."""
    return f"date -u -s @{int(time.time())} >/dev/null"


def shell_runner(request: CommandRequest) -> str:
    """*request*'s command as one POSIX shell command line: in its ``cwd`` (exit status
    126 if that fails), with its ``env``, under GNU ``timeout``, which kills the command's
    whole process group with SIGKILL at the timeout (exit status 137).

    Always through ``timeout`` (``0``: none), so that a command a signal ends reports
    ``128 + signal`` as a shell does, whatever runs the line.
    """
    command = request.command
    if request.cwd:
        command = f"cd {shlex.quote(request.cwd)} || exit 126\n{command}"
    # Through env only when there are variables to set: one process less.
    environment = "".join(
        f"{shlex.quote(f'{name}={value}')} " for name, value in request.env.items()
    )
    setting = f"env {environment}" if environment else ""
    seconds = 0 if request.timeout is None else max(1, round(request.timeout))
    return f"timeout -s KILL {seconds} {setting}sh -c {shlex.quote(command)}"


def timed_out(request: CommandRequest, returncode: int, duration: float) -> bool:
    """Whether a :func:`shell_runner` line that ended with *returncode* after *duration*
    seconds was killed by its timeout."""
    return request.timeout is not None and returncode == 137 and duration >= request.timeout
