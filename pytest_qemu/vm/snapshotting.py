"""Starting a VM from a snapshot (a VM template): clone one, or build one first.

The strategy behind ``snapshots=``. The first VM of a hardware layout boots as
a *template*: its RAM is a file (mapped shared), and once its agent answers its
device state is saved with QMP ``migrate`` and ``x-ignore-shared`` (the RAM
stays in the file) and the template VM is stopped. Every VM, that first one
included, is then a *clone*: QEMU maps the RAM file privately (copy-on-write),
reads the device state from a descriptor it inherits (``migrate-incoming`` of
``fd:N``, with ``x-ignore-shared``), and the guest is personalised. A clone that fails falls
back to a boot (the snapshot is discarded, so the next VM rebuilds it),
unless QEMU failed because of the user's set-up, which booting would not cure.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from qemu.qmp import QMPError

from pytest_qemu.errors import CacheWarning, ConfigurationError, VMError, VMExited
from pytest_qemu.guests.overlays import create_overlay
from pytest_qemu.sockets import listen_unix
from pytest_qemu.vm.argv import build_command_line, incoming_uri
from pytest_qemu.vm.diagnose import user_error
from pytest_qemu.vm.snapshot import Snapshot

if TYPE_CHECKING:
    from pytest_qemu.devices.base import Device
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
    """Clone *snapshot* into *vm*, building the template first if there is none."""
    if snapshot.exists() and _clone(vm, snapshot):
        return
    no_room: str | None = None
    # One process builds the template; the others wait here, then clone it.
    with snapshot.building():
        if not snapshot.exists():
            no_room = _no_room_for_template(vm.spec.memory, snapshot.ram.parent)
            if no_room is None and _build_template(vm, snapshot, started):
                # The template could not be saved, and its VM ran on as this test's VM.
                return
    if no_room is not None:
        _boot_without_template(vm, no_room)
    elif not _clone(vm, snapshot):
        # Waiting for the builder may have taken a while: give the boot its full time.
        vm._boot(time.monotonic())
        vm._personalise()


#: Room for a template's device state and console log, beside its RAM file.
_TEMPLATE_EXTRA_MIB = 16


def _no_room_for_template(memory_mib: int, directory: Path) -> str | None:
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


def _boot_without_template(vm: VM, reason: str) -> None:
    """Boot *vm* plainly because no template could be kept, and say so."""
    vm.boot_reason = reason
    warnings.warn(CacheWarning(reason), stacklevel=5)
    vm.transcript.add(f"booting without a template: {reason}")
    vm._boot(time.monotonic())
    vm._personalise()


def _build_template(vm: VM, snapshot: Snapshot, started: float) -> bool:
    """Boot a template VM with its RAM in a new file, save it and stop it.

    Returns True if the save failed (a device that blocks migration, say): the
    template VM then carries on as *vm* itself, personalised.
    """
    partial_ram = snapshot.partial_ram_path()
    plain_argv = vm.argv
    argv = build_command_line(
        vm.spec,
        vm._paths,
        channel_args=vm._channel.qemu_args(),
        setup_on_kernel_command_line=False,
        memory_file=partial_ram,
        share_memory=True,
    ).argv
    try:
        try:
            vm._launch(argv, console_prefix=None)
            vm.argv = argv
            vm._wait_until_ready(started + vm.boot_timeout, resumed=False)
        except VMError:
            if vm.returncode != -signal.SIGBUS:
                raise
            # The RAM file's file system filled up under the guest (another process took
            # the room measured before): boot without a template.
            vm._stop_process()
            vm.argv = plain_argv
            reason = _no_room_for_template(vm.spec.memory, snapshot.ram.parent) or (
                f"the template VM died of SIGBUS: its RAM file in {snapshot.ram.parent} "
                "could not grow (is that file system full?)"
            )
            _boot_without_template(vm, reason)
            return True
        vm._channel.settle(started + vm.boot_timeout)
        if _save(vm, snapshot, partial_ram, _template_files(vm)):
            vm._stop_process()
            vm.built_template = True
            vm.transcript.add(f"built template {snapshot.state.name}")
            return False
        vm.boot_reason = "the template could not be saved (see the SnapshotWarning)"
        # Unlinked, the file stays mapped by this VM alone.
        partial_ram.unlink(missing_ok=True)
        vm._personalise()
        return True
    finally:
        partial_ram.unlink(missing_ok=True)


def _clone(vm: VM, snapshot: Snapshot) -> bool:
    """Clone *snapshot* and personalise it; on failure warn, clean up and return False.

    A failure caused by the user's set-up (a disk another VM holds) is raised
    instead: booting would fail the same way, and the snapshot is fine.
    """
    # Each disk the template wrote to: a new overlay over its frozen copy, so that the
    # clone's disks match the memory it starts from.
    switched: list[tuple[Device, Path]] = []
    try:
        for index, device in enumerate(
            device for device in vm.spec.devices if device.template_file() is not None
        ):
            original = device.template_file()
            assert original is not None
            overlay = vm.log_dir / f"clone-disk{index}.qcow2"
            overlay.unlink(missing_ok=True)
            create_overlay(snapshot.disk(index), "qcow2", overlay)
            device.use_template_file(snapshot.disk(index), overlay)
            switched.append((device, original))
    except ConfigurationError as error:
        _give_up_clone(vm, snapshot, switched, error, "")
        return False
    resumed = threading.Event()
    argv: list[str] = []
    try:
        # QEMU inherits the saved state and its QMP socket: it reads the state as it
        # starts, and the QMP connection needs no retries.
        with snapshot.state.open("rb") as state, listen_unix(vm._paths.qmp_socket) as listener:
            argv = build_command_line(
                vm.spec,
                vm._paths,
                channel_args=vm._channel.qemu_args(),
                setup_on_kernel_command_line=False,
                memory_file=snapshot.ram,
                share_memory=False,
                incoming_fd=state.fileno(),
                qmp_listener_fd=listener.fileno(),
            ).argv
            vm._launch(
                argv,
                console_prefix=snapshot.console,
                pass_fds=(state.fileno(), listener.fileno()),
                events={"RESUME": lambda _name, _data: resumed.set()},
            )
            deadline = time.monotonic() + min(vm.boot_timeout, _RESTORE_TIMEOUT)
            launched = vm._launched
            assert launched is not None
            try:
                launched.qmp.execute("migrate-set-capabilities", _IGNORE_SHARED, 10)
                launched.qmp.execute("migrate-incoming", {"uri": incoming_uri(state.fileno())}, 10)
            except (QMPError, OSError, TimeoutError) as error:
                raise _RestoreFailed(f"QEMU refused the saved state ({error})") from None
        _wait_until_restored(vm, resumed, deadline)
        vm._wait_until_ready(deadline, resumed=True)
    except (_RestoreFailed, VMError, OSError) as error:
        stderr = vm.stderr_tail()
        vm._stop_process()
        if (explanation := user_error(stderr)) is not None:
            raise VMExited(
                vm.failure_report(f"QEMU refused to start: {explanation}", argv)
            ) from None
        _give_up_clone(vm, snapshot, switched, error, stderr)
        return False
    vm.argv = argv
    vm.restored_from = snapshot.state
    snapshot.mark_used()
    vm._personalise()
    return True


def _give_up_clone(
    vm: VM,
    snapshot: Snapshot,
    switched: list[tuple[Device, Path]],
    error: Exception,
    stderr: str,
) -> None:
    """Discard *snapshot* and put the devices back on their own files, to boot instead."""
    for device, original in switched:
        device.use_template_file(snapshot.disk(0), original)
    snapshot.discard()
    vm.boot_reason = f"cloning the template failed: {str(error).splitlines()[0]}"
    warnings.warn(
        SnapshotWarning(
            f"cloning snapshot {snapshot.state} failed, booting instead: "
            f"{str(error).splitlines()[0]}" + (f"\nQEMU stderr:\n{stderr}" if stderr else "")
        ),
        stacklevel=6,
    )


def _wait_until_restored(vm: VM, resumed: threading.Event, deadline: float) -> None:
    """Wait until the restored guest runs (QMP's RESUME event); fail at once if it cannot.

    The command channel is not used before: bytes sent to a port whose device is
    still being loaded may be lost.
    """
    launched = vm._launched
    assert launched is not None
    try:
        # RESUME may have come before the QMP session began.
        status = launched.qmp.execute("query-status", None, 10)["status"]
    except (QMPError, OSError, TimeoutError) as error:
        raise _RestoreFailed(f"QEMU stopped answering in the restore ({error})") from None
    if status == "running":
        return
    if status not in _RESTORING_STATES:
        raise _RestoreFailed(f"the restored VM is {status!r}, not running")
    while not resumed.wait(0.02):
        if launched.process.poll() is not None:
            raise _RestoreFailed("QEMU exited while loading the saved state")
        if time.monotonic() > deadline:
            raise _RestoreFailed("the snapshot was not restored in time")


def _template_files(vm: VM) -> list[Path]:
    """The files the template VM's devices wrote guest state to (disk overlays)."""
    return [path for device in vm.spec.devices if (path := device.template_file()) is not None]


def _save(vm: VM, snapshot: Snapshot, partial_ram: Path, disks: list[Path]) -> bool:
    """Save the template VM *vm*'s device state and publish the template; True on success."""
    assert vm._launched is not None
    qmp = vm._launched.qmp
    partial = snapshot.partial_path()
    status = "not started"
    try:
        qmp.execute("migrate-set-capabilities", _IGNORE_SHARED, 30)
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
                snapshot.publish(partial, partial_ram, vm.console_log, disks)
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


#: Leave RAM in shared memory out of the migration stream: it stays in the template's file.
_IGNORE_SHARED: dict[str, object] = {
    "capabilities": [{"capability": "x-ignore-shared", "state": True}]
}
