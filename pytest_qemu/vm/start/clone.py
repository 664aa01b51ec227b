"""Clone: start the VM from a template (a saved, booted guest), building it on a miss.

The first VM of a hardware layout boots as a *template* (:mod:`.template`).
Every VM, that first one included, is then a *clone*: QEMU maps the
template's RAM file privately (copy-on-write), reads the device state from a
descriptor it inherits (``migrate-incoming`` of ``fd:N``, with
``x-ignore-shared``), and the guest is personalised. A clone that fails falls
back to a cold boot (the template is discarded, so the next VM rebuilds it),
unless QEMU failed because of the user's set-up, which booting would not cure.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from qemu.qmp import QMPError

from pytest_qemu.devices.base import Device
from pytest_qemu.errors import ConfigurationError, SnapshotWarning, VMError, VMExited
from pytest_qemu.guests.overlays import create_overlay, recreate_overlay
from pytest_qemu.sockets import listen_unix
from pytest_qemu.vm import readiness
from pytest_qemu.vm.argv import incoming_uri
from pytest_qemu.vm.diagnose import user_error
from pytest_qemu.vm.process import QemuProcess
from pytest_qemu.vm.snapshot import Snapshot
from pytest_qemu.vm.start.base import StartOutcome, StartStrategy
from pytest_qemu.vm.start.cold import ColdBoot
from pytest_qemu.vm.start.template import (
    IGNORE_SHARED,
    boot_without_template,
    build_template,
    no_room_for_template,
)

if TYPE_CHECKING:
    from pytest_qemu.vm.launcher import Launcher
    from pytest_qemu.vm.plan import LaunchPlan

#: A restore answers in well under a second; past this, boot instead.
_RESTORE_TIMEOUT = 30.0
#: How often a process builds a template whose first clone fails before it boots instead.
_BUILDS = 2
#: QMP run states of a restore still under way; any other but "running" means it failed.
_RESTORING_STATES = ("inmigrate", "prelaunch", "restore-vm", "finish-migrate")


class _RestoreFailed(Exception):
    """A restore did not work; the VM boots instead (never seen by users)."""


class Clone(StartStrategy):
    """Clone *snapshot*, building the template first if there is none."""

    name = "clone"

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    @classmethod
    def for_plan(cls, plan: LaunchPlan) -> Clone:
        """Clone a VM of *plan* from its template."""
        if plan.snapshot is None:
            raise ValueError(f"this VM cannot be cloned: {plan.boot_reason}")
        return cls(plan.snapshot)

    def start(self, launcher: Launcher, started: float) -> StartOutcome:
        snapshot = self.snapshot
        if snapshot.exists():
            cloned = _clone(launcher, snapshot)
            if isinstance(cloned, StartOutcome):
                return cloned
        built = False
        failure = "the template could not be cloned"
        for attempt in range(_BUILDS):
            no_room: str | None = None
            # One process builds the template; the others wait here, then clone it.
            with snapshot.building():
                if not snapshot.exists():
                    no_room = no_room_for_template(launcher.plan.spec.memory, snapshot.ram.parent)
                    if no_room is None:
                        unsaved = build_template(
                            launcher, snapshot, time.monotonic() if attempt else started
                        )
                        if unsaved is not None:
                            # The template could not be saved (or kept), and its VM ran
                            # on as this one, or the VM booted without one.
                            return unsaved
                        built = True
            if no_room is not None:
                return boot_without_template(launcher, no_room)
            cloned = _clone(launcher, snapshot)
            if isinstance(cloned, StartOutcome):
                return StartOutcome(cloned.argv, cloned.restored_from, built_template=built)
            failure = cloned
            if not built:
                break
            # The first clone of a template this process has just built failed: saved at
            # an unlucky moment (QEMU 7.2 can drop an interrupt pending at the save, and
            # the clones go deaf). Another save is very likely fine; then boot.
            launcher.transcript.add("building the template again")
        # Waiting for the builder may have taken a while: give the boot its full time.
        booted = ColdBoot(failure).start(launcher, time.monotonic())
        return dataclasses.replace(booted, built_template=built)


def _clone(launcher: Launcher, snapshot: Snapshot) -> StartOutcome | str:
    """Clone *snapshot* and personalise it; on failure warn, clean up and return why.

    A failure caused by the user's set-up (a disk another VM holds) is raised
    instead: booting would fail the same way, and the snapshot is fine.
    """
    # Each disk the template wrote to: a new overlay over its frozen copy, so that the
    # clone's disks match the memory it starts from.
    switched: list[tuple[Device, Path]] = []
    try:
        for index, device in enumerate(
            device for device in launcher.plan.spec.devices if device.template_file() is not None
        ):
            original = device.template_file()
            assert original is not None
            overlay = launcher.files.log_dir / f"clone-disk{index}.qcow2"
            overlay.unlink(missing_ok=True)
            create_overlay(snapshot.disk(index), "qcow2", overlay)
            device.use_template_file(overlay)
            switched.append((device, original))
    except ConfigurationError as error:
        return _give_up_clone(snapshot, switched, error, "")
    resumed = threading.Event()
    argv: list[str] = []
    try:
        # QEMU inherits the saved state and its QMP socket: it reads the state as it
        # starts, and the QMP connection needs no retries.
        paths = launcher.files.paths
        with snapshot.state.open("rb") as state, listen_unix(paths.qmp_socket) as listener:
            argv = launcher.plan.template_argv(
                paths,
                memory_file=snapshot.ram,
                share_memory=False,
                incoming_fd=state.fileno(),
                qmp_listener_fd=listener.fileno(),
            )
            process = launcher.launch(
                argv,
                console_prefix=snapshot.console,
                pass_fds=(state.fileno(), listener.fileno()),
                events={"RESUME": lambda _name, _data: resumed.set()},
            )
            deadline = time.monotonic() + min(launcher.boot_timeout, _RESTORE_TIMEOUT)
            try:
                process.execute("migrate-set-capabilities", IGNORE_SHARED, 10)
                process.execute("migrate-incoming", {"uri": incoming_uri(state.fileno())}, 10)
            except (QMPError, OSError, TimeoutError) as error:
                raise _RestoreFailed(f"QEMU refused the saved state ({error})") from None
        _wait_until_restored(process, resumed, deadline)
        readiness.wait_until_ready(launcher, deadline, resumed=True)
    except (_RestoreFailed, VMError, OSError) as error:
        stderr = launcher.stderr_tail()
        launcher.stop_process()
        if (explanation := user_error(stderr)) is not None:
            raise VMExited(
                launcher.failure_report(f"QEMU refused to start: {explanation}", argv)
            ) from None
        return _give_up_clone(snapshot, switched, error, stderr)
    snapshot.mark_used()
    readiness.personalise(launcher, restored=True)
    return StartOutcome(argv, restored_from=snapshot.state)


def _give_up_clone(
    snapshot: Snapshot, switched: list[tuple[Device, Path]], error: Exception, stderr: str
) -> str:
    """Discard *snapshot* and put the devices back on their own files, to boot instead;
    return why."""
    for index, (device, original) in enumerate(switched):
        if not original.exists():
            # This process built the template: its overlay was frozen into it, and goes
            # with it. The boot gets a new one over the same base.
            recreate_overlay(snapshot.disk(index), original)
        device.use_template_file(original)
    snapshot.discard()
    reason = str(error).splitlines()[0]
    warnings.warn(
        SnapshotWarning(
            f"cloning snapshot {snapshot.state} failed, booting instead: {reason}"
            + (f"\nQEMU stderr:\n{stderr}" if stderr else "")
        ),
        stacklevel=6,
    )
    return f"cloning the template failed: {reason}"


def _wait_until_restored(process: QemuProcess, resumed: threading.Event, deadline: float) -> None:
    """Wait until the restored guest runs (QMP's RESUME event); fail at once if it cannot.

    The command channel is not used before: bytes sent to a port whose device is
    still being loaded may be lost.
    """
    try:
        # RESUME may have come before the QMP session began.
        status = process.execute("query-status", None, 10)["status"]
    except (QMPError, OSError, TimeoutError) as error:
        raise _RestoreFailed(f"QEMU stopped answering in the restore ({error})") from None
    if status == "running":
        return
    if status not in _RESTORING_STATES:
        raise _RestoreFailed(f"the restored VM is {status!r}, not running")
    while not resumed.wait(0.02):
        if not process.is_running():
            raise _RestoreFailed("QEMU exited while loading the saved state")
        if time.monotonic() > deadline:
            raise _RestoreFailed("the snapshot was not restored in time")
