"""Commands and files over SSH, for images that run an SSH server.

The VM's guest has its port 22 forwarded to *port* on 127.0.0.1 (the image guest
gives the VM :class:`~pytest_qemu.devices.network.SSHForward`: user-mode
networking, the port leased for the VM). The channel speaks SSH with asyncssh,
on the private event loop thread the QMP and guest agent clients use: one
connection per VM, logged in with the key given (or the session's key that a
cloud-init seed installed), and a new session on it per command. Measured
against OpenSSH's client over a control master (``benchmarks/ssh_channel.py``),
a command's round trip took a third of the time and a login a quarter: no
process starts on the host per command.

The host key seen at the first login is written to the VM's own known-hosts
file and required from then on (OpenSSH's ``accept-new``); nothing of the
user's SSH set-up is read (no ``~/.ssh/config``, keys, known hosts or agent).

Each command runs through :func:`~pytest_qemu.channels.shell.shell_runner`
(``cwd``, ``env``, and GNU ``timeout`` killing the whole process group); its
stdout and stderr stream back apart, any size, into
:class:`~pytest_qemu.channels.output.CommandOutput`. Files are streamed through
``cat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pytest_qemu.asyncloop import loop_thread
from pytest_qemu.channels.base import (
    REPLY_GRACE,
    AgentGone,
    ChannelClosed,
    CommandChannel,
    CommandRequest,
    CommandResult,
    CommandTimedOut,
    NoReply,
    RequestRefused,
)
from pytest_qemu.channels.output import DEFAULT_MEMORY_LIMIT, CommandOutput
from pytest_qemu.channels.shell import set_clock_line, shell_runner, timed_out
from pytest_qemu.channels.sshkeys import session_key

#: The user a cloud-init seed creates and the channel logs in as by default.
DEFAULT_USER = "pytest"
#: Between login attempts while the guest boots.
_RETRY_INTERVAL = 1.0
#: One login attempt's limit (the guest's sshd forks and re-executes itself for each
#: connection: slow under emulation).
_LOGIN_TIMEOUT = 40.0
_CHUNK = 256 * 1024


class SSHChannel(CommandChannel):
    """Commands over SSH to the guest's port 22, forwarded to *port* on 127.0.0.1.

    *credentials* ``(user, private_key)``: log in as *user* with the key file
    *private_key*; None: as :data:`DEFAULT_USER` with the session's key (what a
    cloud-init seed sets up). The user needs a POSIX shell, ``timeout``, ``env``,
    ``cat`` and ``stat`` (coreutils).
    """

    personalises_on_resume = True

    def __init__(
        self,
        socket_dir: Path,
        port: int,
        credentials: tuple[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        if credentials is None:
            self.user, self.key = DEFAULT_USER, session_key().private_key
        else:
            self.user, self.key = credentials[0], Path(credentials[1])
        #: The loopback port the guest's port 22 is forwarded to.
        self.port = port
        self.known_hosts = socket_dir / "ssh_known_hosts"
        self._connection: Any = None  # asyncssh.SSHClientConnection
        self._qemu_running: Callable[[], bool] = lambda: True

    def qemu_args(self) -> list[str]:
        return []  # the VM's SSHForward device is the transport

    def connect(self, deadline: float, qemu_running: Callable[[], bool]) -> None:
        self._qemu_running = qemu_running  # the login waits in wait_ready

    # -- readiness ----------------------------------------------------------------------------

    def wait_ready(self, deadline: float, resumed: bool = False) -> str:
        if not self.key.is_file():
            raise RequestRefused(f"the SSH private key {str(self.key)!r} does not exist")
        last, last_answered = "nothing answered", False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoReply(
                    f"no SSH login as {self.user!r} with the key {str(self.key)!r} on "
                    f"127.0.0.1:{self.port} (the guest's port 22); last attempt: {last}"
                )
            if not self._qemu_running():
                raise ChannelClosed("QEMU exited before SSH answered")
            outcome, answered = self._login(min(remaining, _LOGIN_TIMEOUT))
            if outcome is None:
                if resumed:
                    self._personalise(deadline)
                return "-"
            # What sshd said last ("Permission denied") tells more than a cut-off attempt.
            if answered or last == "nothing answered" or not last_answered:
                last, last_answered = outcome, answered
            time.sleep(min(_RETRY_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _personalise(self, deadline: float) -> None:
        line = personalise_line(self.user)
        errors = CommandOutput()
        timeout = max(1.0, deadline - time.monotonic() - REPLY_GRACE)
        if self._exchange(line, b"", lambda _: None, errors.write, timeout) != 0:
            raise RequestRefused(f"personalising the restored guest failed: {_text(errors)}")

    def _login(self, timeout: float) -> tuple[str | None, bool]:
        """Log in; None once logged in, else why not, and whether the other end said so."""
        self._disconnect()
        try:
            self._connection = loop_thread.run(self._open(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return f"no login within {timeout:.0f} s", False
        except OSError as error:  # nothing listening, a reset: the socket's own words
            why = os.strerror(error.errno) if error.errno else str(error)
            return f"{why} ({error})", True
        except Exception as error:  # asyncssh's: "Permission denied for user...", etc.
            return f"{type(error).__name__}: {error}", True
        return None, True

    async def _open(self) -> Any:
        with warnings.catch_warnings():
            # asyncssh imports cryptography's DSA, which warns that it is deprecated.
            warnings.simplefilter("ignore")
            import asyncssh

        options: dict[str, Any] = {
            "username": self.user,
            "client_keys": [str(self.key)],
            "agent_path": None,
            "config": None,
            "known_hosts": str(self.known_hosts) if self.known_hosts.exists() else None,
        }
        connection = await asyncssh.connect("127.0.0.1", self.port, **options)
        if not self.known_hosts.exists():
            # The VM's host key, first seen now, is the only one it may show from now on.
            key = connection.get_server_host_key()
            if key is not None:
                line = f"[127.0.0.1]:{self.port} {key.export_public_key().decode().strip()}\n"
                self.known_hosts.write_text(line)
        return connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:

            async def close() -> None:
                connection.close()
                await connection.wait_closed()

            # Closing what may already be gone (QEMU exited): nothing to report.
            with contextlib.suppress(Exception):
                loop_thread.run(close(), 5)

    def loss_message(self, action: str, why: str) -> str:
        return (
            f"the guest ended the SSH session while trying to {action} ({why}); the next "
            "command logs in again. The guest's journal shows why (sshd killed, an "
            "out-of-memory kill)"
        )

    def settle(self, deadline: float) -> None:
        # The VM is about to be saved as a template: a clone must not inherit the login
        # (it logs in anew on its own forwarded port).
        self._disconnect()

    # -- requests -----------------------------------------------------------------------------

    def run(self, request: CommandRequest) -> CommandResult:
        limit = request.memory_limit or DEFAULT_MEMORY_LIMIT
        stdout = CommandOutput(limit, request.spill_dir)
        stderr = CommandOutput(limit, request.spill_dir)
        started = time.monotonic()
        returncode = self._exchange(
            shell_runner(request), request.stdin, stdout.write, stderr.write, request.timeout
        )
        result = CommandResult(
            request.command, returncode, stdout, stderr, time.monotonic() - started
        )
        if timed_out(request, returncode, result.duration):
            raise CommandTimedOut(result)
        return result

    def put(self, source: Path, guest_path: str, mode: int, timeout: float | None) -> None:
        quoted = shlex.quote(guest_path)
        errors = CommandOutput()
        with source.open("rb") as data:
            status = self._exchange(
                f"cat > {quoted} && chmod {mode:o} {quoted}",
                data, lambda _: None, errors.write, timeout,
            )  # fmt: skip
        if status != 0:
            raise RequestRefused(f"cannot write {guest_path}: {_text(errors)}")

    def get(self, guest_path: str, destination: Path, timeout: float | None) -> int:
        quoted = shlex.quote(guest_path)
        errors = CommandOutput()
        with destination.open("wb") as data:
            status = self._exchange(
                f"stat -c %a {quoted} >&2 && cat {quoted}", b"", data.write, errors.write, timeout
            )
        if status != 0:
            raise RequestRefused(f"cannot read {guest_path}: {_text(errors)}")
        mode = int(_text(errors).splitlines()[-1], 8)
        destination.chmod(mode)
        return mode

    def _connected(self) -> Any:
        """The open connection; once it has closed, a new login first.

        The template's login is closed before the template is saved (a VM whose save
        failed carries on without it), and a guest may end a session (its sshd killed):
        the next command logs in again, as the agent channels find a restarted agent.
        """
        connection = self._connection
        if connection is not None and not connection.is_closed():
            return connection
        outcome, _ = self._login(_LOGIN_TIMEOUT)
        if outcome is not None:
            raise AgentGone(
                f"the SSH connection to 127.0.0.1:{self.port} closed, and logging in again "
                f"failed: {outcome}"
            )
        return self._connection

    def _exchange(
        self,
        remote_command: str,
        stdin: bytes | IO[bytes],
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        timeout: float | None,
    ) -> int:
        """Run *remote_command* in a new session, streaming; its exit status."""
        connection = self._connected()
        limit = None if timeout is None else timeout + REPLY_GRACE
        try:
            status: int = loop_thread.run(
                _session(connection, remote_command, stdin, on_stdout, on_stderr), limit
            )
        except (asyncio.TimeoutError, TimeoutError):
            raise NoReply(
                f"the command sent over SSH ran {REPLY_GRACE:g} s past its timeout without "
                "ending: the guest may be hung"
            ) from None
        except (OSError, EOFError) as error:
            raise AgentGone(f"the SSH connection closed while the command ran: {error}") from None
        except Exception as error:
            if type(error).__module__.startswith("asyncssh"):
                raise AgentGone(f"the SSH connection failed: {error}") from None
            raise
        return status

    def close(self) -> None:
        self._disconnect()


async def _session(
    connection: Any,
    command: str,
    stdin: bytes | IO[bytes],
    on_stdout: Callable[[bytes], object],
    on_stderr: Callable[[bytes], object],
) -> int:
    process = await connection.create_process(command, encoding=None)

    async def feed() -> None:
        if isinstance(stdin, bytes):
            for start in range(0, len(stdin), _CHUNK):
                process.stdin.write(stdin[start : start + _CHUNK])
                await process.stdin.drain()
        else:
            while chunk := stdin.read(_CHUNK):
                process.stdin.write(chunk)
                await process.stdin.drain()
        process.stdin.write_eof()

    async def pump(stream: Any, sink: Callable[[bytes], object]) -> None:
        while chunk := await stream.read(_CHUNK):
            sink(chunk)

    try:
        await asyncio.gather(
            feed(), pump(process.stdout, on_stdout), pump(process.stderr, on_stderr)
        )
        completed = await process.wait()
    finally:
        process.close()
    status = completed.exit_status
    if status is None or status < 0:
        # Ended by a signal (shell_runner's timeout makes this rare): as a shell reports it.
        signal_name = completed.exit_signal[0] if completed.exit_signal else ""
        return 128 + _SIGNALS.get(signal_name, 0) if signal_name else 255
    return int(status)


_SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "ABRT": 6, "KILL": 9, "SEGV": 11, "PIPE": 13,
            "ALRM": 14, "TERM": 15}  # fmt: skip


def _text(output: CommandOutput) -> str:
    return output.read_bytes().decode("utf-8", errors="replace").strip()


def personalise_line(user: str) -> str:
    """The line that gives a restored guest the host's clock and 256 random bits, run by
    *user*'s login shell itself (each process costs a clone dearly: under TCG its code is
    translated anew in each QEMU). A user other than root sets the clock through
    ``sudo -n``, as a cloud-init seed's user may; one who may not keeps the template's
    clock."""
    clock = f"{set_clock_line()} 2>&1"
    if user != "root":
        clock = f"sudo -n {clock}"
    return f"{clock}; echo {secrets.token_urlsafe(32)} >/dev/urandom"
