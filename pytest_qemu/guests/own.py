"""Your own kernel and/or initramfs, booted like the default guest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.devices.base import Device
from pytest_qemu.guests.agent import AgentGuest
from pytest_qemu.guests.base import BootFiles
from pytest_qemu.guests.default import DefaultGuest, default_kernel_args


class OwnBootFilesGuest(AgentGuest):
    """The default guest with your *kernel*, your *initramfs*, or both.

    Your kernel gets the default initramfs without modules (the platform's
    modules would not fit it), so it must have virtio built in. Your initramfs
    must run pytest-qemu's agent (see the default guest's documentation).
    """

    def __init__(self, base: DefaultGuest, kernel: Path | None, initramfs: Path | None) -> None:
        super().__init__(base.platform)
        self._base = base
        self.kernel = kernel
        self.initramfs = initramfs

    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        initramfs = self.initramfs
        if initramfs is None:
            modules = [module for device in devices for module in device.guest_modules]
            initramfs = self._base.initramfs(modules if self.kernel is None else None)
        return BootFiles(
            self.kernel or self._base.kernel_image(),
            initramfs,
            default_kernel_args(self.platform),
        )

    def __repr__(self) -> str:
        return f"OwnBootFilesGuest(kernel={self.kernel!r}, initramfs={self.initramfs!r})"
