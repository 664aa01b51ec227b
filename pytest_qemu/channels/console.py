"""Commands through a shell on the guest's serial console, for images without an agent.

Slower than an agent, but any Linux image with a shell on its console works.
The channel logs in if the console asks (with the credentials given), turns
the terminal's echo off and quiets kernel messages, then frames each command
with markers made of a per-command nonce: the command's stdout and stderr go
to files in the guest and come back base64-encoded between the markers, with
the exit status, so they are kept apart and binary-safe.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import itertools
import re
import secrets
import select
import shlex
import socket
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from pytest_qemu.channels.base import (
    REPLY_GRACE,
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
from pytest_qemu.sockets import connect_unix

#: A login prompt ends the console's output (getty's "host login: " waiting for a name);
#: "host login: root (automatic login)" is not one.
_LOGIN_PROMPT = re.compile(rb"login:[ \t]*\Z")
#: How long a prompt must stay the last thing on the console to count as one.
_PROMPT_SETTLE = 0.5
#: How often QEMU's uptake of a probe typed at a booting guest is checked.
_PENDING_POLL = 0.05
_PASSWORD_PROMPT = re.compile(rb"[Pp]assword:\s*$", re.M)
_CURSOR_QUERY = b"\x1b[6n"
#: Where the guest keeps a command's input and output while it runs.
_WORK = "/tmp/.pytest-qemu"


class ConsoleChannel(CommandChannel):
    """A shell on the serial console, reached through QEMU's console socket.

    *credentials* ``(user, password)`` answer a login prompt; without them a
    login prompt is an error that says so. The channel takes the console's
    socket for itself: ``vm.console.write`` cannot be used with it (the
    console log, ``vm.console.text()`` and ``expect``, still works).
    """

    personalises_on_resume = True
    #: How often the ready probe is typed again while no shell answers it.
    probe_interval = 1.0
    #: A booting guest's console that shows nothing for this long is typed at all the same.
    silent_console_grace = 5.0

    def __init__(self, socket_dir: Path, credentials: tuple[str, str] | None = None) -> None:
        self.socket_path = socket_dir / "console.sock"
        self.credentials = credentials
        self._socket: socket.socket | None = None
        self._buffer = bytearray()
        self._last_output = time.monotonic()
        self._ids = itertools.count(1)

    def qemu_args(self) -> list[str]:
        return []  # the VM's serial console is the transport

    def connect(self, deadline: float, qemu_running: Callable[[], bool]) -> None:
        self._socket = connect_unix(self.socket_path, deadline, qemu_running)
        self._socket.setblocking(False)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- readiness ----------------------------------------------------------------------------

    def wait_ready(self, deadline: float, resumed: bool = False) -> str:
        nonce = secrets.token_hex(3)
        marker = re.compile(rf"PQ{nonce}_(\d+)_42".encode())
        logged_in = False
        # A booting guest is not typed at until its console has shown something and gone
        # quiet, and a probe is typed again only once QEMU has taken all of the last one:
        # see _typed_bytes_pending for why bytes must not pile up before the kernel reads.
        # (A restored guest's shell is reading already.)
        began = next_probe = time.monotonic()
        probed = False
        while True:
            now = time.monotonic()
            if answer := marker.search(self._buffer):
                break
            if now >= deadline:
                raise NoReply(
                    "no shell answered on the serial console"
                    + ("" if logged_in else " (and no login prompt appeared)")
                )
            if _LOGIN_PROMPT.search(bytes(self._buffer[-200:])):
                quiet_for = time.monotonic() - self._last_output
                if quiet_for < _PROMPT_SETTLE:
                    # Perhaps "login: root (automatic login)" is still arriving: wait, and
                    # type nothing at what may be a login prompt.
                    self._receive(_PROMPT_SETTLE - quiet_for)
                    continue
                if self.credentials is None:
                    raise RequestRefused(
                        "the serial console asks for a login: give credentials=(user, "
                        "password), or let the image log in on its console by itself"
                    )
                self._buffer.clear()
                self._send(f"{self.credentials[0]}\n".encode())
                self._wait_for(_PASSWORD_PROMPT, min(deadline, time.monotonic() + 10))
                self._send(f"{self.credentials[1]}\n".encode())
                logged_in = True
                next_probe = time.monotonic() + 0.5
            if probed and not resumed and self._typed_bytes_pending():
                # The next probe waits a full interval after QEMU takes this one's last
                # byte, so that it cannot arrive while the kernel drains the UART.
                next_probe = now + self.probe_interval
                self._receive(min(deadline, now + _PENDING_POLL) - now)
                continue
            if now >= next_probe and (
                resumed
                or probed
                or (self._buffer and now - self._last_output >= _PROMPT_SETTLE)
                or now - began >= self.silent_console_grace
            ):
                self._send(ready_probe(nonce, resumed))
                probed = True
                next_probe = now + self.probe_interval
            self._receive(min(deadline, next_probe) - time.monotonic())
        # Read the match before the buffer it points into changes.
        status = int(answer.group(1))
        self._buffer.clear()
        if resumed:
            if status != 0:
                raise RequestRefused(
                    f"setting the restored guest's clock failed (date exited with {status})"
                )
            # This is the template's shell, set up before the template was saved.
            return "-"
        # A quiet, echo-free, prompt-free shell; kernel messages kept off the console.
        setup = (
            "stty -echo -onlcr 2>/dev/null; export PS1='' PS2='' TERM=dumb; "
            f"dmesg -n 1 2>/dev/null; mkdir -p {_WORK}"
        )
        self._exchange(setup, deadline)
        return "-"

    # -- requests -----------------------------------------------------------------------------

    def run(self, request: CommandRequest) -> CommandResult:
        request_id = next(self._ids)
        limit = request.memory_limit or DEFAULT_MEMORY_LIMIT
        stdout = CommandOutput(limit, request.spill_dir)
        stderr = CommandOutput(limit, request.spill_dir)
        script = command_script(request, request_id)
        started = time.monotonic()
        deadline = (
            float("inf") if request.timeout is None else started + request.timeout + REPLY_GRACE
        )
        self._send(script.encode())
        status_line = re.compile(rf"PQ_STATUS_{request_id}_(-?\d+)\r?\n".encode())
        match = self._wait_for(status_line, deadline)
        # Read the match before the buffer it points into changes.
        status, text = int(match.group(1)), bytes(self._buffer[: match.start()])
        del self._buffer[: match.end()]
        out_marker, err_marker = f"PQ_OUT_{request_id}".encode(), f"PQ_ERR_{request_id}".encode()
        try:
            out_part = text.split(out_marker, 1)[1].split(err_marker, 1)
            stdout.write(_decode(out_part[0]))
            stderr.write(_decode(out_part[1]))
        except (IndexError, binascii.Error) as error:
            raise RequestRefused(
                f"the console's answer to {request.command!r} was garbled ({error}): "
                f"something else printed on the console while it ran: {text[-300:]!r}"
            ) from None
        result = CommandResult(request.command, status, stdout, stderr, time.monotonic() - started)
        if timed_out(request, status, result.duration):
            raise CommandTimedOut(result)
        return result

    def put(self, source: Path, guest_path: str, mode: int, timeout: float | None) -> None:
        result = self.run(
            CommandRequest(
                f"base64 -d > {shlex.quote(guest_path)} && chmod {mode:o} "
                f"{shlex.quote(guest_path)}",
                stdin=base64.b64encode(source.read_bytes()),
                timeout=timeout,
            )
        )
        if result.returncode != 0:
            raise RequestRefused(f"cannot write {guest_path}: {result.stderr.strip()}")

    def get(self, guest_path: str, destination: Path, timeout: float | None) -> int:
        quoted = shlex.quote(guest_path)
        result = self.run(
            CommandRequest(f"stat -c %a {quoted} >&2 && cat {quoted}", timeout=timeout)
        )
        if result.returncode != 0:
            raise RequestRefused(f"cannot read {guest_path}: {result.stderr.strip()}")
        mode = int(result.stderr.strip().splitlines()[-1], 8)
        destination.write_bytes(result.stdout_bytes)
        destination.chmod(mode)
        return mode

    # -- the console --------------------------------------------------------------------------

    def _exchange(self, command: str, deadline: float) -> None:
        marker = f"PQ_DONE_{secrets.token_hex(4)}"
        self._send(f"{command}; echo {marker[:-1]}''{marker[-1]}\n".encode())
        self._wait_for(re.compile(re.escape(marker.encode())), deadline)
        self._buffer.clear()

    def _send(self, data: bytes) -> None:
        connection = self._connection()
        view = memoryview(data)
        while view:
            try:
                sent = connection.send(view)
            except BlockingIOError:
                select.select([], [connection], [], 1.0)
                continue
            except OSError as error:
                raise ChannelClosed(f"the console connection broke: {error}") from None
            view = view[sent:]

    def _typed_bytes_pending(self) -> bool:
        """Whether QEMU has not yet taken all that was typed: the guest is not reading.

        This is what keeps a booting aarch64 guest's console alive. Until its kernel opens
        the PL011 UART, QEMU holds typed bytes in the UART's 16-byte FIFO and leaves the
        rest in this socket. When the port opens, Linux clears the receive interrupt and
        drains at most 32 bytes, and QEMU refills the FIFO as fast as it is read: with more
        than about 32 bytes waiting, the FIFO is still full when the drain stops, no
        interrupt is ever raised again, and the console takes no more input (measured with
        QEMU 7.2 and Linux 6.1, another VM booting beside it: 32 bytes typed early were
        fine, 45 wedged it, three boots each).
        So at most one probe, shorter than that, is ever waiting, and the next one is
        typed a probe interval after QEMU has taken the last, not during the drain.
        """
        queued = fcntl.ioctl(self._connection().fileno(), termios.TIOCOUTQ, bytes(4))
        return int.from_bytes(queued, sys.byteorder) > 0

    def _wait_for(self, pattern: re.Pattern[bytes], deadline: float) -> re.Match[bytes]:
        while True:
            match = pattern.search(self._buffer)
            if match:
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoReply("no answer on the serial console")
            self._receive(remaining)

    def _receive(self, timeout: float) -> None:
        connection = self._connection()
        readable, _, _ = select.select([connection], [], [], max(0.0, min(timeout, 1.0)))
        if not readable:
            return
        try:
            chunk = connection.recv(65536)
        except BlockingIOError:
            return
        except OSError as error:
            raise ChannelClosed(f"the console connection broke: {error}") from None
        if not chunk:
            raise ChannelClosed("QEMU closed the console connection")
        # Line-editing shells (busybox ash) ask the terminal where the cursor is at each
        # prompt. Left unanswered: an answer that arrives once the shell has moved on is
        # read as a command.
        self._buffer += chunk.replace(_CURSOR_QUERY, b"")
        self._last_output = time.monotonic()

    def _connection(self) -> socket.socket:
        if self._socket is None:
            raise ChannelClosed("not connected to the console")
        return self._socket


def ready_probe(nonce: str, resumed: bool) -> bytes:
    """The line typed to see whether a shell answers: it prints ``PQ<nonce>_<status>_42``.

    The shell works the sum out, while its echo of the line shows the expression, so the
    echo is never taken for the answer. On a *resumed* guest the line first sets the
    clock to the host's and stirs 256 random bits into the kernel's pool (``echo`` is a
    shell builtin: ``date`` is the only process), and *status* is how that went. A
    booting guest's line is under 32 bytes, which a booting aarch64 guest's UART can
    take before its kernel reads it (more wedges its input).
    """
    answer = f"echo PQ{nonce}_$?_$((40+2))\n"
    if not resumed:
        return answer.encode()
    # 256 random bits as 43 characters: a console takes in a line slowly.
    entropy = secrets.token_urlsafe(32)
    return f"{set_clock_line()} && echo {entropy} >/dev/urandom; {answer}".encode()


def command_script(request: CommandRequest, request_id: int) -> str:
    """The lines typed to run *request*: its output goes to files in the guest, then comes
    back base64-encoded between markers, with its exit status.

    As few processes as it can: each costs a restored guest dearly (under TCG its code is
    translated anew in each QEMU), so input is decoded only if there is some, and only
    output there is gets encoded.
    """
    files = f"{_WORK}/{request_id}"
    script = f"[ -d {_WORK} ] || mkdir -p {_WORK}\n"
    source = "/dev/null"
    if request.stdin:
        # A terminal reads at most 4095 characters a line: base64 in short lines.
        stdin = base64.encodebytes(request.stdin).decode().rstrip("\n")
        script += f"base64 -d > {files}.in <<'PQ_INPUT'\n{stdin}\nPQ_INPUT\n"
        source = f"{files}.in"
    return script + (
        f"{shell_runner(request)} < {source} > {files}.out 2> {files}.err; status=$?\n"
        f"echo; echo PQ_OUT_{request_id}; [ -s {files}.out ] && base64 {files}.out; "
        f"echo PQ_ERR_{request_id}; [ -s {files}.err ] && base64 {files}.err; "
        f"echo PQ_STATUS_{request_id}_$status; rm -f {files}.*\n"
    )


def _decode(text: bytes) -> bytes:
    return base64.b64decode(b"".join(text.split()), validate=True)
