"""A VM's launch plan: its command lines, and whether and from which template it is cloned.

Made once when the VM is created, before QEMU starts: the boot command line,
the snapshot layout of its devices, the template key, and, for a VM that
boots, why it cannot be cloned. Reads only file fingerprints.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.guests.base import Guest
from pytest_qemu.vm.argv import (
    BuiltCommandLine,
    MachineSpec,
    RuntimePaths,
    SnapshotLayout,
    build_command_line,
    snapshot_layout,
)
from pytest_qemu.vm.snapshot import Snapshot, SnapshotStore, snapshot_key


@dataclass(frozen=True)
class LaunchPlan:
    """How one VM is launched (see the module's docstring)."""

    spec: MachineSpec
    #: The command channel's own QEMU arguments (its transport).
    channel_args: tuple[str, ...]
    #: What the guest sees of the devices (worked out once, for every command line).
    layout: SnapshotLayout
    #: The command line of a boot, with its kernel and setup arguments.
    boot: BuiltCommandLine
    #: Whether the guest's settings (mounts, addresses) are on the boot's kernel command
    #: line; if not, they are applied through the channel once the guest answers.
    setup_on_kernel_command_line: bool
    #: The template this VM is cloned from (built on a miss); None if it boots.
    snapshot: Snapshot | None
    #: Why this VM boots instead of being cloned (None if it is cloned).
    boot_reason: str | None

    @property
    def start(self) -> str:
        """The name of the strategy that starts a VM of this plan (see
        :data:`~pytest_qemu.vm.start.STRATEGIES`): a clone if it has a template."""
        return "cold boot" if self.snapshot is None else "clone"

    @property
    def setup_args(self) -> list[str]:
        """The ``pytest_qemu.*`` settings the guest applies (mounts, addresses)."""
        return self.boot.setup_args

    def template_argv(
        self,
        paths: RuntimePaths,
        *,
        memory_file: Path,
        share_memory: bool,
        incoming_fd: int | None = None,
        qmp_listener_fd: int | None = None,
    ) -> list[str]:
        """The command line of a template being built (*share_memory*) or of a clone
        (see :func:`~pytest_qemu.vm.argv.build_command_line`): no settings at boot."""
        return build_command_line(
            self.spec,
            paths,
            channel_args=self.channel_args,
            setup_on_kernel_command_line=False,
            memory_file=memory_file,
            share_memory=share_memory,
            incoming_fd=incoming_fd,
            qmp_listener_fd=qmp_listener_fd,
            layout=self.layout,
        ).argv


def plan_launch(
    spec: MachineSpec,
    paths: RuntimePaths,
    channel_args: Sequence[str],
    guest: Guest,
    snapshots: SnapshotStore | None,
) -> LaunchPlan:
    """The launch plan of a VM of *spec* for *guest*; cloned from *snapshots* if it can be."""
    layout = snapshot_layout(spec.devices, spec.platform)
    blocker = spec.platform.clone_blocker_for(spec.has_guest_devices)
    clonable = snapshots is not None and layout.parts is not None and blocker is None
    setup_at_boot = not clonable and guest.reads_setup_from_kernel_command_line
    boot = build_command_line(
        spec,
        paths,
        channel_args=channel_args,
        setup_on_kernel_command_line=setup_at_boot,
        layout=layout,
    )
    snapshot = None
    reason = None
    if snapshots is None:
        reason = "snapshots are off for this VM"
    elif blocker is not None:
        reason = blocker
    elif layout.parts is None:
        reason = (
            f"{layout.blocker!r} cannot be carried into a clone (its guest-visible state is "
            "not known before the VM starts)"
        )
    else:
        qemu = Path(shutil.which(spec.qemu_binary) or spec.qemu_binary)
        key_args = [*boot.kernel_args, *guest.snapshot_key_parts]
        snapshot = snapshots.get(snapshot_key(spec, qemu, key_args, layout.parts))
    return LaunchPlan(spec, tuple(channel_args), layout, boot, setup_at_boot, snapshot, reason)
