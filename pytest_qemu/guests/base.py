"""The :class:`Guest` interface: what a VM boots, how it is reached and made its own.

A guest turns a VM's devices into boot files (kernel, initramfs, kernel
arguments), chooses the command channel that reaches it, and says how a VM
restored from a snapshot is personalised. The default busybox guest, the
host-userland guest and a user's own kernel and initramfs are implementations;
each is a module beside this one.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.channels.base import CommandChannel
from pytest_qemu.channels.shell import set_clock_line
from pytest_qemu.devices.base import Device
from pytest_qemu.platforms import Platform


@dataclass(frozen=True)
class BootFiles:
    """What QEMU boots: a kernel, an optional initramfs, and the guest's kernel arguments."""

    #: None: boot through the firmware and the disk's own boot loader.
    kernel: Path | None
    initramfs: Path | None
    kernel_args: tuple[str, ...]


class Guest(abc.ABC):
    """A kind of guest system. One object serves every VM of that kind in a run."""

    #: The architecture this guest runs on.
    platform: Platform
    #: Whether the guest applies ``pytest_qemu.*`` settings (mounts, addresses) from the
    #: kernel command line when it boots; if not, they are applied through the channel.
    reads_setup_from_kernel_command_line: bool = True

    #: A shell command that an interactive shell on the console starts with ("": none).
    console_shell: str = ""

    #: A shell command that returns once the guest's own start-up has finished (its init
    #: starting services), run before the VM is saved as a template, so that clones do
    #: not carry that work on ("": the guest is quiet once its channel answers).
    startup_finished_command: str = ""

    @property
    def boot_timeout_hint(self) -> str:
        """What to check when the guest does not answer within the boot timeout."""
        return ""

    @property
    def debug_symbols(self) -> Path | None:
        """A kernel image with debug symbols for gdb, if one is installed."""
        return None

    @property
    def default_cwd(self) -> str:
        """Where commands run when they name no directory ("": the channel's default)."""
        return ""

    @abc.abstractmethod
    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        """The files to boot for a VM with *devices* (built and cached as needed)."""

    @abc.abstractmethod
    def channel(self, socket_dir: Path) -> CommandChannel:
        """A new, unconnected command channel for one VM, its sockets in *socket_dir*."""

    def devices(self, requested: Sequence[Device], workdir: Path) -> list[Device]:
        """The VM's devices: *requested* plus any this kind of guest always needs.

        *workdir* is the VM's own directory, for per-VM files (disk overlays).
        """
        return list(requested)

    def personalise_command(
        self, setup_args: Sequence[str], with_devices: bool, clock_and_entropy: bool = True
    ) -> str:
        """A shell command that makes a VM restored from a snapshot this VM's own
        ("" if there is nothing left to do)."""
        return personalise_command(setup_args, with_devices, clock_and_entropy)

    @property
    def snapshot_key_parts(self) -> tuple[str, ...]:
        """What, besides the boot files and devices, makes this guest's snapshots differ."""
        return (type(self).__name__,)


def personalise_command(
    setup_args: Sequence[str], with_devices: bool, clock_and_entropy: bool = True
) -> str:
    """The default guest's personalisation, as a shell command for its agent.

    With *clock_and_entropy* it sets the clock and adds entropy (sent on its
    stdin); with devices, it drops cached disk contents, rereads partition
    tables and applies *setup_args* (mounts, addresses) with the guest's setup
    script. "" when there is nothing to do.
    """
    steps = []
    if clock_and_entropy:
        steps.append(f"{set_clock_line()}; head -c 64 >/dev/urandom")
    if with_devices:
        setup = " ".join(shlex.quote(argument) for argument in setup_args)
        # Disks were probed when the template was saved: forget what the guest cached
        # of them and read their partition tables again.
        steps.append(
            'for disk in /sys/block/vd*; do [ -e "$disk" ] || break;'
            " echo 3 >/proc/sys/vm/drop_caches; blockdev --rereadpt /dev/${disk##*/};"
            f" done 2>/dev/null; /etc/pytest-qemu/setup {setup}"
        )
    return "; ".join(steps)
