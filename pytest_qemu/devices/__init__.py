"""Devices: descriptions of what a VM is built with, turned into QEMU and kernel arguments."""

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.directories import P9Directory, ReadOnlyDirectory
from pytest_qemu.devices.hostroot import HostRoot
from pytest_qemu.devices.misc import ArbitraryArgs, Disk, VirtioRandom
from pytest_qemu.devices.network import Network, NetworkInterface, UserNetwork

__all__ = [
    "ArbitraryArgs",
    "Device",
    "DeviceContext",
    "Disk",
    "HostRoot",
    "Network",
    "NetworkInterface",
    "P9Directory",
    "ReadOnlyDirectory",
    "UserNetwork",
    "VirtioRandom",
]
