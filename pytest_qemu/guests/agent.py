"""Guests that run pytest-qemu's own agent: the base of the default guest, your own boot
files and the host's userland, and the guest of a VM made from a bare
:class:`~pytest_qemu.vm.argv.MachineSpec` (its kernel and initramfs given there)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.channels import open_channel
from pytest_qemu.channels.base import CommandChannel
from pytest_qemu.devices.base import Device
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.guests.base import BootFiles, Guest
from pytest_qemu.platforms import Platform


class AgentGuest(Guest):
    """A guest of *platform* reached through pytest-qemu's agent; its commands run
    chrooted into :attr:`command_root` ("": the guest's own root)."""

    command_root = ""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        raise ConfigurationError(
            "this guest boots the kernel and initramfs of its MachineSpec: give them there"
        )

    def channel(self, socket_dir: Path) -> CommandChannel:
        return open_channel("agent", socket_dir, self.platform, command_root=self.command_root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(platform={self.platform.name!r})"
