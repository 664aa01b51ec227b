"""The run's VM figures, gathered from every xdist worker for the terminal summary."""

from __future__ import annotations

import statistics
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_qemu.vm.machine import VM


class RunStats:
    """How the run's VMs started: cloned or booted, how fast, templates built, and how
    many were prepared ahead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: One (cloned, seconds to ready, built a template, prepared ahead, architecture)
        #: per VM start.
        self.starts: list[tuple[bool, float, bool, bool, str]] = []

    def record(self, vm: VM) -> None:
        """Count *vm*, just started (perhaps ahead, while an earlier test ran)."""
        with self._lock:
            self.starts.append(
                (
                    vm.restored_from is not None,
                    vm.boot_seconds or 0.0,
                    vm.built_template,
                    vm.prepared_ahead,
                    vm.spec.platform.name,
                )
            )

    def as_data(self) -> list[list[Any]]:
        """The figures as plain data, for an xdist worker to send to the controller."""
        with self._lock:
            return [list(start) for start in self.starts]

    def merge(self, data: list[list[Any]]) -> None:
        """Add a worker's figures."""
        with self._lock:
            self.starts += [(bool(a), float(b), bool(c), bool(d), str(e)) for a, b, c, d, e in data]

    def lines(self) -> list[str]:
        """The summary, or nothing if no VM started; a line per architecture when the
        run's VMs had more than one."""
        if not self.starts:
            return []
        times = sorted(start[1] for start in self.starts)
        cloned = sum(1 for start in self.starts if start[0])
        built = sum(1 for start in self.starts if start[2])
        prepared = sum(1 for start in self.starts if start[3])
        lines = [
            f"{len(self.starts)} VMs started: {cloned} cloned from a template, "
            f"{len(self.starts) - cloned} booted; {built} template(s) built"
            + (f"; {prepared} prepared ahead while earlier tests ran" if prepared else ""),
            f"ready after {statistics.median(times):.3f} s (median), {times[-1]:.3f} s (slowest)",
        ]
        architectures = sorted({start[4] for start in self.starts})
        if len(architectures) > 1:
            for arch in architectures:
                own = [start for start in self.starts if start[4] == arch]
                ready = sorted(start[1] for start in own)
                lines.append(
                    f"  {arch}: {len(own)} VMs, {sum(1 for start in own if start[0])} cloned, "
                    f"ready after {statistics.median(ready):.3f} s (median), "
                    f"{ready[-1]:.3f} s (slowest)"
                )
        return lines
