"""Building a VM template: boot with the guest's RAM in a new file, save the device state
with QMP ``migrate`` and ``x-ignore-shared`` (the RAM stays in the file), publish it.

Used by the :mod:`clone <pytest_qemu.vm.start.clone>` strategy on a template miss.
"""

from __future__ import annotations

import contextlib
import shlex
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qemu.qmp import QMPError

from pytest_qemu.errors import SnapshotWarning
from pytest_qemu.vm import readiness
from pytest_qemu.vm.snapshot import Snapshot
from pytest_qemu.vm.start.base import StartOutcome

if TYPE_CHECKING:
    from pytest_qemu.vm.launcher import Launcher

_SAVE_TIMEOUT = 60.0

#: Leave RAM in shared memory out of the migration stream: it stays in the template's file.
IGNORE_SHARED: dict[str, object] = {
    "capabilities": [{"capability": "x-ignore-shared", "state": True}]
}


class QMPExecutor(Protocol):
    """What saving needs of a QEMU process: QMP commands."""

    def execute(self, command: str, arguments: dict[str, object] | None, timeout: float) -> Any:
        """Run a QMP command."""


def build_template(launcher: Launcher, snapshot: Snapshot, started: float) -> StartOutcome | None:
    """Boot a template VM with its RAM in a new file, save it and stop it (None).

    If the save fails (a device that blocks migration, say), the template VM
    carries on as the VM itself, personalised, and that is the outcome.
    """
    partial_ram = snapshot.partial_ram_path()
    argv = launcher.plan.template_argv(
        launcher.files.paths, memory_file=partial_ram, share_memory=True
    )
    try:
        process = launcher.launch(argv)
        readiness.wait_until_ready(launcher, started + launcher.boot_timeout, resumed=False)
        launcher.channel.settle(started + launcher.boot_timeout)
        disks = [path for device in launcher.plan.spec.devices if (path := device.template_file())]
        if save(process, snapshot, partial_ram, launcher.files.paths.console_log, disks):
            launcher.stop_process()
            launcher.transcript.add(f"built template {snapshot.state.name}")
            return None
        # Unlinked, the file stays mapped by this VM alone.
        partial_ram.unlink(missing_ok=True)
        readiness.personalise(launcher, restored=False)
        return StartOutcome(
            argv, boot_reason="the template could not be saved (see the SnapshotWarning)"
        )
    finally:
        partial_ram.unlink(missing_ok=True)


def save(
    qmp: QMPExecutor, snapshot: Snapshot, partial_ram: Path, console_log: Path, disks: list[Path]
) -> bool:
    """Save the template VM's device state and publish the template; True on success.

    *disks* are the files its devices wrote guest state to (disk overlays).
    """
    partial = snapshot.partial_path()
    status = "not started"
    try:
        qmp.execute("migrate-set-capabilities", IGNORE_SHARED, 30)
        qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(partial))}"}, 30)
        deadline = time.monotonic() + _SAVE_TIMEOUT
        while (status := qmp.execute("query-migrate", None, 30).get("status")) not in (
            "completed",
            "failed",
            "cancelled",
        ):
            if time.monotonic() > deadline:
                qmp.execute("migrate_cancel", None, 30)
                status = "timed out"
                break
            time.sleep(0.005)
        if status == "completed":
            snapshot.publish(partial, partial_ram, console_log, disks)
            return True
        qmp.execute("cont", None, 30)
    except QMPError as error:
        # e.g. a device from qemu_args that blocks migration: this VM simply runs on.
        status = str(error)
        with contextlib.suppress(QMPError):
            qmp.execute("cont", None, 30)
    finally:
        # Also on Ctrl-C: a half-written state must not stay in the cache.
        partial.unlink(missing_ok=True)
    warnings.warn(SnapshotWarning(f"saving a snapshot failed ({status})"), stacklevel=5)
    return False
