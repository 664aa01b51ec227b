"""Command channels: how the host runs commands in a guest and moves files to and fro.

:class:`~pytest_qemu.channels.base.CommandChannel` is the interface; each kind
of channel is one module (``agent``: the default guest's own agent).
"""

from pytest_qemu.channels.base import CommandChannel, CommandResult
from pytest_qemu.channels.output import CommandOutput

__all__ = ["CommandChannel", "CommandOutput", "CommandResult"]
