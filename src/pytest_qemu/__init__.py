"""pytest-qemu: real QEMU virtual machines as pytest fixtures."""

from pytest_qemu.devices import (
    ArbitraryArgs,
    Device,
    DeviceContext,
    Disk,
    Network,
    NetworkInterface,
    P9Directory,
    ReadOnlyDirectory,
    UserNetwork,
    VirtioRandom,
)
from pytest_qemu.errors import (
    BootTimeout,
    CommandFailed,
    CommandTimeout,
    ConfigurationError,
    QemuError,
    SetupError,
    VMError,
    VMExited,
)
from pytest_qemu.vm import VM, CommandResult, Console, ConsoleTimeout, MachineSpec

__version__ = "0.1.0"

__all__ = [
    "VM",
    "ArbitraryArgs",
    "BootTimeout",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConfigurationError",
    "Console",
    "ConsoleTimeout",
    "Device",
    "DeviceContext",
    "Disk",
    "MachineSpec",
    "Network",
    "NetworkInterface",
    "P9Directory",
    "QemuError",
    "ReadOnlyDirectory",
    "SetupError",
    "UserNetwork",
    "VMError",
    "VMExited",
    "VirtioRandom",
]
