"""The run's VM figures, gathered from every xdist worker for the terminal summary."""

from __future__ import annotations

import statistics
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_qemu.vm.machine import VM


class RunStats:
    """How the run's VMs started: cloned or booted, how fast, and templates built."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: One (cloned, seconds to ready, built a template) per VM start.
        self.starts: list[tuple[bool, float, bool]] = []

    def record(self, vm: VM) -> None:
        """Count *vm*, just started."""
        with self._lock:
            self.starts.append(
                (vm.restored_from is not None, vm.boot_seconds or 0.0, vm.built_template)
            )

    def as_data(self) -> list[list[Any]]:
        """The figures as plain data, for an xdist worker to send to the controller."""
        with self._lock:
            return [list(start) for start in self.starts]

    def merge(self, data: list[list[Any]]) -> None:
        """Add a worker's figures."""
        with self._lock:
            self.starts += [(bool(a), float(b), bool(c)) for a, b, c in data]

    def lines(self) -> list[str]:
        """The summary, or nothing if no VM started."""
        if not self.starts:
            return []
        times = sorted(seconds for _, seconds, _ in self.starts)
        cloned = sum(1 for was_cloned, _, _ in self.starts if was_cloned)
        built = sum(1 for _, _, did_build in self.starts if did_build)
        return [
            f"{len(self.starts)} VMs started: {cloned} cloned from a template, "
            f"{len(self.starts) - cloned} booted; {built} template(s) built",
            f"ready after {statistics.median(times):.3f} s (median), {times[-1]:.3f} s (slowest)",
        ]
