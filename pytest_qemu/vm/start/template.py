"""Building a VM template: boot with the guest's RAM in a new file, save the device state
with QMP ``migrate`` and ``x-ignore-shared`` (the RAM stays in the file), publish it.

Used by the :mod:`clone <pytest_qemu.vm.start.clone>` strategy on a template miss.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qemu.qmp import QMPError

from pytest_qemu.errors import CacheWarning, SnapshotWarning, VMError
from pytest_qemu.vm import readiness
from pytest_qemu.vm.snapshot import Snapshot
from pytest_qemu.vm.start.base import StartOutcome
from pytest_qemu.vm.start.cold import ColdBoot

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
        try:
            process = launcher.launch(argv)
            readiness.wait_until_ready(launcher, started + launcher.boot_timeout, resumed=False)
        except VMError:
            if launcher.process is None or launcher.process.returncode != -signal.SIGBUS:
                raise
            # The RAM file's file system filled up under the guest (another process took
            # the room measured before): boot without a template.
            launcher.stop_process()
            reason = no_room_for_template(launcher.plan.spec.memory, snapshot.ram.parent) or (
                f"the template VM died of SIGBUS: its RAM file in {snapshot.ram.parent} "
                "could not grow (is that file system full?)"
            )
            return boot_without_template(launcher, reason)
        if launcher.guest.startup_finished_command:
            launcher.commands.run_setup(launcher.guest.startup_finished_command, timeout=90)
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


#: Room for a template's device state and console log, beside its RAM file.
_TEMPLATE_EXTRA_MIB = 16


def no_room_for_template(memory_mib: int, directory: Path) -> str | None:
    """Why a template cannot be built in *directory* (None if it can).

    A template's RAM file is sparse, but the guest may touch all of it: on a file
    system without that room QEMU dies of SIGBUS. Better to boot plainly, and say why.
    """
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None  # the build itself reports an unusable directory
    free_mib = stats.f_bavail * stats.f_frsize // (1024 * 1024)
    if free_mib >= memory_mib + _TEMPLATE_EXTRA_MIB:
        return None
    return (
        f"the pytest-qemu cache is full: {directory} has {free_mib} MiB free, less than the "
        f"{memory_mib + _TEMPLATE_EXTRA_MIB} MiB a VM template of {memory_mib} MiB of memory "
        "may fill, so this VM boots instead of being cloned (slower). Free space there, or "
        "point --qemu-cache-dir (or PYTEST_QEMU_CACHE_DIR) at a larger file system"
    )


def boot_without_template(launcher: Launcher, reason: str) -> StartOutcome:
    """Boot the VM plainly because no template could be kept, and say so."""
    warnings.warn(CacheWarning(reason), stacklevel=5)
    launcher.transcript.add(f"booting without a template: {reason}")
    return ColdBoot(reason).start(launcher, time.monotonic())


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
            try:
                snapshot.publish(partial, partial_ram, console_log, disks)
                return True
            except OSError as error:
                # A full cache, say: this VM runs on without a template.
                snapshot.discard()
                status = f"publishing it in {snapshot.state.parent} failed: {error}"
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
