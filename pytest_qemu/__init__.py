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
from pytest_qemu.vm.machine import GuestSetupError, SnapshotWarning

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
    "GuestSetupError",
    "MachineSpec",
    "Network",
    "NetworkInterface",
    "P9Directory",
    "QemuError",
    "ReadOnlyDirectory",
    "SetupError",
    "SnapshotWarning",
    "UserNetwork",
    "VMError",
    "VMExited",
    "VirtioRandom",
]
