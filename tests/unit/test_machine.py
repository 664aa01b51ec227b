"""The VM object before QEMU starts: nothing here boots."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pytest_qemu import VM, MachineSpec
from pytest_qemu.vm import machine


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
    monkeypatch.setattr(machine, "_swept", False)
    vm = VM(MachineSpec(kernel=tmp_path / "vmlinux"), log_dir=tmp_path / "logs")
    try:
        assert not orphan.exists()
        assert mine.exists(), "a live process's directory must stay"
    finally:
        vm.kill()
        mine.rmdir()
    assert not any(Path(tempfile.gettempdir()).glob(f"{vm._socket_dir.name}"))
