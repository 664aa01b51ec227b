"""pytest-qemu: real QEMU virtual machines as pytest fixtures.

The names below are imported on first use: pytest loads this package for every run
in an environment where it is installed, also runs that start no VM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_qemu._lazy import lazy_exports

if TYPE_CHECKING:
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
        AllocationError,
        BootTimeout,
        CacheFull,
        CacheWarning,
        CommandFailed,
        CommandRefused,
        CommandTimeout,
        ConfigurationError,
        ConsoleTimeout,
        GuestKernelTrouble,
        GuestSetupError,
        GuestUnresponsive,
        QemuError,
        QemuWarning,
        SetupError,
        SnapshotWarning,
        TransferFailed,
        VMError,
        VMExited,
    )
    from pytest_qemu.guests.cloudinit import CloudInit
    from pytest_qemu.platforms import Platform, architectures
    from pytest_qemu.plugin.factory import VMFactory
    from pytest_qemu.plugin.options import QemuSettings
    from pytest_qemu.vm import VM, CommandResult, Console, MachineSpec


_EXPORTS = {
    "AllocationError": "pytest_qemu.errors",
    "CommandOutput": "pytest_qemu.channels",
    "ArbitraryArgs": "pytest_qemu.devices",
    "Device": "pytest_qemu.devices",
    "DeviceContext": "pytest_qemu.devices",
    "Disk": "pytest_qemu.devices",
    "HostRoot": "pytest_qemu.devices",
    "Network": "pytest_qemu.devices",
    "NetworkInterface": "pytest_qemu.devices",
    "P9Directory": "pytest_qemu.devices",
    "ReadOnlyDirectory": "pytest_qemu.devices",
    "UserNetwork": "pytest_qemu.devices",
    "VirtioRandom": "pytest_qemu.devices",
    "option_string": "pytest_qemu.devices.options",
    "AgentDied": "pytest_qemu.errors",
    "BootTimeout": "pytest_qemu.errors",
    "CacheFull": "pytest_qemu.errors",
    "CacheWarning": "pytest_qemu.errors",
    "CommandFailed": "pytest_qemu.errors",
    "CommandRefused": "pytest_qemu.errors",
    "CommandTimeout": "pytest_qemu.errors",
    "ConfigurationError": "pytest_qemu.errors",
    "GuestKernelTrouble": "pytest_qemu.errors",
    "GuestUnresponsive": "pytest_qemu.errors",
    "QemuError": "pytest_qemu.errors",
    "SetupError": "pytest_qemu.errors",
    "TransferFailed": "pytest_qemu.errors",
    "VMError": "pytest_qemu.errors",
    "VMExited": "pytest_qemu.errors",
    "Platform": "pytest_qemu.platforms",
    "architectures": "pytest_qemu.platforms",
    "VMFactory": "pytest_qemu.plugin.factory",
    "CloudInit": "pytest_qemu.guests.cloudinit",
    "QemuSettings": "pytest_qemu.plugin.options",
    "VM": "pytest_qemu.vm",
    "CommandResult": "pytest_qemu.vm",
    "Console": "pytest_qemu.vm",
    "ConsoleTimeout": "pytest_qemu.errors",
    "MachineSpec": "pytest_qemu.vm",
    "GuestSetupError": "pytest_qemu.errors",
    "QemuWarning": "pytest_qemu.errors",
    "SnapshotWarning": "pytest_qemu.errors",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

__version__ = "0.1.0"

__all__ = [
    "VM",
    "AgentDied",
    "AllocationError",
    "ArbitraryArgs",
    "BootTimeout",
    "CacheFull",
    "CacheWarning",
    "CloudInit",
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
    "QemuWarning",
    "ReadOnlyDirectory",
    "SetupError",
    "SnapshotWarning",
    "TransferFailed",
    "UserNetwork",
    "VMError",
    "VMExited",
    "VMFactory",
    "VirtioRandom",
    "architectures",
    "option_string",
]
