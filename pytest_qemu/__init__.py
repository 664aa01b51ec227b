"""pytest-qemu: real QEMU virtual machines as pytest fixtures."""

from pytest_qemu.allocation import AllocationError
from pytest_qemu.channels import CommandOutput
from pytest_qemu.devices import (
    ArbitraryArgs,
    Device,
    DeviceContext,
    Disk,
    HostRoot,
    Network,
    NetworkInterface,
    P9Directory,
    ReadOnlyDirectory,
    UserNetwork,
    VirtioRandom,
)
from pytest_qemu.devices.options import option_string
from pytest_qemu.errors import (
    AgentDied,
    BootTimeout,
    CommandFailed,
    CommandRefused,
    CommandTimeout,
    ConfigurationError,
    GuestKernelTrouble,
    GuestUnresponsive,
    QemuError,
    SetupError,
    TransferFailed,
    VMError,
    VMExited,
)
from pytest_qemu.platforms import Platform
from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.vm import VM, CommandResult, Console, ConsoleTimeout, MachineSpec
from pytest_qemu.vm.machine import GuestSetupError
from pytest_qemu.vm.snapshotting import SnapshotWarning

__version__ = "0.1.0"

__all__ = [
    "VM",
    "AgentDied",
    "AllocationError",
    "ArbitraryArgs",
    "BootTimeout",
    "CommandFailed",
    "CommandOutput",
    "CommandRefused",
    "CommandResult",
    "CommandTimeout",
    "ConfigurationError",
    "Console",
    "ConsoleTimeout",
    "Device",
    "DeviceContext",
    "Disk",
    "GuestKernelTrouble",
    "GuestSetupError",
    "GuestUnresponsive",
    "HostRoot",
    "MachineSpec",
    "Network",
    "NetworkInterface",
    "P9Directory",
    "Platform",
    "QemuError",
    "QemuSettings",
    "ReadOnlyDirectory",
    "SetupError",
    "SnapshotWarning",
    "TransferFailed",
    "UserNetwork",
    "VMError",
    "VMExited",
    "VMFactory",
    "VirtioRandom",
    "option_string",
]
