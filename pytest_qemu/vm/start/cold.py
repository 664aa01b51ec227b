"""Cold boot: launch QEMU on the boot command line and wait for the guest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_qemu.vm import readiness
from pytest_qemu.vm.start.base import StartOutcome, StartStrategy

if TYPE_CHECKING:
    from pytest_qemu.vm.launcher import Launcher
    from pytest_qemu.vm.plan import LaunchPlan


class ColdBoot(StartStrategy):
    """Boot the guest; its settings come from the kernel command line, or are applied
    through the channel once it answers (a guest that cannot read them at boot, or the
    fallback of a clone)."""

    name = "cold boot"

    def __init__(self, reason: str | None) -> None:
        #: Why the VM boots instead of being cloned.
        self.reason = reason

    @classmethod
    def for_plan(cls, plan: LaunchPlan) -> ColdBoot:
        """Boot a VM of *plan*, for the reason it gives."""
        return cls(plan.boot_reason)

    def start(self, launcher: Launcher, started: float) -> StartOutcome:
        argv = list(launcher.plan.boot.argv)
        launcher.launch(argv)
        status = readiness.wait_until_ready(launcher, started + launcher.boot_timeout, False)
        if launcher.plan.setup_on_kernel_command_line:
            readiness.check_boot_setup(launcher, status)
        else:
            readiness.personalise(launcher, restored=False)
        return StartOutcome(argv, boot_reason=self.reason)
