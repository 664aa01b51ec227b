"""Starting a VM from a snapshot: restore one, or boot, save and share one.

The strategy behind ``snapshots=``: the first VM of a hardware layout boots
and is saved with QMP ``migrate``; every later one is restored with
``-incoming`` and personalised. A restore that fails falls back to a boot
(the snapshot is discarded, so the next VM rebuilds it), unless QEMU failed
because of the user's set-up, which booting would not cure.
"""

from __future__ import annotations

import contextlib
import shlex
import time
import warnings
from typing import TYPE_CHECKING

from qemu.qmp import QMPError

from pytest_qemu.errors import VMError, VMExited
from pytest_qemu.vm.argv import build_command_line
from pytest_qemu.vm.diagnose import user_error
from pytest_qemu.vm.snapshot import Snapshot

if TYPE_CHECKING:
    from pytest_qemu.vm.machine import VM

#: A restore answers in well under a second; past this, boot instead.
_RESTORE_TIMEOUT = 30.0
_SAVE_TIMEOUT = 60.0
#: QMP run states of a restore still under way; any other but "running" means it failed.
_RESTORING_STATES = ("inmigrate", "prelaunch", "restore-vm", "finish-migrate")


class SnapshotWarning(UserWarning):
    """A snapshot could not be saved or restored; the VM booted instead."""


class _RestoreFailed(Exception):
    """A restore did not work; the VM boots instead (never seen by users)."""


def start_from_snapshot(vm: VM, snapshot: Snapshot, started: float) -> None:
    """Restore *snapshot* into *vm*, or boot *vm* and save it as *snapshot*."""
    if snapshot.exists() and _restore(vm, snapshot):
        return
    # One process boots and saves; the others wait here, then restore what it saved.
    with snapshot.building():
        built_here = not snapshot.exists()
        if built_here:
            vm._boot(started)
            _save(vm, snapshot)
    if built_here:
        vm._personalise()
    elif not _restore(vm, snapshot):
        # Waiting for the builder may have taken a while: give the boot its full time.
        vm._boot(time.monotonic())
        vm._personalise()


def _restore(vm: VM, snapshot: Snapshot) -> bool:
    """Restore *snapshot* and personalise it; on failure warn, clean up and return False.

    A failure caused by the user's set-up (a disk another VM holds) is raised
    instead: booting would fail the same way, and the snapshot is fine.
    """
    argv = build_command_line(
        vm.spec,
        vm._paths,
        channel_args=vm._channel.qemu_args(),
        setup_on_kernel_command_line=False,
        incoming=snapshot.state,
    ).argv
    try:
        vm._launch(argv, console_prefix=snapshot.console)
        deadline = time.monotonic() + min(vm.boot_timeout, _RESTORE_TIMEOUT)
        _wait_until_restored(vm, deadline)
        vm._wait_until_ready(deadline, resumed=True)
    except (_RestoreFailed, VMError, OSError) as error:
        stderr = vm._stderr_tail()
        vm._stop_process()
        if (explanation := user_error(stderr)) is not None:
            raise VMExited(
                vm.failure_report(f"QEMU refused to start: {explanation}", argv)
            ) from None
        snapshot.discard()
        warnings.warn(
            SnapshotWarning(
                f"restoring snapshot {snapshot.state} failed, booting instead: "
                f"{str(error).splitlines()[0]}" + (f"\nQEMU stderr:\n{stderr}" if stderr else "")
            ),
            stacklevel=5,
        )
        return False
    vm.argv = argv
    vm.restored_from = snapshot.state
    snapshot.mark_used()
    vm._personalise()
    return True


def _wait_until_restored(vm: VM, deadline: float) -> None:
    """Wait for QMP to report the restored guest running; fail at once if it cannot."""
    launched = vm._launched
    assert launched is not None
    while True:
        try:
            status = launched.qmp.execute("query-status", None, 10)["status"]
        except (QMPError, OSError, TimeoutError) as error:
            raise _RestoreFailed(f"QEMU stopped answering in the restore ({error})") from None
        if status == "running":
            return
        if status not in _RESTORING_STATES:
            raise _RestoreFailed(f"the restored VM is {status!r}, not running")
        if time.monotonic() > deadline or launched.process.poll() is not None:
            raise _RestoreFailed(f"the snapshot was not restored in time (state {status!r})")
        time.sleep(0.005)


def _save(vm: VM, snapshot: Snapshot) -> None:
    """Save *vm*, just booted, as *snapshot*, then let it run on."""
    assert vm._launched is not None
    qmp = vm._launched.qmp
    partial = snapshot.partial_path()
    status = "not started"
    try:
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
            time.sleep(0.02)
        # After a migration the source VM is paused; this VM carries on as the test's VM.
        qmp.execute("cont", None, 30)
        if status == "completed":
            snapshot.publish(partial, vm.console_log)
    except QMPError as error:
        # e.g. a device from qemu_args that blocks migration: this VM simply runs on.
        status = str(error)
        with contextlib.suppress(QMPError):
            qmp.execute("cont", None, 30)
    finally:
        # Also on Ctrl-C: a half-written state must not stay in the cache.
        partial.unlink(missing_ok=True)
    if status != "completed":
        warnings.warn(SnapshotWarning(f"saving a snapshot failed ({status})"), stacklevel=5)
