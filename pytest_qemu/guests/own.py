"""Your own kernel and/or initramfs, booted like the default guest."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.devices.base import Device
from pytest_qemu.errors import troubleshooting
from pytest_qemu.guests.agent import AgentGuest
from pytest_qemu.guests.base import BootFiles
from pytest_qemu.guests.default import BASE_MODULES, DefaultGuest, default_kernel_args
from pytest_qemu.platforms.kernel import HostKernel, kernel_release


class OwnBootFilesGuest(AgentGuest):
    """The default guest with your *kernel*, your *initramfs*, or both.

    Your kernel without an initramfs gets the default initramfs with the modules its
    devices need from ``/lib/modules/<its release>``, where that directory exists (a
    distribution kernel, as the default guest's own), else without modules: it must
    then have virtio (``virtio_pci``, ``virtio_console`` and what the devices use)
    built in. Your initramfs must run pytest-qemu's agent (see the default guest's
    documentation).
    """

    def __init__(self, base: DefaultGuest, kernel: Path | None, initramfs: Path | None) -> None:
        super().__init__(base.platform)
        self._base = base
        self.kernel = kernel
        self.initramfs = initramfs
        self._lock = threading.Lock()
        self._release: str | None = None
        self._with_modules: DefaultGuest | None = None
        self._looked_up = False

    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        initramfs = self.initramfs
        if initramfs is None:
            modules = [module for device in devices for module in device.guest_modules]
            if self.kernel is None:
                initramfs = self._base.initramfs(modules)
            elif (own := self._kernel_with_modules()) is not None:
                initramfs = own.initramfs(modules)
            else:
                initramfs = self._base.initramfs(None)
        return BootFiles(
            self.kernel or self._base.kernel_image(),
            initramfs,
            default_kernel_args(self.platform),
        )

    def _kernel_with_modules(self) -> DefaultGuest | None:
        """A default guest booting your kernel with the modules of its release, if the
        platform's ``/lib/modules/<release>`` has them (looked up once)."""
        assert self.kernel is not None
        with self._lock:
            if not self._looked_up:
                self._looked_up = True
                self._release = kernel_release(self.kernel)
                root = self._base.system_root / "lib" / "modules"
                if self._release and (root / self._release / "modules.dep").is_file():
                    found = HostKernel(self.kernel, self._release, root / self._release)
                    self._with_modules = DefaultGuest(
                        self._base.cache, found, self.platform, self._base.system_root
                    )
            return self._with_modules

    @property
    def boot_timeout_hint(self) -> str:
        """For your kernel without modules: which built-ins it needs."""
        if self.kernel is None or self.initramfs is not None:
            return ""
        if self._kernel_with_modules() is not None:
            return (
                f"your kernel {self.kernel} got the modules of /lib/modules/{self._release} "
                f"({troubleshooting('a-distribution-kernel-as-own-kernel')})"
            )
        release = self._release or "unknown (not readable from the image)"
        return (
            f"your kernel {self.kernel} (release {release}) got an initramfs without "
            f"modules, as no /lib/modules/<release>/modules.dep matches it: it needs "
            f"{', '.join((*self.platform.virtio_modules, *BASE_MODULES))} and the modules of "
            "the VM's devices built in "
            f"(CONFIG_VIRTIO_PCI=y, CONFIG_VIRTIO_CONSOLE=y); a distribution kernel has them "
            f"as modules: install its modules, or pass --qemu-initramfs; "
            f"{troubleshooting('a-distribution-kernel-as-own-kernel')}"
        )

    def __repr__(self) -> str:
        return f"OwnBootFilesGuest(kernel={self.kernel!r}, initramfs={self.initramfs!r})"
