"""The default guest's command agent, reached over a virtio-serial port.

QEMU connects the port to a UNIX socket; the host speaks the frames of
:mod:`pytest_qemu.channels.framing` over it to ``guests/files/agent.c``. The
host never blocks on a write (a guest that has not opened its port is not
read by QEMU), reads whatever arrives while it waits, and learns that the
agent died from QEMU's ``VSERPORT_CHANGE`` event or from a restarted agent's
announcement, whichever comes first.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import math
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
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
from pytest_qemu.channels.framing import (
    CHUNK_SIZE,
    Frame,
    FrameReader,
    FrameType,
    decode_exit,
    decode_hello,
    decode_mode,
    encode,
    encode_get,
    encode_kernel_log,
    encode_put,
    encode_run,
    encode_stream,
)
from pytest_qemu.channels.output import DEFAULT_MEMORY_LIMIT, CommandOutput
from pytest_qemu.channels.virtio_serial import serial_port_args
from pytest_qemu.sockets import connect_unix

#: The virtio-serial port name the guest agent looks for.
AGENT_PORT_NAME = "org.pytest-qemu.agent"
_PORT_ID = "pytest-qemu-agent"
_PRIORITY = re.compile(r"^<\d+>", re.M)

#: After a restore, a ping can be lost while the guest's port state is reloaded:
#: ping often, so a lost one costs this long.
_RESUMED_PING_INTERVAL = 0.01
_RESUMED_FAST_PINGS_FOR = 2.0
#: After the last answer before a save: time for the guest to take the interrupts it caused.
_SETTLE_QUIET = 0.05
#: While booting, the agent announces itself; pings only cover a missed announcement.
_BOOT_PING_INTERVAL = 1.0
#: How long a restarted agent may take to come back before a request gives up.
_COME_BACK_TIMEOUT = 10.0


class _Request:
    """What one in-flight request collects from the frames addressed to it."""

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.done = False
        #: The first host-side write that failed (a full disk): the request is still
        #: followed to its end, so the guest is free for the next one.
        self.host_error: OSError | None = None

    def keep(self, write: Callable[[bytes], object], data: bytes) -> None:
        """Write *data* on the host with *write*, unless an earlier write failed."""
        if self.host_error is None:
            try:
                write(data)
            except OSError as error:
                self.host_error = error

    def on_frame(self, frame: Frame) -> None:
        if frame.type == FrameType.ERROR:
            raise RequestRefused(frame.payload.decode("utf-8", errors="replace"))


class _PingRequest(_Request):
    """One ping, done when the agent answers that very ping (not an earlier one)."""

    def on_frame(self, frame: Frame) -> None:
        if frame.type == FrameType.PONG:
            self.done = True
        else:
            super().on_frame(frame)


class _RunRequest(_Request):
    def __init__(self, request_id: int, stdout: CommandOutput, stderr: CommandOutput) -> None:
        super().__init__(request_id)
        self.stdout = stdout
        self.stderr = stderr
        self.status = 0
        self.timed_out = False

    def on_frame(self, frame: Frame) -> None:
        if frame.type == FrameType.STDOUT:
            self.keep(self.stdout.write, frame.payload)
        elif frame.type == FrameType.STDERR:
            self.keep(self.stderr.write, frame.payload)
        elif frame.type == FrameType.EXIT:
            self.status, self.timed_out = decode_exit(frame.payload)
            self.done = True
        else:
            super().on_frame(frame)


class _PutRequest(_Request):
    def on_frame(self, frame: Frame) -> None:
        if frame.type == FrameType.DONE:
            self.done = True
        else:
            super().on_frame(frame)


class _GetRequest(_Request):
    def __init__(self, request_id: int, destination: IO[bytes]) -> None:
        super().__init__(request_id)
        self.destination = destination
        self.mode = 0o644

    def on_frame(self, frame: Frame) -> None:
        if frame.type == FrameType.FILE:
            self.mode = decode_mode(frame.payload)
        elif frame.type == FrameType.DATA:
            if frame.payload:
                self.keep(self.destination.write, frame.payload)
            else:
                self.done = True
        else:
            super().on_frame(frame)


class AgentChannel(CommandChannel):
    """Commands and files over the default guest's agent (``org.pytest-qemu.agent``)."""

    serial_port_id = _PORT_ID
    personalises_on_resume = True

    def __init__(
        self,
        socket_dir: Path,
        serial_bus_device: str = "virtio-serial-pci",
        command_root: str = "",
    ) -> None:
        self.socket_path = socket_dir / "agent.sock"
        #: Commands run chrooted into this guest directory ("": the guest's own root).
        self.command_root = command_root
        self._serial_bus_device = serial_bus_device
        self._socket: socket.socket | None = None
        self._reader = FrameReader()
        self._receive_buffer = bytearray(1 << 20)
        self._outgoing: Iterator[bytes] = iter(())
        self._sending = memoryview(b"")
        self._ids = itertools.count(1)
        self._request: _Request | None = None
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Pairs QEMU's port-closed events with restarted agents' announcements, which
        # reach us on different sockets in either order (see guest_port_changed).
        self._events_lock = threading.Lock()
        self._unmatched_closes = 0
        self._unmatched_restarts = 0
        self._seen_agent = False
        self._ready = False
        self.setup_status = "-"
        self._features: frozenset[str] = frozenset()

    # -- the transport ------------------------------------------------------------------------

    def qemu_args(self) -> list[str]:
        return serial_port_args(
            self._serial_bus_device, _PORT_ID, AGENT_PORT_NAME, self.socket_path
        )

    def connect(self, deadline: float, qemu_running: Callable[[], bool]) -> None:
        connection = connect_unix(self.socket_path, deadline, qemu_running)
        connection.setblocking(False)
        self._socket = connection

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        for descriptor in (self._wake_read, self._wake_write):
            try:
                os.close(descriptor)
            except OSError:
                pass
        self._wake_read = self._wake_write = -1

    def guest_port_changed(self, is_open: bool) -> None:
        if is_open:
            return
        with self._events_lock:
            if self._unmatched_restarts:
                # A restarted agent announced itself before this close reached us.
                self._unmatched_restarts -= 1
            else:
                self._unmatched_closes += 1
        if self._wake_write >= 0:
            try:
                os.write(self._wake_write, b"x")
            except OSError:
                pass

    def _agent_lost(self) -> bool:
        with self._events_lock:
            return self._unmatched_closes > 0

    # -- readiness ----------------------------------------------------------------------------

    def wait_ready(self, deadline: float, resumed: bool = False) -> str:
        started = time.monotonic()

        def ping_interval() -> float:
            if resumed and time.monotonic() - started < _RESUMED_FAST_PINGS_FOR:
                return _RESUMED_PING_INTERVAL
            return _BOOT_PING_INTERVAL

        self._ready = False
        self._exchange(None, deadline, ping_interval=ping_interval, personalise=resumed)
        return self.setup_status

    def settle(self, deadline: float) -> None:
        # The agent starts its spare shell after READY and answers pings once it waits.
        self._ready = False
        self._exchange(None, deadline, ping_interval=lambda: _RESUMED_PING_INTERVAL)
        # The fast pings above may still be on their way to the guest. One last ping,
        # answered, means none is: no data (and no interrupt for it) is in flight when
        # the VM is saved. Some machines (s390x's TCG interrupt controller in QEMU 7.2)
        # drop a pending interrupt from the saved state, and the clones go deaf.
        last = _PingRequest(next(self._ids))
        self._send(encode(FrameType.PING, last.request_id), iter(()))
        self._exchange(last, deadline)
        # The answer's own completion is signalled to the guest as the host reads it:
        # give the guest's CPU a moment to take that interrupt before the save stops it.
        time.sleep(_SETTLE_QUIET)

    def _ensure_ready(self) -> None:
        """Before a request: wait for an agent that died to be back."""
        if self._ready and not self._agent_lost():
            return
        self._ready = False
        try:
            self._exchange(
                None,
                time.monotonic() + _COME_BACK_TIMEOUT,
                ping_interval=lambda: 0.25,
                fail_on_loss=False,
            )
        except NoReply:
            raise AgentGone(
                f"the guest agent did not come back within {_COME_BACK_TIMEOUT:g} s"
            ) from None

    # -- requests -----------------------------------------------------------------------------

    def run(self, request: CommandRequest) -> CommandResult:
        self._ensure_ready()
        limit = request.memory_limit or DEFAULT_MEMORY_LIMIT
        stdout = CommandOutput(limit, request.spill_dir)
        stderr = CommandOutput(limit, request.spill_dir)
        pending = _RunRequest(next(self._ids), stdout, stderr)
        timeout_ms = 0 if request.timeout is None else max(1, math.ceil(request.timeout * 1000))
        first = encode_run(
            pending.request_id,
            request.command,
            timeout_ms,
            request.cwd,
            dict(request.env),
            request.root or self.command_root,
        )
        started = time.monotonic()
        deadline = None if request.timeout is None else started + request.timeout + REPLY_GRACE
        self._send(first, encode_stream(FrameType.STDIN, pending.request_id, request.stdin))
        self._exchange(pending, deadline)
        if pending.host_error is not None:
            raise RequestRefused(
                f"the command ran (exit status {pending.status}), but its output could not "
                f"be kept: {_host_write_failure(request.spill_dir, pending.host_error)}"
            )
        result = CommandResult(
            request.command, pending.status, stdout, stderr, time.monotonic() - started
        )
        if pending.timed_out:
            raise CommandTimedOut(result)
        return result

    def put(self, source: Path, guest_path: str, mode: int, timeout: float | None) -> None:
        self._ensure_ready()
        pending = _PutRequest(next(self._ids))
        with source.open("rb") as file:
            self._send(
                encode_put(pending.request_id, guest_path, mode),
                _file_frames(file, pending.request_id),
            )
            self._exchange(pending, None if timeout is None else time.monotonic() + timeout)

    def get(self, guest_path: str, destination: Path, timeout: float | None) -> int:
        self._ensure_ready()
        partial = destination.with_name(f".{destination.name}.partial")
        try:
            try:
                file = partial.open("wb")
            except OSError as error:
                raise RequestRefused(_host_write_failure(partial, error)) from None
            with file:
                pending = _GetRequest(next(self._ids), file)
                self._send(encode_get(pending.request_id, guest_path), iter(()))
                self._exchange(pending, None if timeout is None else time.monotonic() + timeout)
                pending.keep(lambda _: file.flush(), b"")
            if pending.host_error is not None:
                raise RequestRefused(_host_write_failure(destination, pending.host_error))
            try:
                partial.chmod(pending.mode)
                os.replace(partial, destination)
            except OSError as error:
                raise RequestRefused(_host_write_failure(destination, error)) from None
        finally:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        return pending.mode

    def kernel_log(self, timeout: float | None) -> str | None:
        self._ensure_ready()
        if "klog" not in self._features:
            return None
        log = io.BytesIO()
        pending = _GetRequest(next(self._ids), log)
        self._send(encode_kernel_log(pending.request_id), iter(()))
        self._exchange(pending, None if timeout is None else time.monotonic() + timeout)
        # syslog(2) starts each line with its priority, "<4>": dmesg leaves it out.
        return _PRIORITY.sub("", log.getvalue().decode(errors="replace"))

    # -- the exchange -------------------------------------------------------------------------

    def _send(self, first: bytes, rest: Iterator[bytes]) -> None:
        """Queue *first*, then the frames of *rest* as the socket takes them."""
        self._sending = memoryview(first)
        self._outgoing = rest

    def _exchange(
        self,
        request: _Request | None,
        deadline: float | None,
        ping_interval: Callable[[], float] | None = None,
        fail_on_loss: bool = True,
        personalise: bool = False,
    ) -> None:
        """Send what is queued and dispatch what arrives until *request* is done.

        With ``request=None``, until the agent is ready, pinging it every
        *ping_interval()* seconds; with *personalise*, each ping carries the host's
        clock and fresh entropy for the guest. Never blocks on a write.
        """
        connection = self._socket
        if connection is None:
            raise ChannelClosed("not connected to the guest agent")
        self._request = request
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        next_ping = time.monotonic()
        try:
            while not (request.done if request is not None else self._ready):
                now = time.monotonic()
                if fail_on_loss and request is not None and self._agent_lost():
                    raise AgentGone("the guest closed the agent's port: the agent died")
                if deadline is not None and now >= deadline:
                    raise NoReply("no answer from the guest agent")
                if ping_interval is not None and now >= next_ping:
                    if not self._sending:
                        payload = (
                            struct.pack("<Q", time.time_ns()) + os.urandom(64)
                            if personalise
                            else b""
                        )
                        self._sending = memoryview(encode(FrameType.PING, next(self._ids), payload))
                    next_ping = now + ping_interval()
                self._flush(connection)
                events = select.POLLIN | (select.POLLOUT if self._sending else 0)
                poller.register(connection, events)
                wait = math.inf if deadline is None else deadline - now
                if ping_interval is not None:
                    wait = min(wait, next_ping - now)
                timeout_ms = None if wait == math.inf else max(0, math.ceil(wait * 1000))
                for descriptor, _ in poller.poll(timeout_ms):
                    if descriptor == self._wake_read:
                        try:
                            os.read(self._wake_read, 64)
                        except BlockingIOError:
                            pass
                self._receive(connection)
        finally:
            self._request = None
            if request is not None and not request.done:
                # Whatever we did not send belongs to a request that is over.
                self._sending = memoryview(b"")
                self._outgoing = iter(())

    def _flush(self, connection: socket.socket) -> None:
        while True:
            if not self._sending:
                chunk = next(self._outgoing, None)
                if chunk is None:
                    return
                self._sending = memoryview(chunk)
            try:
                sent = connection.send(self._sending)
            except BlockingIOError:
                return
            except OSError as error:
                raise ChannelClosed(f"cannot write to the guest agent's socket: {error}") from None
            self._sending = self._sending[sent:]

    def _receive(self, connection: socket.socket) -> None:
        while True:
            try:
                count = connection.recv_into(self._receive_buffer)
            except BlockingIOError:
                return
            except OSError as error:
                raise ChannelClosed(f"the agent connection broke: {error}") from None
            if count == 0:
                raise ChannelClosed("QEMU closed the agent connection")
            for frame in self._reader.feed(memoryview(self._receive_buffer)[:count]):
                self._dispatch(frame)
            if count < len(self._receive_buffer):
                return

    def _dispatch(self, frame: Frame) -> None:
        if frame.type in (FrameType.READY, FrameType.PONG):
            restarted = frame.type == FrameType.READY and self._seen_agent
            if restarted:
                with self._events_lock:
                    if self._unmatched_closes:
                        self._unmatched_closes -= 1
                    else:
                        self._unmatched_restarts += 1
            self._seen_agent = True
            self._ready = True
            self.setup_status, self._features = decode_hello(frame.payload)
            if restarted and self._request is not None:
                raise AgentGone("the guest agent restarted: the one running the request died")
            if self._request is not None and frame.request_id == self._request.request_id:
                self._request.on_frame(frame)
            return
        request = self._request
        if request is not None and frame.request_id == request.request_id:
            request.on_frame(frame)
        # Anything else answers a request that is over (a timed-out one): drop it.


def _host_write_failure(path: Path | None, error: OSError) -> str:
    """A failed host-side write in words, naming the path and what to do."""
    where = path if path is not None else "a temporary file"
    advice = (
        ": its file system is full; free space there (pytest's tmp_path, --basetemp)"
        if error.errno in (errno.ENOSPC, errno.EDQUOT)
        else ""
    )
    return f"writing {where} on the host failed ({error.strerror}){advice}"


def _file_frames(file: IO[bytes], request_id: int) -> Iterator[bytes]:
    while chunk := file.read(CHUNK_SIZE):
        yield encode(FrameType.DATA, request_id, chunk)
    yield encode(FrameType.DATA, request_id)
