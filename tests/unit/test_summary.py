"""The terminal summary of a run's VMs, per architecture when there are several (no QEMU)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pytest_qemu.platforms import get_platform
from pytest_qemu.plugin.summary import RunStats


def _vm(arch: str, seconds: float, cloned: bool) -> Any:
    return SimpleNamespace(
        restored_from="t.state" if cloned else None,
        boot_seconds=seconds,
        built_template=False,
        prepared_ahead=False,
        spec=SimpleNamespace(platform=get_platform(arch)),
    )


def test_one_architecture_gives_the_totals_only() -> None:
    stats = RunStats()
    stats.record(_vm("x86_64", 0.1, True))
    assert stats.lines() == [
        "1 VMs started: 1 cloned from a template, 0 booted; 0 template(s) built",
        "ready after 0.100 s (median), 0.100 s (slowest)",
    ]


def test_several_architectures_get_a_line_each_also_across_workers() -> None:
    stats, worker = RunStats(), RunStats()
    stats.record(_vm("i686", 0.2, True))
    worker.record(_vm("mips64el", 4.0, False))
    worker.record(_vm("mips64el", 0.3, True))
    stats.merge(worker.as_data())
    assert stats.lines()[2:] == [
        "  i386: 1 VMs, 1 cloned, ready after 0.200 s (median), 0.200 s (slowest)",
        "  mips64el: 2 VMs, 1 cloned, ready after 2.150 s (median), 4.000 s (slowest)",
    ]
