"""Commands and files over the QEMU guest agent (``qemu-guest-agent``) an image runs.

QEMU connects the agent's virtio-serial port (``org.qemu.guest_agent.0``) to a
UNIX socket; the host speaks QMP's JSON over it, without QMP's greeting and
capability negotiation: one request per line, each reply matched to its request
by ``id`` (:class:`AgentConnection`, on a private event loop thread). Commands run
with ``guest-exec`` (its output arrives once it exits) and are polled with
``guest-exec-status``; files move with the ``guest-file-*`` commands.

QEMU accepts the socket connection before any agent reads it: what the host
writes then waits, unread, until an agent opens the port. So every request
has a deadline, readiness is a ``guest-sync`` answered, and after a request
went unanswered or an agent died the host first resynchronises (a ``0xFF``
byte resets the agent's JSON parser, then ``guest-sync`` with a random id).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

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
from pytest_qemu.channels.virtio_serial import serial_port_args
from pytest_qemu.sockets import connect_unix

T = TypeVar("T")

#: The virtio-serial port name ``qemu-guest-agent`` opens (its udev rule starts it).
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
_PORT_ID = "pytest-qemu-qga"
_CLIENT_NAME = "pytest-qemu-qga"

#: How much output ``qemu-guest-agent`` keeps per stream of a ``guest-exec``.
AGENT_OUTPUT_CAP = 16 * 1024 * 1024
#: The longest line the host accepts: an exit status carrying both capped streams in base64.
_READ_LIMIT = 64 * 1024 * 1024
#: How long an agent that died may take to come back before a request gives up.
_COME_BACK_TIMEOUT = 10.0
#: While booting, a ``guest-sync`` every this many seconds; replies to any of them count.
_BOOT_SYNC_INTERVAL = 0.5
#: After a restore, a write can be lost while the port's state is reloaded: sync often.
_RESUMED_SYNC_INTERVAL = 0.05
_RESUMED_FAST_SYNCS_FOR = 2.0
#: ``guest-exec-status`` polling: the first poll after this long, backing off to the maximum.
_POLL_FIRST = 0.001
_POLL_MAX = 0.05
#: Bytes per ``guest-file-read``/``guest-file-write``: under TCG 256 KiB moved files about
#: 25 % faster than 48 KiB, and 1 MiB no faster.
FILE_CHUNK = 256 * 1024

_SETSID = "/usr/bin/setsid"
_CHROOT = "/usr/sbin/chroot"
#: ``guest-exec`` replaces the agent's environment with the one given: these come first.
DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
}

_loop_thread = loop_thread


class AgentRefused(Exception):
    """The guest agent answered a request with an error (its description is the message)."""


class AgentConnection:
    """Requests to the guest agent and its replies over the connected socket: a request
    is a line of JSON with an ``id``, which the agent puts in its reply.

    A reply nobody waits for (to a request given up on), an event, and the agent's
    complaint about the ``0xFF`` that resets its parser (an error without an ``id``)
    are dropped. When the connection ends, every request waiting fails with
    :class:`ConnectionError`. Used on the event loop's thread only.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._closed: str | None = None
        self._receiving = asyncio.ensure_future(self._receive())

    @classmethod
    async def open(cls, connection: socket.socket) -> AgentConnection:
        """Speak to the agent over *connection*, a connected UNIX socket."""
        reader, writer = await asyncio.open_unix_connection(sock=connection, limit=_READ_LIMIT)
        return cls(reader, writer)

    async def execute(self, command: str, arguments: Mapping[str, object]) -> Any:
        """Send *command* and return its reply's ``return``; :class:`AgentRefused` if the
        agent refuses it, :class:`ConnectionError` if the connection ends first."""
        if self._closed is not None:
            raise ConnectionError(self._closed)
        request_id = f"{_CLIENT_NAME}-{next(self._ids)}"
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        request = {"execute": command, "arguments": dict(arguments), "id": request_id}
        try:
            self._writer.write(json.dumps(request).encode() + b"\n")
            return await reply
        finally:
            self._pending.pop(request_id, None)

    def write_raw(self, data: bytes) -> None:
        """Write *data* outside any request (the parser-reset byte)."""
        if self._closed is not None or self._writer.is_closing():
            raise ChannelClosed("not connected to the guest agent")
        self._writer.write(data)

    async def _receive(self) -> None:
        reason = "the guest agent's connection closed"
        try:
            while line := await self._reader.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                reply = self._pending.get(str(message.get("id")))
                if reply is None or reply.done():
                    continue
                if "error" in message:
                    error = message["error"]
                    description = error.get("desc") if isinstance(error, dict) else error
                    reply.set_exception(AgentRefused(str(description)))
                else:
                    reply.set_result(message.get("return"))
        except (OSError, ValueError) as error:  # ValueError: a line over the read limit
            reason = f"{reason}: {error}"
        finally:
            self._closed = reason
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(ConnectionError(reason))

    async def close(self) -> None:
        """End the connection. Idempotent."""
        self._closed = self._closed or "closed"
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        self._receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._receiving


class GuestAgentChannel(CommandChannel):
    """Commands and files over ``qemu-guest-agent``, for images that run it.

    *socket_dir* holds the socket QEMU listens on (``qga.sock``). A command
    runs as ``setsid -w /bin/sh -c COMMAND`` (``util-linux``'s ``setsid``),
    so that a timeout can kill its whole process group. Unlike the default
    guest's agent, a command's output arrives only once it exits and everything
    it started has closed its stdout and stderr, and each stream is capped at
    16 MiB by the agent (more raises :class:`RequestRefused`: redirect to a
    file and fetch it with ``get``).
    """

    serial_port_id = _PORT_ID
    personalises_on_resume = True

    def __init__(self, socket_dir: Path, serial_bus_device: str = "virtio-serial-pci") -> None:
        self.socket_path = socket_dir / "qga.sock"
        self._serial_bus_device = serial_bus_device
        self._client: AgentConnection | None = None
        # Set, on the loop's thread, when QEMU reports the guest closing the agent's port.
        self._lost: asyncio.Event | None = None
        self._events_lock = threading.Lock()
        self._closes = 0
        self._closes_accounted = 0
        self._port_events_seen = False
        self._needs_sync = True
        # The agent was found dead by its own answers, before QEMU's event said so.
        self._death_unreported = False

    # -- the transport ------------------------------------------------------------------------

    def qemu_args(self) -> list[str]:
        return serial_port_args(
            self._serial_bus_device, _PORT_ID, AGENT_PORT_NAME, self.socket_path
        )

    def connect(self, deadline: float, qemu_running: Callable[[], bool]) -> None:
        connection = connect_unix(self.socket_path, deadline, qemu_running)

        async def start() -> AgentConnection:
            self._lost = asyncio.Event()
            try:
                return await asyncio.wait_for(
                    AgentConnection.open(connection), max(0.1, deadline - time.monotonic())
                )
            except (OSError, asyncio.TimeoutError) as error:
                connection.close()
                raise ChannelClosed(f"cannot start talking to the guest agent: {error}") from None

        self._client = _loop_thread.run(start())
        self._needs_sync = True

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            _loop_thread.run(asyncio.wait_for(client.close(), 5))
        except Exception:
            pass

    def guest_port_changed(self, is_open: bool) -> None:
        with self._events_lock:
            self._port_events_seen = True
            if is_open:
                return
            self._closes += 1
        lost = self._lost
        if lost is not None:
            try:
                _loop_thread.loop.call_soon_threadsafe(lost.set)
            except RuntimeError:
                pass

    # -- readiness ----------------------------------------------------------------------------

    def wait_ready(self, deadline: float, resumed: bool = False) -> str:
        started = time.monotonic()

        def interval() -> float:
            if resumed and time.monotonic() - started < _RESUMED_FAST_SYNCS_FOR:
                return _RESUMED_SYNC_INTERVAL
            return _BOOT_SYNC_INTERVAL

        async def wait() -> None:
            await self._sync(deadline, interval)
            # Port closes while the guest booted are no agent dying under a request.
            self._account_losses()
            if resumed:
                await self._personalise()

        _loop_thread.run(wait())
        return "-"

    async def _personalise(self) -> None:
        """Give a restored guest the host's clock and fresh entropy, in as few new
        processes as the agent allows: a clone's first process costs most of its start
        (under TCG its code is translated anew in each QEMU), so the entropy goes in
        with the agent's own file commands, while ``date`` runs."""
        pid = await self._start(
            {
                "path": "date",
                "arg": ["-u", "-s", f"@{int(time.time())}"],
                "env": _environment({}),
                "capture-output": True,
            }
        )
        handle = await self._call("guest-file-open", {"path": "/dev/urandom", "mode": "w"})
        try:
            await self._call(
                "guest-file-write",
                {"handle": handle, "buf-b64": base64.b64encode(os.urandom(64)).decode()},
            )
        finally:
            await self._call("guest-file-close", {"handle": handle})
        status = await self._wait_exited(pid)
        if _returncode(status) != 0:
            error = base64.b64decode(status.get("err-data", "")).decode("utf-8", "replace")
            raise RequestRefused(f"setting the restored guest's clock failed: {error.strip()}")

    async def _sync(
        self, deadline: float, interval: Callable[[], float], flush: bool = False
    ) -> None:
        """Send ``guest-sync`` every *interval()* seconds until one is answered, or
        raise :class:`NoReply` at *deadline*. Every ping stays pending, so the
        agent answering any of them ends the wait."""
        client = self._require_client()
        if flush:
            # 0xFF is never valid JSON: the agent drops what it had half-read.
            client.write_raw(b"\xff")
        pings: dict[asyncio.Future[object], int] = {}
        try:
            while True:
                wait = min(interval(), deadline - time.monotonic())
                if wait <= 0:
                    raise NoReply("no answer from the guest agent (guest-sync)")
                token = random.randrange(1, 1 << 31)
                pings[asyncio.ensure_future(client.execute("guest-sync", {"id": token}))] = token
                done, _ = await asyncio.wait(
                    pings, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for ping in done:
                    expected = pings.pop(ping)
                    error = ping.exception()
                    if error is None and ping.result() == expected:
                        self._needs_sync = False
                        return
                    if error is not None and not isinstance(error, AgentRefused):
                        raise ChannelClosed(f"the guest agent's connection closed: {error}")
        finally:
            await _cancel(pings)

    def _account_losses(self) -> None:
        with self._events_lock:
            self._closes_accounted = self._closes
        if self._lost is not None:
            self._lost.clear()

    async def _ensure_ready(self) -> None:
        """Before a request: resynchronise, and wait for an agent that died to be back."""
        lost = self._lost is not None and self._lost.is_set()
        if not self._needs_sync and not lost:
            return
        with self._events_lock:
            # The agent's death was noticed before QEMU's event: wait a moment for the
            # event, so that it does not fail the next request instead.
            expect_close = (
                self._death_unreported
                and self._port_events_seen
                and self._closes == self._closes_accounted
            )
            closes_before = self._closes_accounted
        self._death_unreported = False
        try:
            await self._sync(
                time.monotonic() + _COME_BACK_TIMEOUT, lambda: _BOOT_SYNC_INTERVAL, flush=True
            )
        except NoReply:
            raise AgentGone(
                f"the guest agent did not come back within {_COME_BACK_TIMEOUT:g} s"
            ) from None
        if expect_close:
            give_up = time.monotonic() + 1.0
            while self._closes == closes_before and time.monotonic() < give_up:
                await asyncio.sleep(0.01)
        self._account_losses()

    # -- requests -----------------------------------------------------------------------------

    def run(self, request: CommandRequest) -> CommandResult:
        return _loop_thread.run(self._run(request))

    async def _run(self, request: CommandRequest) -> CommandResult:
        await self._ensure_ready()
        arguments = exec_arguments(request)
        started = time.monotonic()
        pid = await self._start(arguments)
        kill_at = None if request.timeout is None else started + request.timeout
        give_up_at: float | None = None
        interval = _POLL_FIRST
        while True:
            now = time.monotonic()
            if kill_at is not None and give_up_at is None and now >= kill_at:
                await self._kill_process_group(pid)
                give_up_at = time.monotonic() + REPLY_GRACE
            status = await self._status(pid)
            if status.get("exited"):
                break
            now = time.monotonic()
            if give_up_at is not None and now >= give_up_at:
                raise NoReply(
                    f"{request.command!r} was killed at its timeout but had not ended "
                    f"{REPLY_GRACE:g} s later"
                )
            pause = interval
            if kill_at is not None and give_up_at is None:
                pause = min(pause, max(0.0, kill_at - now))
            await self._pause(pause)
            interval = min(interval * 2, _POLL_MAX)
        limit = request.memory_limit or DEFAULT_MEMORY_LIMIT
        result = command_result(
            request.command,
            status,
            time.monotonic() - started,
            lambda: CommandOutput(limit, request.spill_dir),
            check_truncation=give_up_at is None,
        )
        if give_up_at is not None:
            raise CommandTimedOut(result)
        return result

    async def _start(self, arguments: dict[str, object]) -> int:
        try:
            reply = await self._call("guest-exec", arguments)
        except RequestRefused as refused:
            raise RequestRefused(f"the guest agent cannot start the command: {refused}") from None
        return int(reply["pid"])

    async def _status(self, pid: int) -> dict[str, Any]:
        try:
            status: dict[str, Any] = await self._call("guest-exec-status", {"pid": pid})
        except RequestRefused:
            # A restarted agent knows nothing of the commands its predecessor started.
            self._needs_sync = self._death_unreported = True
            raise AgentGone("the guest agent restarted: the one running the command died") from None
        return status

    async def _kill_process_group(self, pid: int) -> None:
        # setsid made the command its own process group leader: its pid is the group's id.
        # (dash's kill takes no "--": a negative pid must follow the signal directly.)
        await self._exec(["/bin/sh", "-c", f"kill -9 -{pid}"])

    async def _exec(self, argv: list[str]) -> tuple[int, str, str]:
        """Run *argv* in the guest (a helper command); return its status, stdout and stderr."""
        pid = await self._start(
            {"path": argv[0], "arg": argv[1:], "env": _environment({}), "capture-output": True}
        )
        status = await self._wait_exited(pid)
        out, err = (
            base64.b64decode(status.get(key, "")).decode("utf-8", "replace").strip()
            for key in ("out-data", "err-data")
        )
        return _returncode(status), out, err

    async def _wait_exited(self, pid: int) -> dict[str, Any]:
        """Poll a helper process started with ``guest-exec`` until it exits; its status."""
        interval = _POLL_FIRST
        while True:
            status = await self._status(pid)
            if status.get("exited"):
                return status
            await self._pause(interval)
            interval = min(interval * 2, _POLL_MAX)

    def put(self, source: Path, guest_path: str, mode: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        _loop_thread.run(self._put(source, guest_path, mode, deadline))

    async def _put(self, source: Path, guest_path: str, mode: int, deadline: float | None) -> None:
        await self._ensure_ready()
        # Written beside the target and renamed, so nobody sees half a file.
        partial = f"{guest_path}.pytest-qemu-{secrets.token_hex(4)}"
        try:
            handle = await self._call("guest-file-open", {"path": partial, "mode": "wb"}, deadline)
        except RequestRefused as refused:
            raise RequestRefused(f"cannot write {guest_path}: {refused}") from None
        try:
            try:
                with source.open("rb") as file:
                    while chunk := file.read(FILE_CHUNK):
                        await self._call(
                            "guest-file-write",
                            {"handle": handle, "buf-b64": base64.b64encode(chunk).decode()},
                            deadline,
                        )
            finally:
                await self._call("guest-file-close", {"handle": handle}, deadline)
            status, _, error = await self._exec(
                ["/bin/sh", "-c", 'chmod "$0" "$1" && mv -f -- "$1" "$2"',
                 f"{mode & 0o7777:o}", partial, guest_path]
            )  # fmt: skip
            if status != 0:
                raise RequestRefused(error)
        except RequestRefused as refused:
            # The agent still answers (a full disk, a bad mode): leave no partial file behind.
            await self._exec(["/bin/rm", "-f", "--", partial])
            raise RequestRefused(f"cannot write {guest_path}: {refused}") from None

    def get(self, guest_path: str, destination: Path, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        partial = destination.with_name(f".{destination.name}.partial")
        try:
            mode = _loop_thread.run(self._get(guest_path, partial, deadline))
            partial.chmod(mode)
            os.replace(partial, destination)
        finally:
            partial.unlink(missing_ok=True)
        return mode

    async def _get(self, guest_path: str, partial: Path, deadline: float | None) -> int:
        await self._ensure_ready()
        try:
            handle = await self._call(
                "guest-file-open", {"path": guest_path, "mode": "rb"}, deadline
            )
        except RequestRefused as refused:
            raise RequestRefused(f"cannot read {guest_path}: {refused}") from None
        try:
            with partial.open("wb") as file:
                while True:
                    reply = await self._call(
                        "guest-file-read", {"handle": handle, "count": FILE_CHUNK}, deadline
                    )
                    file.write(base64.b64decode(reply.get("buf-b64", "")))
                    if reply.get("eof") or not reply.get("count"):
                        break
        except RequestRefused as refused:
            raise RequestRefused(f"cannot read {guest_path}: {refused}") from None
        finally:
            await self._call("guest-file-close", {"handle": handle}, deadline)
        # qemu-guest-agent 7.2 has no command that reports a file's mode.
        status, mode, error = await self._exec(
            ["/usr/bin/stat", "-L", "-c", "%a", "--", guest_path]
        )
        try:
            if status == 0:
                return int(mode, 8)
        except ValueError:
            error = f"stat printed {mode!r}"
        raise RequestRefused(f"cannot read the mode of {guest_path}: {error}")

    # -- the exchange -------------------------------------------------------------------------

    def _require_client(self) -> AgentConnection:
        if self._client is None:
            raise ChannelClosed("not connected to the guest agent")
        return self._client

    async def _call(
        self, command: str, arguments: Mapping[str, object], deadline: float | None = None
    ) -> Any:
        """One request: its reply's ``return``, or a :class:`ChannelError`.

        It fails with :class:`NoReply` after :data:`REPLY_GRACE` seconds (or at
        *deadline*), with :class:`AgentGone` as soon as QEMU reports the agent's
        port closed, and with :class:`RequestRefused` if the agent refuses it.
        """
        client = self._require_client()
        lost = self._lost
        assert lost is not None
        timeout = REPLY_GRACE
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        call = asyncio.ensure_future(client.execute(command, arguments))
        watch = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait(
                {call, watch}, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            await _cancel([call, watch])
        if call in done and not call.cancelled():
            error = call.exception()
            if error is None:
                return call.result()
            if isinstance(error, AgentRefused):
                raise RequestRefused(str(error))
            raise ChannelClosed(f"the guest agent's connection closed: {error}")
        if watch in done:
            self._needs_sync = True
            raise AgentGone("the guest closed the agent's port: the agent died")
        self._needs_sync = True
        raise NoReply(f"no answer from the guest agent to {command} within {timeout:.3g} s")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but raise :class:`AgentGone` at once if the agent's port closes."""
        lost = self._lost
        assert lost is not None
        try:
            await asyncio.wait_for(lost.wait(), seconds)
        except asyncio.TimeoutError:
            return
        self._needs_sync = True
        raise AgentGone("the guest closed the agent's port: the agent died")


async def _cancel(tasks: Mapping[asyncio.Future[Any], Any] | list[asyncio.Future[Any]]) -> None:
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _environment(env: Mapping[str, str]) -> list[str]:
    merged = {**DEFAULT_ENV, **env}
    for name in merged:
        if not name or "=" in name:
            raise RequestRefused(f"environment variable name {name!r} is not valid")
    return [f"{name}={value}" for name, value in merged.items()]


def command_script(request: CommandRequest) -> str:
    """The shell script that runs *request*'s command in its working directory."""
    if not request.cwd:
        return request.command
    # On a line of its own: the user's command is parsed after the cd has run.
    return f"cd -- {shlex.quote(request.cwd)} || exit 126\n{request.command}"


def exec_arguments(request: CommandRequest) -> dict[str, object]:
    """The ``guest-exec`` arguments for *request*.

    ``setsid`` makes the shell the leader of a new process group (the agent
    starts it as a plain child, so ``setsid`` need not fork), which a timeout
    kills with everything in it. ``guest-exec`` has no working directory
    argument in QEMU 7.2, so the script changes directory itself.
    """
    argv = ["-w"]
    if request.root not in ("", "/"):
        argv += [_CHROOT, request.root]
    argv += ["/bin/sh", "-c", command_script(request)]
    return {
        "path": _SETSID,
        "arg": argv,
        "env": _environment(request.env),
        "input-data": base64.b64encode(request.stdin).decode("ascii"),
        "capture-output": True,
    }


def _returncode(status: Mapping[str, Any]) -> int:
    if "exitcode" in status:
        return int(status["exitcode"])
    if "signal" in status:
        return -int(status["signal"])
    return -1


def command_result(
    command: str,
    status: Mapping[str, Any],
    duration: float,
    new_output: Callable[[], CommandOutput],
    check_truncation: bool = True,
) -> CommandResult:
    """Turn an exited ``guest-exec-status`` reply into a :class:`CommandResult`.

    Raises :class:`RequestRefused` (with *check_truncation*) if the agent cut a
    stream at its 16 MiB cap: silently short output would be worse.
    """
    if check_truncation:
        cut = [name for name in ("out", "err") if status.get(f"{name}-truncated")]
        if cut:
            streams = " and ".join({"out": "stdout", "err": "stderr"}[name] for name in cut)
            raise RequestRefused(
                f"the {streams} of {command!r} hit the guest agent's cap of "
                f"{AGENT_OUTPUT_CAP // (1024 * 1024)} MiB per stream (qemu-guest-agent keeps no "
                "more): redirect the output to a file in the guest (`... > /tmp/out`) and copy "
                "it to the host with vm.get()"
            )
    stdout, stderr = new_output(), new_output()
    stdout.write(base64.b64decode(status.get("out-data", "")))
    stderr.write(base64.b64decode(status.get("err-data", "")))
    return CommandResult(command, _returncode(status), stdout, stderr, duration)
