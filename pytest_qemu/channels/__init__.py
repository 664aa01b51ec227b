"""Command channels: how the host runs commands in a guest and moves files to and fro.

:class:`~pytest_qemu.channels.base.CommandChannel` is the interface; each kind
of channel is one module, registered in :data:`CHANNELS` by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qemu.channels.base import CommandChannel, CommandResult
from pytest_qemu.channels.output import CommandOutput
from pytest_qemu.errors import troubleshooting
from pytest_qemu.registry import Entry, Registry

if TYPE_CHECKING:
    from pytest_qemu.platforms.base import Platform

#: Every channel: a new one is a module beside this one and a line here. Each takes the
#: VM's socket directory and the keyword options its entry names.
CHANNELS: Registry[type[CommandChannel]] = Registry(
    "channel",
    [
        Entry(
            "agent",
            "pytest_qemu.channels.agent:AgentChannel",
            "pytest-qemu's own agent, in the default guest",
            options=("serial_bus_device", "command_root"),
        ),
        Entry(
            "qga",
            "pytest_qemu.channels.qga:GuestAgentChannel",
            "needs qemu-guest-agent in the image",
            options=("serial_bus_device",),
            boot_timeout_hint="either the image did not boot (the console below shows how far "
            "it got: nothing at all means the firmware found no boot loader), or it does not "
            "run qemu-guest-agent (Debian: `apt-get install qemu-guest-agent` in the image; or "
            f"use channel='console'); {troubleshooting('an-image-does-not-boot')}",
        ),
        Entry(
            "console",
            "pytest_qemu.channels.console:ConsoleChannel",
            "any shell on its serial console",
            options=("credentials",),
            boot_timeout_hint="the image must run a shell on its serial console, logged in or "
            "behind a login prompt that credentials=(user, password) answers; the console "
            f"tail shows it; {troubleshooting('an-image-does-not-boot')}",
        ),
        Entry(
            "ssh",
            "pytest_qemu.channels.ssh:SSHChannel",
            "an SSH server in the image, through a forwarded loopback port",
            options=("credentials", "port"),
            boot_timeout_hint="the image must run sshd on port 22 with a network interface "
            "configured by DHCP, and let the user log in with the key (credentials=(user, "
            "private_key), or cloud_init= to create the user with the session's key); the "
            f"console tail shows how far it got; {troubleshooting('an-image-does-not-boot')}",
        ),
    ],
)


def open_channel(name: str, socket_dir: Path, platform: Platform, **options: Any) -> CommandChannel:
    """A new, unconnected channel *name* for a VM of *platform*, its sockets in *socket_dir*.

    Of *options*, it gets those its entry names; a virtio-serial transport gets
    the platform's serial bus device.
    """
    entry = CHANNELS.entry(name)
    options["serial_bus_device"] = platform.virtio_device("serial")
    channel: CommandChannel = entry.load()(
        socket_dir, **{key: value for key, value in options.items() if key in entry.options}
    )
    return channel


__all__ = ["CHANNELS", "CommandChannel", "CommandOutput", "CommandResult", "open_channel"]
