"""The ``prepared`` start strategy, with stand-in launchers (no QEMU)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pytest_qemu.vm.rundir import RunFiles
from pytest_qemu.vm.start import Ahead, Prepared
from pytest_qemu.vm.start.base import StartOutcome, StartStrategy
from pytest_qemu.vm.start.prepared import VMPool


class StandInLauncher:
    """What the strategy uses of a launcher."""

    def __init__(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.files = SimpleNamespace(log_dir=log_dir)
        self.transcript = SimpleNamespace(add=lambda text: None)
        self.commands = SimpleNamespace(kernel_log=lambda timeout: "Linux version 6.1")
        self.running = True
        self.closed = False
        self.adopted: StandInLauncher | None = None

    def adopt(self, ahead: StandInLauncher) -> None:
        self.adopted = ahead

    def is_running(self) -> bool:
        return self.running

    def stop_process(self) -> None:
        self.running = False

    def close(self) -> None:
        self.closed = True

    def move_logs(self, destination: Path) -> None:
        os.replace(self.files.log_dir, destination)
        self.files.log_dir = destination


class Recording(StartStrategy):
    """Starts nothing; remembers the launchers it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.launchers: list[StandInLauncher] = []

    def start(self, launcher: object, started: float) -> StartOutcome:
        assert isinstance(launcher, StandInLauncher)
        self.launchers.append(launcher)
        return StartOutcome([f"qemu-{len(self.launchers)}"], restored_from=Path("template"))


def test_a_miss_starts_the_plans_way_and_the_next_vm_is_adopted(tmp_path: Path) -> None:
    pool: VMPool[Any] = VMPool(tmp_path / "pool")
    made: list[StandInLauncher] = []

    def make_next(log_dir: Path) -> StandInLauncher:
        made.append(StandInLauncher(log_dir))
        return made[-1]

    plan_strategy = Recording()
    ahead = Ahead(pool, "default", make_next)  # type: ignore[arg-type]
    first = StandInLauncher(tmp_path / "vm0")
    outcome = Prepared(ahead, plan_strategy).start(first, 0.0)  # type: ignore[arg-type]
    # Nothing was prepared: the plan's own strategy started this VM.
    assert plan_strategy.launchers[0] is first
    assert (outcome.argv, outcome.prepared_ahead) == (["qemu-1"], False)

    second = StandInLauncher(tmp_path / "vm1")
    outcome = Prepared(ahead, plan_strategy).start(second, 0.0)  # type: ignore[arg-type]
    # The VM started ahead (by the plan's strategy, on a launcher of its own) was adopted,
    # its logs moved to the test's log directory.
    assert second.adopted is made[0] is plan_strategy.launchers[1]
    assert made[0].files.log_dir == tmp_path / "vm1"
    assert (outcome.argv, outcome.prepared_ahead) == (["qemu-2"], True)
    assert outcome.restored_from == Path("template")
    assert (pool.hits, pool.misses) == (1, 1)
    pool.close()
    # The next one, prepared after the second test's start and taken by no one, is ended
    # (or never started).
    assert all(not launcher.running and launcher.closed for launcher in made[1:])
    assert not made[0].closed


def test_without_a_next_vm_nothing_is_prepared(tmp_path: Path) -> None:
    pool: VMPool[Any] = VMPool(tmp_path / "pool")
    plan_strategy = Recording()
    ahead = Ahead(pool, "default")
    Prepared(ahead, plan_strategy).start(StandInLauncher(tmp_path / "vm0"), 0.0)  # type: ignore[arg-type]
    assert pool.take("default", tmp_path / "vm1") is None
    pool.close()


def test_adopted_run_files_are_the_prepared_ones_with_the_tests_logs(tmp_path: Path) -> None:
    mine = RunFiles.create(tmp_path / "test-vm0", gdb=False)
    prepared = RunFiles.create(tmp_path / "pool" / "prepared0", gdb=False)
    prepared.paths.console_log.write_text("booted\n")
    own_sockets = mine.socket_dir
    try:
        prepared.move_logs(mine.log_dir)
        mine.adopt(prepared)
        assert not own_sockets.exists()
        assert mine.socket_dir == prepared.socket_dir
        assert mine.paths.qmp_socket.parent == prepared.socket_dir
        assert mine.paths.console_log == tmp_path / "test-vm0" / "console.log"
        assert mine.paths.console_log.read_text() == "booted\n"
    finally:
        mine.remove()
        prepared.remove()
