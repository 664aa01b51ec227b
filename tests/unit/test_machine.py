"""The VM object before QEMU starts: nothing here boots."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pytest_qemu import VM, MachineSpec
from pytest_qemu.vm import rundir
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
