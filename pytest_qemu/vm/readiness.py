"""Getting a launched guest ready: its channel connected, its answer awaited, its settings
applied (at boot, or by personalising a clone), each failure a clear error."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from pytest_qemu.channels.base import ChannelClosed, ChannelError
from pytest_qemu.errors import BootTimeout, VMExited, troubleshooting
from pytest_qemu.vm.diagnose import describe

if TYPE_CHECKING:
    from pytest_qemu.vm.launcher import Launcher


def wait_until_ready(launcher: Launcher, deadline: float, resumed: bool) -> str:
    """Connect the launch's channel and wait for the guest by *deadline*; return what the
    guest reports of its boot-time setup.

    *resumed*: the guest was restored (it will not announce itself).
    """
    channel = launcher.channel
    try:
        channel.connect(time.monotonic() + launcher.socket_wait, launcher.is_running)
    except OSError as error:
        raise launcher.start_failure(
            f"cannot connect to the command channel's socket ({describe(error)})"
        ) from None
    try:
        return channel.wait_ready(deadline, resumed=resumed)
    except ChannelClosed as error:
        launcher.has_exited()  # so that the report shows QEMU's exit status
        raise VMExited(
            launcher.failure_report(f"QEMU exited while the VM was starting ({error})")
        ) from None
    except ChannelError as error:
        if launcher.has_exited():
            raise VMExited(
                launcher.failure_report(f"QEMU exited while the VM was starting ({error})")
            ) from None
        if resumed:
            # A clone: the caller boots instead, and says why in a SnapshotWarning.
            raise BootTimeout(
                launcher.failure_report(f"the restored guest did not get ready ({error})")
            ) from None
        hint = launcher.guest.boot_timeout_hint
        raise BootTimeout(
            launcher.failure_report(
                f"the guest did not come up within the boot timeout of "
                f"{launcher.boot_timeout:g} s ({error})"
                + (f"\n{hint}" if hint else "")
                + f"\n({troubleshooting('boot-timeout')})"
            )
        ) from None


def personalise(launcher: Launcher, restored: bool) -> None:
    """Give a cloned (or template-booted) guest its own clock, entropy and settings.

    *restored*: the guest was cloned, and the channel may have set the clock and
    added entropy while it waited for it.
    """
    clock = not (restored and launcher.channel.personalises_on_resume)
    command = launcher.guest.personalise_command(
        launcher.plan.setup_args, launcher.plan.spec.has_guest_devices, clock
    )
    if command:
        launcher.commands.run_setup(command, stdin=os.urandom(64))


def check_boot_setup(launcher: Launcher, status: str) -> None:
    """Fail the start if the guest's init could not apply the VM's settings at boot
    (*status*: what the guest reported, "0" or "-" when all is well)."""
    if status in ("0", "-"):
        return
    launcher.commands.run_setup(
        # A guest of the user's own may have no setup status to report.
        "[ -e /run/pytest-qemu/setup.status ] || exit 0; "
        "cat /run/pytest-qemu/setup.err >&2; exit $(cat /run/pytest-qemu/setup.status)"
    )
