"""VMs prepared ahead: the next test's clone starts while the current test runs.

A prepared VM is a clone that answered, then served one request that starts no
process (its kernel log): its agent is known to work, and the shell its
template started ahead is left for the test's first command. Nothing else
happens in it, so it is as fresh as a VM started on demand.

Preparations run in background threads, up to *depth* VMs ahead per
configuration. A preparation that fails is dropped silently: the test then
starts its VM itself and sees the error there.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_qemu.vm.machine import VM

#: Makes and starts a VM that logs to the given directory.
VMStarter = Callable[[Path], "VM"]


class VMPool:
    """Up to *depth* started VMs per configuration *key*, prepared in the background.

    *directory* holds the logs of prepared VMs until a test takes one and its
    logs move to the test's own directory (same file system).
    """

    def __init__(self, directory: Path, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"a pool prepares at least one VM ahead, not {depth}")
        self.depth = depth
        self._directory = directory
        self._lock = threading.Lock()
        self._futures: dict[Hashable, deque[Future[VM | None]]] = {}
        self._numbers = itertools.count()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        #: How many VMs tests took from the pool, and how many they started themselves.
        self.hits = 0
        self.misses = 0

    def prepare(self, key: Hashable, start: VMStarter) -> None:
        """Start VMs for *key* in the background until *depth* are ready or under way."""
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

    def take(self, key: Hashable, log_dir: Path) -> VM | None:
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


def _prepare(start: VMStarter, log_dir: Path) -> VM | None:
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
