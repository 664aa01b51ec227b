"""Commands and files over SSH, for images that run an SSH server.

The VM's guest has its port 22 forwarded to *port* on 127.0.0.1 (the image guest
gives the VM :class:`~pytest_qemu.devices.network.SSHForward`: user-mode
networking, the port leased for the VM). The channel speaks OpenSSH's client: one control master per
VM logs in with the key given (or the session's key that a cloud-init seed
installed) and every command is a client multiplexed over it (``-S``), so a
command costs a new session on an open connection, not a new login. Host keys
go to the VM's own known-hosts file, never the user's; the user's SSH
configuration and agent are not read (``-F /dev/null``, ``IdentityAgent=none``).

Each command runs through :func:`~pytest_qemu.channels.shell.shell_runner`
(``cwd``, ``env``, and GNU ``timeout`` killing the whole process group); its
stdout and stderr stream back apart, any size, into
:class:`~pytest_qemu.channels.output.CommandOutput`. Files are streamed through
``cat``.
"""

from __future__ import annotations

import os
import selectors
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

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
from pytest_qemu.channels.shell import shell_runner, timed_out
from pytest_qemu.channels.sshkeys import session_key

#: The user a cloud-init seed creates and the channel logs in as by default.
DEFAULT_USER = "pytest"
#: Between login attempts while the guest boots.
_RETRY_INTERVAL = 1.0
#: One login attempt's limit for the TCP connection and SSH's banner (the guest's sshd
#: forks and re-executes itself for each connection: slow under emulation).
_CONNECT_TIMEOUT = 20
_CHUNK = 256 * 1024


class SSHChannel(CommandChannel):
    """Commands over SSH to the guest's port 22, forwarded to *port* on 127.0.0.1.

    *credentials* ``(user, private_key)``: log in as *user* with the key file
    *private_key*; None: as :data:`DEFAULT_USER` with the session's key (what a
    cloud-init seed sets up). The user needs a POSIX shell, ``timeout``, ``env``,
    ``cat`` and ``stat`` (coreutils).
    """

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
        self._control = socket_dir / "ssh.ctl"
        self._master: subprocess.Popen[bytes] | None = None
        self._master_log = socket_dir / "ssh-master.log"
        self._qemu_running: Callable[[], bool] = lambda: True

    # -- the transport --------------------------------------------------------------------------

    def qemu_args(self) -> list[str]:
        return []  # the VM's SSHForward device is the transport

    def connect(self, deadline: float, qemu_running: Callable[[], bool]) -> None:
        self._qemu_running = qemu_running  # the login waits in wait_ready

    def _options(self) -> list[str]:
        return [
            "-F", "/dev/null",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", f"IdentityFile={self.key}",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            # A VM's host key is new at its first boot: trust it then, and only it after.
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", "LogLevel=ERROR",
            "-o", f"ControlPath={self._control}",
            "-p", str(self.port),
            "-l", self.user,
        ]  # fmt: skip

    def client_argv(self, remote_command: str) -> list[str]:
        """The ``ssh`` command that runs *remote_command* over the VM's open connection."""
        return ["ssh", *self._options(), "-o", "ControlMaster=no", "127.0.0.1", remote_command]

    # -- readiness ----------------------------------------------------------------------------

    def wait_ready(self, deadline: float, resumed: bool = False) -> str:
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
            outcome, answered = self._start_master(min(remaining, _CONNECT_TIMEOUT * 2))
            if outcome is None:
                return "-"
            # What sshd said last ("Permission denied...") tells more than a cut-off attempt.
            if answered or last == "nothing answered" or not last_answered:
                last, last_answered = outcome, answered
            time.sleep(min(_RETRY_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _start_master(self, timeout: float) -> tuple[str | None, bool]:
        """Start the control master; None once it is logged in, else why it is not, and
        whether that is an answer from the other end (not a timeout)."""
        self._stop_master()
        self._control.unlink(missing_ok=True)
        if not self.key.is_file():
            raise RequestRefused(f"the SSH private key {str(self.key)!r} does not exist")
        with self._master_log.open("wb") as log:
            master = subprocess.Popen(
                [
                    "ssh", *self._options(),
                    "-o", "ControlMaster=yes", "-o", "ControlPersist=no",
                    "-o", f"ConnectTimeout={_CONNECT_TIMEOUT}",
                    "-o", "ServerAliveInterval=15",
                    "-N", "127.0.0.1",
                ],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        self._master = master
        ends = time.monotonic() + timeout
        # The control socket appears once the master has logged in.
        while time.monotonic() < ends:
            if self._control.exists():
                return None, True
            if master.poll() is not None:
                why = self._master_log.read_text(errors="replace").strip()
                return (
                    why.splitlines()[-1] if why else f"ssh exited with {master.returncode}"
                ), True
            time.sleep(0.02)
        self._stop_master()
        return f"no login within {timeout:.0f} s", False

    def _stop_master(self) -> None:
        if self._master is None:
            return
        self._master.terminate()
        try:
            self._master.wait(5)
        except subprocess.TimeoutExpired:
            self._master.kill()
            self._master.wait()
        self._master = None

    def settle(self, deadline: float) -> None:
        # The VM is about to be saved as a template: a clone must not inherit the login
        # (it logs in anew on its own forwarded port).
        self._stop_master()

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

    def _exchange(
        self,
        remote_command: str,
        stdin: bytes | IO[bytes],
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        timeout: float | None,
    ) -> int:
        """Run *remote_command* over the connection, streaming; its exit status."""
        if self._master is None or self._master.poll() is not None:
            raise AgentGone(
                f"the SSH connection to 127.0.0.1:{self.port} is closed: "
                + self._master_log.read_text(errors="replace").strip()[-300:]
            )
        deadline = float("inf") if timeout is None else time.monotonic() + timeout + REPLY_GRACE
        client = subprocess.Popen(
            self.client_argv(remote_command),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _pump(client, stdin, on_stdout, on_stderr, deadline)
        except TimeoutError:
            client.kill()
            client.wait()
            raise NoReply(
                f"the command sent over SSH ran {REPLY_GRACE:g} s past its timeout without "
                "ending: the guest may be hung"
            ) from None
        returncode = client.wait()
        if returncode == 255 and (self._master is None or self._master.poll() is not None):
            raise AgentGone("the SSH connection closed while the command ran")
        return returncode

    def close(self) -> None:
        self._stop_master()
        self._control.unlink(missing_ok=True)


def _pump(
    client: subprocess.Popen[bytes],
    stdin: bytes | IO[bytes],
    on_stdout: Callable[[bytes], object],
    on_stderr: Callable[[bytes], object],
    deadline: float,
) -> None:
    """Feed *client* its input and hand its output to the callbacks as it arrives, until
    both its outputs end; :class:`TimeoutError` at *deadline*."""
    assert client.stdin and client.stdout and client.stderr
    pending = memoryview(stdin) if isinstance(stdin, bytes) else memoryview(b"")
    source = None if isinstance(stdin, bytes) else stdin
    with selectors.DefaultSelector() as selector:
        selector.register(client.stdout, selectors.EVENT_READ, on_stdout)
        selector.register(client.stderr, selectors.EVENT_READ, on_stderr)
        os.set_blocking(client.stdin.fileno(), False)
        selector.register(client.stdin, selectors.EVENT_WRITE, None)
        open_streams = 2
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for key, _ in selector.select(min(remaining, 1.0)):
                if key.fileobj is client.stdin:
                    if not pending and source is not None:
                        pending = memoryview(source.read(_CHUNK))
                    if not pending:
                        selector.unregister(client.stdin)
                        client.stdin.close()
                        continue
                    try:
                        pending = pending[os.write(client.stdin.fileno(), pending) :]
                    except BrokenPipeError:
                        selector.unregister(client.stdin)
                        client.stdin.close()
                        pending = memoryview(b"")
                    continue
                data = os.read(key.fileobj.fileno(), _CHUNK)  # type: ignore[union-attr]
                if data:
                    key.data(data)
                else:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
    if not client.stdin.closed:
        client.stdin.close()


def _text(output: CommandOutput) -> str:
    return output.read_bytes().decode("utf-8", errors="replace").strip()
