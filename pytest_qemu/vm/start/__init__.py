"""Start strategies: the ways a VM's guest comes up, each a module behind
:class:`~pytest_qemu.vm.start.base.StartStrategy`.

``cold`` boots; ``clone`` starts from a template, building it on a miss
(``template``); ``prepared`` adopts a VM started ahead while the previous test
ran (else starts the plan's way). :func:`strategy_for` picks the strategy of a
launch plan from :data:`STRATEGIES`.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_qemu.vm.plan import LaunchPlan
from pytest_qemu.vm.start.base import StartOutcome, StartStrategy
from pytest_qemu.vm.start.clone import Clone
from pytest_qemu.vm.start.cold import ColdBoot
from pytest_qemu.vm.start.prepared import Ahead, Prepared

#: Each strategy a launch plan can name (:attr:`LaunchPlan.start`), made from the plan.
STRATEGIES: dict[str, Callable[[LaunchPlan], StartStrategy]] = {
    ColdBoot.name: ColdBoot.for_plan,
    Clone.name: Clone.for_plan,
}


def strategy_for(plan: LaunchPlan, ahead: Ahead | None = None) -> StartStrategy:
    """The plan's strategy (clone its template, or boot); with *ahead*, adopt a VM started
    ahead if one is ready (:class:`Prepared`)."""
    strategy = STRATEGIES[plan.start](plan)
    return Prepared(ahead, strategy) if ahead is not None else strategy


__all__ = [
    "STRATEGIES",
    "Ahead",
    "Clone",
    "ColdBoot",
    "Prepared",
    "StartOutcome",
    "StartStrategy",
    "strategy_for",
]
