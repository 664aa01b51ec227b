"""The pool of VMs prepared ahead, with stand-ins for VMs (no QEMU)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_qemu.plugin.session import _prepare_ahead_depth
from pytest_qemu.vm.start.prepared import VMPool


class StandInVM:
    """What the pool uses of a VM."""

    def __init__(self, log_dir: Path, fail_command: bool = False) -> None:
        log_dir.mkdir(parents=True)
        (log_dir / "console.log").write_text("booted\n")
        self.log_dir = log_dir
        self.commands: list[str] = []
        self.killed = False
        self.notes: list[str] = []
        self.transcript = self
        self._fail_command = fail_command

    def add(self, text: str) -> None:
        self.notes.append(text)

    def kernel_log(self, timeout: float) -> str:
        if self._fail_command:
            raise RuntimeError("the agent did not answer")
        self.commands.append("kernel_log")
        return "[    0.000000] Linux version 6.1.0"

    def is_running(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True

    def move_logs(self, destination: Path) -> None:
        self.log_dir.rename(destination)
        self.log_dir = destination


def test_a_taken_vm_is_warmed_up_and_its_logs_move_to_the_test(tmp_path: Path) -> None:
    pool = VMPool(tmp_path / "pool", depth=1)
    started: list[StandInVM] = []

    def start(log_dir: Path) -> StandInVM:
        started.append(StandInVM(log_dir))
        return started[-1]

    pool.prepare("default", start)  # type: ignore[arg-type]
    vm = pool.take("default", tmp_path / "test-vm0")
    assert vm is started[0]
    # Its agent answered a request that starts no process in the guest.
    assert started[0].commands == ["kernel_log"]
    assert (tmp_path / "test-vm0" / "console.log").read_text() == "booted\n"
    assert any("prepared ahead" in note for note in started[0].notes)
    assert (pool.hits, pool.misses) == (1, 0)
    pool.close()
    assert not started[0].killed  # the test owns it now
    assert not (tmp_path / "pool").exists()


def test_nothing_prepared_or_another_configuration_is_a_miss(tmp_path: Path) -> None:
    pool = VMPool(tmp_path / "pool")
    assert pool.take("default", tmp_path / "a") is None
    pool.prepare("default", lambda log_dir: StandInVM(log_dir))  # type: ignore[arg-type, return-value]
    assert pool.take("with-4-cpus", tmp_path / "b") is None
    assert (pool.hits, pool.misses) == (0, 2)
    pool.close()


def test_depth_vms_are_prepared_at_once_and_leftovers_are_killed(tmp_path: Path) -> None:
    pool = VMPool(tmp_path / "pool", depth=2)
    started: list[StandInVM] = []
    both_running = threading.Barrier(2, timeout=10)

    def start(log_dir: Path) -> StandInVM:
        both_running.wait()  # fails unless two preparations run side by side
        vm = StandInVM(log_dir)
        started.append(vm)
        return vm

    pool.prepare("default", start)  # type: ignore[arg-type]
    pool.prepare("default", start)  # type: ignore[arg-type]  # already two under way
    first = pool.take("default", tmp_path / "test0")
    assert first is not None
    pool.close()
    assert len(started) == 2
    assert [vm.killed for vm in started if vm is not first] == [True]
    assert not (tmp_path / "pool").exists()


@pytest.mark.parametrize("failure", ["start", "warm-up"])
def test_a_failed_preparation_is_a_miss(tmp_path: Path, failure: str) -> None:
    pool = VMPool(tmp_path / "pool")
    made: list[StandInVM] = []

    def start(log_dir: Path) -> StandInVM:
        if failure == "start":
            raise RuntimeError("QEMU exited")
        made.append(StandInVM(log_dir, fail_command=True))
        return made[-1]

    pool.prepare("default", start)  # type: ignore[arg-type]
    assert pool.take("default", tmp_path / "test0") is None
    assert all(vm.killed for vm in made)
    pool.close()


def test_a_closed_pool_prepares_nothing(tmp_path: Path) -> None:
    pool = VMPool(tmp_path / "pool")
    pool.close()
    pool.prepare("default", lambda log_dir: StandInVM(log_dir))  # type: ignore[arg-type, return-value]
    assert pool.take("default", tmp_path / "a") is None
    with pytest.raises(ValueError, match="at least one"):
        VMPool(tmp_path / "other", depth=0)


@pytest.mark.parametrize(
    ("setting", "cpus", "workers", "depth"),
    [
        ("auto", 2, None, 2),  # without xdist: both cores prepare while pytest waits
        ("auto", 2, 2, 0),  # -n 2 on 2 cores: no CPU is free
        ("auto", 8, 2, 4),
        ("auto", 64, None, 4),  # at most 4: more would only hold memory
        ("auto", 1, None, 0),
        ("off", 8, None, 0),
        ("3", 1, 2, 3),  # a number is taken as it is
    ],
)
def test_how_many_vms_are_prepared_ahead(
    monkeypatch: pytest.MonkeyPatch, setting: str, cpus: int, workers: int | None, depth: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    config = SimpleNamespace(workerinput={"workercount": workers} if workers else None)
    assert _prepare_ahead_depth(setting, config) == depth  # type: ignore[arg-type]
