"""Start strategies: the ways a VM's guest comes up, each a module behind
:class:`~pytest_qemu.vm.start.base.StartStrategy`.

``cold`` boots; ``clone`` starts from a template, building it on a miss
(``template``); ``prepared`` hands a test a VM started ahead while the previous
test ran. :func:`strategy_for` picks the strategy of a launch plan.
"""

from __future__ import annotations

from pytest_qemu.vm.plan import LaunchPlan
from pytest_qemu.vm.start.base import StartOutcome, StartStrategy
from pytest_qemu.vm.start.clone import Clone
from pytest_qemu.vm.start.cold import ColdBoot


def strategy_for(plan: LaunchPlan) -> StartStrategy:
    """Clone the plan's template if it has one, else boot."""
    if plan.snapshot is not None:
        return Clone(plan.snapshot)
    return ColdBoot(plan.boot_reason)


__all__ = ["Clone", "ColdBoot", "StartOutcome", "StartStrategy", "strategy_for"]
