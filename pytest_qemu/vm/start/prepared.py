"""Prepared ahead: the VM's QEMU was started while an earlier test ran, and the test's VM
adopts it.

A VM prepared ahead is started, by the strategy its plan names (a clone), with a
launcher of its own; it then serves one request that starts no process (its
kernel log): its agent is known to work, and the shell its template started
ahead is left for the test's first command. Nothing else happens in it, so it
is as fresh as a VM started on demand. When a test's VM starts with
:class:`Prepared`, its launcher adopts that QEMU (its process, channel, run
directory and logs); when none is ready, the VM starts the usual way.

Preparations run in background threads (:class:`VMPool`), up to *depth* VMs
ahead per configuration. A preparation that fails is dropped silently: the test
then starts its VM itself and sees the error there.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from pytest_qemu.vm.start.base import StartOutcome, StartStrategy

if TYPE_CHECKING:
    from pytest_qemu.vm.launcher import Launcher
    from pytest_qemu.vm.transcript import Transcript


class Notes(Protocol):
    """Where a prepared VM's history is written."""

    def add(self, text: str) -> None:
        """Record *text*."""


class Preparable(Protocol):
    """What the pool needs of a VM started ahead."""

    @property
    def transcript(self) -> Notes:
        """Its transcript."""

    def kernel_log(self, timeout: float) -> str:
        """A request that starts no process in the guest (its agent answers)."""

    def is_running(self) -> bool:
        """Whether its QEMU is alive."""

    def kill(self) -> None:
        """End it and remove its files."""

    def move_logs(self, destination: Path) -> None:
        """Move its log directory to *destination*."""


P = TypeVar("P", bound=Preparable)


class VMPool(Generic[P]):
    """Up to *depth* VMs per configuration *key*, started ahead in the background.

    *directory* holds the logs of prepared VMs until a test takes one and its
    logs move to the test's own directory (same file system).
    """

    def __init__(self, directory: Path, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"a pool prepares at least one VM ahead, not {depth}")
        self.depth = depth
        self._directory = directory
        self._lock = threading.Lock()
        self._futures: dict[Hashable, deque[Future[P | None]]] = {}
        self._numbers = itertools.count()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        #: How many VMs tests took from the pool, and how many they started themselves.
        self.hits = 0
        self.misses = 0

    def prepare(self, key: Hashable, start: Callable[[Path], P]) -> None:
        """Start VMs for *key* in the background until *depth* are ready or under way;
        *start* starts one that logs to the directory it is given."""
        with self._lock:
            if self._closed:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.depth, thread_name_prefix="pytest-qemu-pool"
                )
            queue = self._futures.setdefault(key, deque())
            while len(queue) < self.depth:
                log_dir = self._directory / f"prepared{next(self._numbers)}"
                queue.append(self._executor.submit(_prepare, start, log_dir))

    def take(self, key: Hashable, log_dir: Path) -> P | None:
        """The VM prepared for *key*, its logs moved to *log_dir*; None if there is none.

        A preparation under way is waited for: it started before this request did.
        """
        with self._lock:
            queue = self._futures.get(key)
            future = queue.popleft() if queue else None
        waited = time.monotonic()
        vm = future.result() if future is not None else None
        if vm is not None and not vm.is_running():
            vm.kill()
            vm = None
        if vm is None:
            with self._lock:
                self.misses += 1
            return None
        vm.move_logs(log_dir)
        vm.transcript.add(
            "handed to the test from the VMs prepared ahead, after waiting "
            f"{time.monotonic() - waited:.3f} s for it"
        )
        with self._lock:
            self.hits += 1
        return vm

    def close(self) -> None:
        """Stop the background thread and every prepared VM nobody took. Idempotent."""
        with self._lock:
            self._closed = True
            futures = [future for queue in self._futures.values() for future in queue]
            self._futures = {}
            executor, self._executor = self._executor, None
        for future in futures:
            future.cancel()
        if executor is not None:
            executor.shutdown(wait=True)
        for future in futures:
            if not future.cancelled() and (vm := future.result()) is not None:
                vm.kill()
        shutil.rmtree(self._directory, ignore_errors=True)


def _prepare(start: Callable[[Path], P], log_dir: Path) -> P | None:
    try:
        vm = start(log_dir)
    except Exception:
        shutil.rmtree(log_dir, ignore_errors=True)
        return None
    try:
        vm.kernel_log(timeout=30)
    except Exception:
        vm.kill()
        shutil.rmtree(log_dir, ignore_errors=True)
        return None
    return vm


@dataclass
class LaunchedAhead:
    """A VM's QEMU started ahead by *launcher*, and what that start did."""

    launcher: Launcher
    outcome: StartOutcome

    @property
    def transcript(self) -> Transcript:
        """The launcher's transcript."""
        return self.launcher.transcript

    def kernel_log(self, timeout: float) -> str:
        """The guest's kernel log (a request that starts no process)."""
        return self.launcher.commands.kernel_log(timeout)

    def is_running(self) -> bool:
        """Whether its QEMU is alive."""
        return self.launcher.is_running()

    def kill(self) -> None:
        """End its QEMU and remove its run directory."""
        self.launcher.stop_process()
        self.launcher.close()

    def move_logs(self, destination: Path) -> None:
        """Move its logs to *destination*, the log directory of the VM that adopts it."""
        self.launcher.move_logs(destination)


@dataclass(frozen=True)
class Ahead:
    """Where a VM's QEMU may have been started ahead: *pool*, under *key* (VMs of the same
    configuration). *make_next* makes the launcher of the next VM like it, to be started
    ahead once this one has started; None prepares none."""

    pool: VMPool[LaunchedAhead]
    key: Hashable
    make_next: Callable[[Path], Launcher] | None = None


class Prepared(StartStrategy):
    """Adopt the QEMU started ahead for the VM (see the module's docstring); when none is
    ready, start by *fallback*, the plan's own strategy (which also starts those ahead)."""

    name = "prepared ahead"

    def __init__(self, ahead: Ahead, fallback: StartStrategy) -> None:
        self.ahead = ahead
        self.fallback = fallback

    def start(self, launcher: Launcher, started: float) -> StartOutcome:
        taken = self.ahead.pool.take(self.ahead.key, launcher.files.log_dir)
        if taken is None:
            outcome = self.fallback.start(launcher, started)
        else:
            launcher.adopt(taken.launcher)
            outcome = dataclasses.replace(taken.outcome, prepared_ahead=True)
        if self.ahead.make_next is not None:
            self.ahead.pool.prepare(self.ahead.key, self._start_ahead)
        return outcome

    def _start_ahead(self, log_dir: Path) -> LaunchedAhead:
        """Start the next VM like this one, logging to *log_dir* (in a pool's thread)."""
        assert self.ahead.make_next is not None
        launcher = self.ahead.make_next(log_dir)
        try:
            return LaunchedAhead(launcher, self.fallback.start(launcher, time.monotonic()))
        except BaseException:
            launcher.stop_process()
            launcher.close()
            raise
