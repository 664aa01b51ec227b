"""The guest agent channel without QEMU: argument building, results, and a fake agent."""

from __future__ import annotations

import base64
import json
import os
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_qemu.channels.base import (
    AgentGone,
    ChannelClosed,
    CommandRequest,
    CommandTimedOut,
    NoReply,
    RequestRefused,
)
from pytest_qemu.channels.output import CommandOutput
from pytest_qemu.channels.qga import (
    AGENT_PORT_NAME,
    DEFAULT_ENV,
    FILE_CHUNK,
    GuestAgentChannel,
    command_result,
    command_script,
    exec_arguments,
)

# -- arguments ----------------------------------------------------------------------------------


def test_qemu_args_put_the_agent_port_on_its_own_bus_and_escape_the_socket_path(
    tmp_path: Path,
) -> None:
    channel = GuestAgentChannel(tmp_path / "a,b")
    args = channel.qemu_args()
    assert args == [
        "-device", "virtio-serial-pci,id=pytest-qemu-qga-bus",
        "-chardev", f"socket,id=pytest-qemu-qga,path={tmp_path}/a,,b/qga.sock,server=on,wait=off",
        "-device", "virtserialport,bus=pytest-qemu-qga-bus.0,chardev=pytest-qemu-qga,"
        f"name={AGENT_PORT_NAME},id=pytest-qemu-qga",
    ]  # fmt: skip
    assert channel.serial_port_id == "pytest-qemu-qga"


def test_a_command_runs_in_a_new_session_with_a_full_environment() -> None:
    arguments = exec_arguments(
        CommandRequest("echo hi", stdin=b"\x00in", env={"GREETING": "a=b", "HOME": "/tmp"})
    )
    assert arguments["path"] == "/usr/bin/setsid"
    assert arguments["arg"] == ["-w", "/bin/sh", "-c", "echo hi"]
    # guest-exec replaces the environment: PATH comes along unless overridden.
    assert arguments["env"] == [f"PATH={DEFAULT_ENV['PATH']}", "HOME=/tmp", "GREETING=a=b"]
    assert base64.b64decode(str(arguments["input-data"])) == b"\x00in"
    assert arguments["capture-output"] is True


def test_a_root_other_than_slash_chroots_first() -> None:
    assert exec_arguments(CommandRequest("true", root="/"))["arg"] == [
        "-w",
        "/bin/sh",
        "-c",
        "true",
    ]
    assert exec_arguments(CommandRequest("true", root="/host"))["arg"] == [
        "-w", "/usr/sbin/chroot", "/host", "/bin/sh", "-c", "true",
    ]  # fmt: skip


def test_an_invalid_environment_name_is_refused() -> None:
    with pytest.raises(RequestRefused, match="not valid"):
        exec_arguments(CommandRequest("true", env={"A=B": "c"}))


@pytest.mark.parametrize("name", ["plain", "with space", "it's", '"$(touch pwned)"', "-dash"])
def test_the_working_directory_is_quoted_for_the_shell(tmp_path: Path, name: str) -> None:
    directory = tmp_path / name
    directory.mkdir()
    script = command_script(CommandRequest('pwd; echo "$0"', cwd=str(directory)))
    result = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, cwd="/", check=False
    )
    assert result.stdout.splitlines()[0] == str(directory)
    assert not (tmp_path / "pwned").exists()


def test_a_missing_working_directory_fails_with_126(tmp_path: Path) -> None:
    script = command_script(CommandRequest("echo ran", cwd=str(tmp_path / "missing")))
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (126, "")


def test_without_a_working_directory_the_command_is_unchanged() -> None:
    assert command_script(CommandRequest("echo 'x'")) == "echo 'x'"


# -- results ------------------------------------------------------------------------------------


def _encoded(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_an_exit_status_becomes_a_result_with_decoded_output() -> None:
    status = {
        "exited": True,
        "exitcode": 3,
        "out-data": _encoded(b"out\xff"),
        "err-data": _encoded(b"err"),
    }
    result = command_result("cmd", status, 0.5, CommandOutput)
    assert (result.returncode, result.stdout_bytes, result.stderr, result.duration) == (
        3,
        b"out\xff",
        "err",
        0.5,
    )


def test_a_signal_gives_a_negative_returncode_and_missing_output_is_empty() -> None:
    result = command_result("cmd", {"exited": True, "signal": 9}, 0.0, CommandOutput)
    assert (result.returncode, result.stdout_bytes, result.stderr_bytes) == (-9, b"", b"")


def test_output_cut_at_the_agents_cap_is_refused_with_a_way_out() -> None:
    status = {"exited": True, "exitcode": 0, "out-data": _encoded(b"x"), "out-truncated": True}
    with pytest.raises(RequestRefused) as refused:
        command_result("yes", status, 0.0, CommandOutput)
    message = str(refused.value)
    assert "stdout of 'yes'" in message
    assert "16 MiB" in message
    assert "vm.get()" in message
    # A command killed at its timeout keeps what it printed, cut or not.
    assert command_result("yes", status, 0.0, CommandOutput, check_truncation=False).stdout == "x"


# -- a fake agent -------------------------------------------------------------------------------


class FakeAgent:
    """Speaks the guest agent's JSON on a UNIX socket, as QEMU relays it.

    ``answering`` False models an agent not started yet: requests pile up
    unread and are answered, in order, once it is set.
    """

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.answering = threading.Event()
        self.answering.set()
        self.requests: list[dict[str, Any]] = []
        self.flushes = 0
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.handles: dict[int, dict[str, Any]] = {}
        self.processes: dict[int, dict[str, Any]] = {}
        #: Called for each command guest-exec starts: argv -> (process, updated on each poll).
        self.on_exec: Callable[[list[str], dict[str, Any]], None] = self.run_shell
        self.next_id = 100
        self.connection: socket.socket | None = None
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            self.connection, _ = self.listener.accept()
        except OSError:
            return
        decoder = json.JSONDecoder()
        buffer = ""
        while True:
            self.answering.wait()
            try:
                data = self.connection.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            self.flushes += data.count(b"\xff")
            buffer += data.replace(b"\xff", b"").decode()
            while buffer.strip():
                buffer = buffer.lstrip()
                try:
                    request, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError:
                    break
                buffer = buffer[end:]
                self.answer(request)

    def send(self, message: dict[str, Any]) -> None:
        assert self.connection is not None
        try:
            self.connection.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            pass

    def answer(self, request: dict[str, Any]) -> None:
        self.requests.append(request)
        command = request["execute"]
        arguments = request.get("arguments", {})
        try:
            value = getattr(self, "do_" + command.replace("-", "_"))(arguments)
        except LookupError as error:
            self.send({"error": {"class": "GenericError", "desc": str(error)}, "id": request["id"]})
        else:
            if value is not None:
                self.send({"return": value, "id": request["id"]})

    def do_guest_sync(self, arguments: dict[str, Any]) -> Any:
        return arguments["id"]

    def do_guest_exec(self, arguments: dict[str, Any]) -> Any:
        self.next_id += 1
        process: dict[str, Any] = {"exited": False, "arguments": arguments}
        self.processes[self.next_id] = process
        self.on_exec([arguments["path"], *arguments.get("arg", [])], process)
        return {"pid": self.next_id}

    def do_guest_exec_status(self, arguments: dict[str, Any]) -> Any:
        process = self.processes.get(arguments["pid"])
        if process is None:
            raise LookupError(f"Invalid parameter 'pid' {arguments['pid']}")
        poll = process.get("poll")
        if poll is not None:
            poll(process)
        if not process["exited"]:
            return {"exited": False}
        del self.processes[arguments["pid"]]
        return {key: value for key, value in process.items() if key not in ("arguments", "poll")}

    def do_guest_file_open(self, arguments: dict[str, Any]) -> Any:
        path, mode = arguments["path"], arguments["mode"]
        writable = path.startswith("/tmp/") or path == "/dev/urandom"
        if not writable or (mode == "rb" and path not in self.files):
            raise LookupError(f"failed to open file '{path}' (mode: '{mode}'): No such file")
        self.next_id += 1
        self.handles[self.next_id] = {"path": path, "offset": 0}
        if mode in ("wb", "w"):
            self.files[path] = b""
        return self.next_id

    def do_guest_file_write(self, arguments: dict[str, Any]) -> Any:
        handle = self.handles[arguments["handle"]]
        data = base64.b64decode(arguments["buf-b64"])
        self.files[handle["path"]] += data
        return {"count": len(data), "eof": False}

    def do_guest_file_read(self, arguments: dict[str, Any]) -> Any:
        handle = self.handles[arguments["handle"]]
        data = self.files[handle["path"]][handle["offset"] : handle["offset"] + arguments["count"]]
        handle["offset"] += len(data)
        return {"count": len(data), "buf-b64": _encoded(data), "eof": len(data) == 0}

    def do_guest_file_close(self, arguments: dict[str, Any]) -> Any:
        del self.handles[arguments["handle"]]
        return {}

    def run_shell(self, argv: list[str], process: dict[str, Any]) -> None:
        """The few commands the channel runs itself, and ``echo``."""
        process.update(exited=True, exitcode=0)
        if argv[:3] == ["/bin/sh", "-c", 'chmod "$0" "$1" && mv -f -- "$1" "$2"']:
            mode, partial, path = argv[3:]
            self.files[path] = self.files.pop(partial)
            self.modes[path] = int(mode, 8)
        elif argv[0] == "/usr/bin/stat":
            path = argv[-1]
            if path in self.files:
                process["out-data"] = _encoded(b"%o\n" % self.modes.get(path, 0o644))
            else:
                process.update(exitcode=1, **{"err-data": _encoded(b"stat: no such file\n")})
        elif argv[:2] == ["/bin/rm", "-f"]:
            self.files.pop(argv[-1], None)
        elif argv[:4] == ["/usr/bin/setsid", "-w", "/bin/sh", "-c"]:
            script = argv[4].splitlines()[-1]  # after any cd
            if script.startswith("echo "):
                text = " ".join(shlex.split(script[5:])) + "\n"
                process["out-data"] = _encoded(text.encode())

    def close(self) -> None:
        self.answering.set()
        if self.connection is not None:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.connection.close()
        self.listener.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[FakeAgent]:
    fake = FakeAgent(tmp_path / "qga.sock")
    yield fake
    fake.close()


@pytest.fixture
def channel(tmp_path: Path, agent: FakeAgent) -> Iterator[GuestAgentChannel]:
    connected = GuestAgentChannel(tmp_path)
    connected.connect(time.monotonic() + 5, lambda: True)
    connected.wait_ready(time.monotonic() + 5)
    yield connected
    connected.close()


def run(channel: GuestAgentChannel, command: str, **options: Any) -> Any:
    return channel.run(CommandRequest(command, **options))


def test_a_command_runs_through_guest_exec(channel: GuestAgentChannel, agent: FakeAgent) -> None:
    result = run(channel, "echo hello", cwd="/tmp", env={"A": "1"})
    assert (result.returncode, result.stdout) == (0, "hello\n")
    exec_request = next(r for r in agent.requests if r["execute"] == "guest-exec")
    assert exec_request["arguments"] == exec_arguments(
        CommandRequest("echo hello", cwd="/tmp", env={"A": "1"})
    )


def test_status_is_polled_until_the_command_exits(
    channel: GuestAgentChannel, agent: FakeAgent
) -> None:
    def exits_after_three_polls(argv: list[str], process: dict[str, Any]) -> None:
        def poll(process: dict[str, Any]) -> None:
            process["polls"] = process.get("polls", 0) + 1
            if process["polls"] == 3:
                process.update(exited=True, exitcode=7, **{"err-data": _encoded(b"e")})

        process["poll"] = poll

    agent.on_exec = exits_after_three_polls
    result = run(channel, "slow")
    assert (result.returncode, result.stderr) == (7, "e")
    assert [r["execute"] for r in agent.requests].count("guest-exec-status") == 3


def test_a_timeout_kills_the_process_group_and_keeps_the_output(
    channel: GuestAgentChannel, agent: FakeAgent
) -> None:
    victims: list[dict[str, Any]] = []

    def runs_until_killed(argv: list[str], process: dict[str, Any]) -> None:
        if argv[:2] == ["/bin/sh", "-c"] and argv[2].startswith("kill -9 -"):
            victim = agent.processes[int(argv[2].rsplit("-", 1)[1])]
            victim.update(exited=True, signal=9, **{"out-data": _encoded(b"so far\n")})
            process.update(exited=True, exitcode=0)
        else:
            victims.append(process)

    agent.on_exec = runs_until_killed
    started = time.monotonic()
    with pytest.raises(CommandTimedOut) as timed_out:
        run(channel, "sleep 100", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert (timed_out.value.result.returncode, timed_out.value.result.stdout) == (-9, "so far\n")
    assert victims and not agent.processes, "the kill command's status was not collected"


def test_a_command_that_outlives_its_kill_means_a_hung_guest(
    channel: GuestAgentChannel, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pytest_qemu.channels.qga.REPLY_GRACE", 0.3)
    agent.on_exec = lambda argv, process: process.update(exited=argv[0] == "/bin/sh")
    with pytest.raises(NoReply, match="had not ended"):
        run(channel, "unkillable", timeout=0.1)


def test_an_agent_that_forgot_the_command_has_died_and_the_next_request_resyncs(
    channel: GuestAgentChannel, agent: FakeAgent
) -> None:
    agent.on_exec = lambda argv, process: agent.processes.clear()
    with pytest.raises(AgentGone, match="restarted"):
        run(channel, "systemctl kill qemu-guest-agent")
    agent.on_exec = agent.run_shell
    flushes = agent.flushes
    assert run(channel, "echo back").stdout == "back\n"
    assert agent.flushes == flushes + 1, "no parser reset before the next request"


def test_the_port_closing_fails_a_running_command_at_once(
    channel: GuestAgentChannel, agent: FakeAgent
) -> None:
    agent.on_exec = lambda argv, process: None  # runs for ever
    timer = threading.Timer(0.2, channel.guest_port_changed, args=(False,))
    timer.start()
    started = time.monotonic()
    with pytest.raises(AgentGone, match="agent died"):
        run(channel, "sleep 100", timeout=None)
    assert time.monotonic() - started < 2
    agent.on_exec = agent.run_shell
    channel.guest_port_changed(True)
    assert run(channel, "echo back").stdout == "back\n"
    assert run(channel, "echo again").stdout == "again\n"


def test_a_port_close_reported_late_does_not_fail_the_next_command(
    channel: GuestAgentChannel, agent: FakeAgent
) -> None:
    channel.guest_port_changed(True)  # the VM forwards QEMU's events
    agent.on_exec = lambda argv, process: agent.processes.clear()
    with pytest.raises(AgentGone):
        run(channel, "kill the agent")
    threading.Timer(0.1, channel.guest_port_changed, args=(False,)).start()

    def exits_after_half_a_second(argv: list[str], process: dict[str, Any]) -> None:
        ends = time.monotonic() + 0.5
        process["poll"] = lambda process: process.update(
            exited=time.monotonic() >= ends, exitcode=0
        )

    # The close event arrives while this command runs: it belongs to the death before.
    agent.on_exec = exits_after_half_a_second
    assert run(channel, "sleep 0.5").returncode == 0
    agent.on_exec = agent.run_shell
    assert run(channel, "echo again").stdout == "again\n"


def test_wait_ready_waits_for_a_late_agent_and_ignores_the_pings_it_answers_late(
    tmp_path: Path, agent: FakeAgent
) -> None:
    agent.answering.clear()
    channel = GuestAgentChannel(tmp_path)
    channel.connect(time.monotonic() + 5, lambda: True)
    threading.Timer(1.2, agent.answering.set).start()
    started = time.monotonic()
    assert channel.wait_ready(time.monotonic() + 10) == "-"
    assert 1.2 <= time.monotonic() - started < 3
    syncs = [r for r in agent.requests if r["execute"] == "guest-sync"]
    # At least one ping went unanswered before the agent woke (more on an idle host: one
    # every 0.5 s; a loaded one may send only two in 1.2 s).
    assert len(syncs) >= 2
    # Every stale answer was dropped quietly: the channel still works.
    assert run(channel, "echo ok").stdout == "ok\n"
    channel.close()


def test_a_restored_guest_gets_the_hosts_clock_and_fresh_entropy_without_a_shell(
    tmp_path: Path, agent: FakeAgent
) -> None:
    channel = GuestAgentChannel(tmp_path)
    channel.connect(time.monotonic() + 5, lambda: True)
    try:
        channel.wait_ready(time.monotonic() + 5, resumed=True)
    finally:
        channel.close()
    assert channel.personalises_on_resume
    (date,) = (
        request["arguments"] for request in agent.requests if request["execute"] == "guest-exec"
    )
    # date itself, not a shell: a clone's first process is what its start costs.
    assert [date["path"], *date["arg"][:2]] == ["date", "-u", "-s"]
    assert abs(int(date["arg"][2].lstrip("@")) - time.time()) < 5
    assert len(agent.files["/dev/urandom"]) == 64
    assert not agent.handles, "the entropy's file handle is closed"


def test_a_restored_guest_whose_clock_cannot_be_set_says_so(
    tmp_path: Path, agent: FakeAgent
) -> None:
    def date_fails(argv: list[str], process: dict[str, Any]) -> None:
        process.update(exited=True, exitcode=1, **{"err-data": _encoded(b"date: cannot set\n")})

    agent.on_exec = date_fails
    channel = GuestAgentChannel(tmp_path)
    channel.connect(time.monotonic() + 5, lambda: True)
    try:
        with pytest.raises(RequestRefused, match="restored guest's clock failed: date: cannot set"):
            channel.wait_ready(time.monotonic() + 5, resumed=True)
    finally:
        channel.close()


def test_wait_ready_never_outlasts_its_deadline(tmp_path: Path, agent: FakeAgent) -> None:
    agent.answering.clear()
    channel = GuestAgentChannel(tmp_path)
    channel.connect(time.monotonic() + 5, lambda: True)
    started = time.monotonic()
    with pytest.raises(NoReply):
        channel.wait_ready(started + 0.7)
    assert 0.7 <= time.monotonic() - started < 1.5
    channel.close()


def test_put_and_get_keep_content_and_mode(
    channel: GuestAgentChannel, agent: FakeAgent, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.write_bytes(os.urandom(3 * FILE_CHUNK + 5))
    channel.put(source, "/tmp/target", 0o751, 10)
    assert agent.files == {"/tmp/target": source.read_bytes()}
    assert agent.modes["/tmp/target"] == 0o751
    assert not agent.handles
    destination = tmp_path / "back"
    assert channel.get("/tmp/target", destination, 10) == 0o751
    assert destination.read_bytes() == source.read_bytes()
    assert destination.stat().st_mode & 0o777 == 0o751
    assert not agent.handles


def test_missing_paths_are_refused_with_the_agents_message(
    channel: GuestAgentChannel, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x")
    with pytest.raises(RequestRefused, match="cannot write /nonexistent/x: failed to open"):
        channel.put(source, "/nonexistent/x", 0o644, 10)
    with pytest.raises(RequestRefused, match="cannot read /tmp/missing: failed to open"):
        channel.get("/tmp/missing", tmp_path / "destination", 10)
    assert not (tmp_path / "destination").exists()
    assert not list(tmp_path.glob(".destination*"))


def test_qemu_closing_the_socket_is_channel_closed(
    channel: GuestAgentChannel, agent: FakeAgent
) -> None:
    agent.on_exec = lambda argv, process: None
    threading.Timer(0.2, agent.close).start()
    with pytest.raises(ChannelClosed):
        run(channel, "sleep 100", timeout=None)
    with pytest.raises(ChannelClosed):
        run(channel, "true")


def test_close_is_idempotent(channel: GuestAgentChannel) -> None:
    channel.close()
    channel.close()
    with pytest.raises(ChannelClosed):
        run(channel, "true")


def test_a_failed_write_leaves_no_partial_file(
    channel: GuestAgentChannel, agent: FakeAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(arguments: dict[str, Any]) -> Any:
        raise LookupError("failed to write to file: No space left on device")

    monkeypatch.setattr(agent, "do_guest_file_write", disk_full)
    source = tmp_path / "source"
    source.write_bytes(b"data")
    with pytest.raises(RequestRefused, match=r"cannot write /tmp/full: .*No space left"):
        channel.put(source, "/tmp/full", 0o644, 10)
    assert agent.files == {}
    assert not agent.handles
