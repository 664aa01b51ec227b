"""The VM object before QEMU starts: nothing here boots."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_qemu import VM, BootTimeout, MachineSpec, VMExited
from pytest_qemu.channels.base import NoReply
from pytest_qemu.vm import process, readiness, rundir
from pytest_qemu.vm.start import template


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_socket_directories_of_killed_processes_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = Path(tempfile.mkdtemp(prefix=f"pytest-qemu-vm-{dead_pid()}-"))
    (orphan / "qmp.sock").touch()
    mine = Path(tempfile.mkdtemp(prefix=f"pytest-qemu-vm-{os.getpid()}-"))
    monkeypatch.setattr(rundir, "_swept", False)
    vm = VM(MachineSpec(kernel=tmp_path / "vmlinux"), log_dir=tmp_path / "logs")
    try:
        assert not orphan.exists()
        assert mine.exists(), "a live process's directory must stay"
    finally:
        vm.kill()
        mine.rmdir()
    assert not any(Path(tempfile.gettempdir()).glob(f"{vm.files.socket_dir.name}"))


class _InterruptedSave:
    """A QMP connection on which the user presses Ctrl-C while a save is being written."""

    def __init__(self, partial: Path) -> None:
        self.partial = partial

    def execute(self, command: str, arguments: object, timeout: object) -> object:
        if command == "migrate":
            self.partial.write_bytes(b"x" * 1000)
            return {}
        if command == "query-migrate":
            raise KeyboardInterrupt
        return {}

    def close(self) -> None:
        pass


def test_ctrl_c_during_a_snapshot_save_leaves_no_partial_file(tmp_path: Path) -> None:
    from pytest_qemu.vm.snapshot import SnapshotStore

    snapshot = SnapshotStore(tmp_path / "snapshots").get("key")
    qmp = _InterruptedSave(snapshot.partial_path())
    with pytest.raises(KeyboardInterrupt):
        template.save(qmp, snapshot, snapshot.partial_ram_path(), tmp_path / "console.log", [])
    assert not snapshot.partial_path().exists()
    assert not snapshot.exists()


def test_only_run_directories_of_gone_processes_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = 2**22 + 1  # above any pid_max: no such process
    dead = tmp_path / f"pytest-qemu-vm-{gone}-abc"
    alive = tmp_path / f"pytest-qemu-vm-{os.getpid()}-def"
    unrelated = tmp_path / "pytest-qemu-vm-notapid-x"
    for directory in (dead, alive, unrelated):
        directory.mkdir()
        (directory / "qmp.sock").touch()
    assert rundir.remove_orphaned_run_directories() == [dead]
    assert not dead.exists() and alive.exists() and unrelated.exists()


#: A stand-in for QEMU that, like one of 48 starting at once on 2 cores, answers on its
#: QMP socket only after a while, then exits without opening the agent's socket.
SLOW_QEMU = r"""#!/usr/bin/env python3
import json, re, socket, sys, time
path = re.search(r"id=qmp,path=([^,]+)", " ".join(sys.argv)).group(1)
time.sleep(1.5)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(1)
connection, _ = server.accept()
connection.sendall(json.dumps({"QMP": {"version": {"qemu": {"major": 7, "minor": 2,
    "micro": 0}, "package": ""}, "capabilities": []}}).encode() + b"\r\n")
# QMP clients need not end a command with a newline: decode the stream as it comes.
received, decoder = "", json.JSONDecoder()
while True:
    chunk = connection.recv(4096)
    if not chunk:
        sys.exit(2)
    received += chunk.decode()
    try:
        command, _ = decoder.raw_decode(received.strip())
    except ValueError:
        continue
    break
reply = {"return": {}, **({"id": command["id"]} if "id" in command else {})}
connection.sendall(json.dumps(reply).encode() + b"\r\n")
time.sleep(0.5)
sys.exit(1)  # soon after QMP answered: the VM then fails at once at the next step
"""


def test_qemu_slow_to_answer_on_qmp_gets_the_boot_timeout_not_a_fixed_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text(SLOW_QEMU)
    fake.chmod(0o755)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0" * 4096)
    # The fixed wait made shorter than the fake's delay; the boot timeout is longer.
    monkeypatch.setattr(process, "SOCKET_WAIT", 0.5)
    vm = VM(MachineSpec(kernel=kernel, qemu=str(fake)), log_dir=tmp_path / "logs", boot_timeout=60)
    with pytest.raises(VMExited) as failure:
        vm.start()
    # QMP answered within the boot timeout; what failed is the next step, the agent.
    headline = str(failure.value).splitlines()[0]
    assert "QMP" not in headline and "command channel" in headline, headline
    assert vm.pid is not None and not vm.is_running()


class _SilentChannel:
    """A channel whose guest never answers."""

    def connect(self, deadline: float, qemu_running: object) -> None:
        pass

    def wait_ready(self, deadline: float, resumed: bool = False) -> str:
        raise NoReply("no answer from the guest agent")


def test_a_clone_that_does_not_answer_is_not_blamed_on_the_boot_timeout() -> None:
    launcher: Any = SimpleNamespace(
        channel=_SilentChannel(),
        socket_wait=1.0,
        is_running=lambda: True,
        has_exited=lambda: False,
        failure_report=lambda headline, *rest: headline,
        guest=SimpleNamespace(boot_timeout_hint="is qemu-guest-agent installed?"),
        boot_timeout=300.0,
    )
    deadline = time.monotonic() + 1
    # A clone that does not get ready boots instead: its reason names no boot timeout.
    with pytest.raises(BootTimeout) as restored:
        readiness.wait_until_ready(launcher, deadline, resumed=True)
    assert str(restored.value) == (
        "the restored guest did not get ready (no answer from the guest agent)"
    )
    with pytest.raises(BootTimeout) as booting:
        readiness.wait_until_ready(launcher, deadline, resumed=False)
    assert "within the boot timeout of 300 s" in str(booting.value)
    assert "is qemu-guest-agent installed?" in str(booting.value)
