"""The default guest: a Debian kernel and an initramfs the plugin writes itself.

The userland is ``busybox-static``; the guest's init, setup script and command
agent come from ``files/``. Nothing is downloaded at run time.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from pytest_qemu.cache import BuildCache, cache_key, file_fingerprint
from pytest_qemu.devices.base import Device
from pytest_qemu.devices.firmware import UefiFlash
from pytest_qemu.errors import CacheFull, CacheWarning
from pytest_qemu.guests.agent import AgentGuest
from pytest_qemu.guests.agent_build import build_agent
from pytest_qemu.guests.base import BootFiles, Guest
from pytest_qemu.guests.initramfs import (
    GUEST_SCRIPTS,
    busybox_applets,
    find_busybox,
    guest_script,
    write_initramfs,
)
from pytest_qemu.guests.modules import ModuleIndex
from pytest_qemu.platforms import Platform, get_platform
from pytest_qemu.platforms.kernel import HostKernel, find_host_kernel

#: Modules every default guest loads besides its platform's virtio transport: the agent's
#: serial port.
BASE_MODULES = ("virtio_console",)

#: Bump when the initramfs layout changes, so old cache entries are not reused.
_FORMAT_VERSION = "1"


def default_kernel_args(platform: Platform) -> tuple[str, ...]:
    """The default guest's kernel arguments on *platform*.

    panic=-1 with QEMU's -no-reboot turns a guest panic into a QEMU exit, which
    the VM reports at once instead of timing out. nowatchdog: an emulated CPU starved
    by a busy host looks stuck to the soft-lockup detector ("BUG: soft lockup - CPU#0
    stuck for 23s!" in 4 of 16 tests running 48 VMs on 2 cores), which failed tests
    for the host's load, not the guest's fault.
    """
    return (f"console={platform.console}", "panic=-1", "rdinit=/init", "quiet",
            "nowatchdog", *platform.kernel_args)  # fmt: skip


class DefaultGuest(AgentGuest):
    """The default guest, built once and kept in a :class:`BuildCache`.

    The kernel is the platform's newest kernel, booted in the fastest form the
    platform can make of it (an uncompressed ``vmlinux`` where it boots one). Each
    VM's initramfs holds only the modules its devices need.
    """

    def __init__(
        self,
        cache: BuildCache,
        host_kernel: HostKernel | None = None,
        platform: Platform | None = None,
        system_root: Path | None = None,
    ) -> None:
        super().__init__(platform or get_platform())
        self._cache = cache
        self._system_root = system_root
        self._host_kernel = host_kernel
        self._lock = threading.Lock()
        self._modules: ModuleIndex | None = None
        self._initramfs_paths: dict[tuple[str, ...] | None, Path] = {}
        self._kernel_image: Path | None = None

    @property
    def cache(self) -> BuildCache:
        """Where the guest's built files are kept."""
        return self._cache

    @property
    def system_root(self) -> Path:
        """Where the kernel (``boot/``, ``lib/modules/``) and busybox are: the directory
        given for this architecture (``--qemu-arch-files``), else the platform's."""
        return self._system_root or self.platform.system_root(self._cache.root)

    @property
    def host_kernel(self) -> HostKernel:
        """The kernel this guest boots, with its modules: the host's, or the one of the
        platform's Debian packages."""
        if self._host_kernel is None:
            root = self.system_root
            self._host_kernel = find_host_kernel(
                root / "boot", root / "lib" / "modules", self.platform.kernel_image_prefix
            )
        return self._host_kernel

    @property
    def debug_symbols(self) -> Path | None:
        """Debian's ``vmlinux`` with debug information (``linux-image-*-dbg``), if installed."""
        root = self.system_root
        debug = root / "usr/lib/debug/boot" / f"vmlinux-{self.host_kernel.release}"
        return debug if debug.is_file() else None

    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        modules = [module for device in devices for module in device.guest_modules]
        kernel = self.kernel_image()
        if any(isinstance(device, UefiFlash) for device in devices):
            # The firmware boots the kernel itself (its EFI stub), in a form it can load.
            kernel = self.platform.uefi_kernel(self.host_kernel.image, kernel)
        return BootFiles(kernel, self.initramfs(modules), default_kernel_args(self.platform))

    def kernel_image(self) -> Path:
        """The kernel to boot: the platform's faster form if it has one, else the image."""
        with self._lock:
            if self._kernel_image is None:
                self._kernel_image = self._build_kernel_image()
            return self._kernel_image

    def _build_kernel_image(self) -> Path:
        image = self.host_kernel.image
        key = cache_key([_FORMAT_VERSION, self.platform.name, file_fingerprint(image)])
        prepared: list[bool] = []

        def build(out: BinaryIO) -> None:
            out.close()
            prepared.append(self.platform.prepare_kernel(image, Path(out.name)))
            if not prepared[-1]:
                raise _NothingToPrepare

        try:
            return self._cache.get("kernels", key, ".vmlinux", build)
        except _NothingToPrepare:
            return image
        except CacheFull as full:
            # The image itself boots too, only slower: better than no VM at all.
            warnings.warn(CacheWarning(f"{full}; booting {image} as it is"), stacklevel=2)
            return image

    def initramfs(self, modules: Iterable[str] | None) -> Path:
        """An initramfs that loads *modules* (and what they depend on) at boot.

        ``None`` means no modules at all, for a kernel other than the platform's,
        which must then have virtio built in.
        """
        wanted = None if modules is None else tuple(sorted(set(modules)))
        # Every VM start asks: remember the answer instead of re-reading the inputs.
        with self._lock:
            if wanted in self._initramfs_paths:
                return self._initramfs_paths[wanted]
        resolved = (
            []
            if wanted is None
            else self._module_index().resolve(
                [*self.platform.virtio_modules, *BASE_MODULES, *wanted]
            )
        )
        busybox = find_busybox(self.system_root)
        agent = build_agent(self._cache, self.platform)
        key = cache_key(
            [
                _FORMAT_VERSION,
                file_fingerprint(busybox),
                file_fingerprint(agent),
                *(guest_script(name) for name in GUEST_SCRIPTS),
                *(f"{module.name}={file_fingerprint(module.path)}" for module in resolved),
            ]
        )

        def build(out: BinaryIO) -> None:
            # A foreign busybox cannot run here to list its applets: ask the host's, which
            # Debian builds from the same source with the same configuration.
            lister = busybox if self.platform.is_host else find_busybox(Path("/"))
            write_initramfs(out, busybox, busybox_applets(lister), resolved, agent)

        path = self._cache.get("initramfs", key, ".cpio", build)
        with self._lock:
            self._initramfs_paths[wanted] = path
        return path

    def _module_index(self) -> ModuleIndex:
        with self._lock:
            if self._modules is None:
                self._modules = ModuleIndex(self.host_kernel.modules_dir)
            return self._modules


def busybox_userland(base: DefaultGuest, writable: Sequence[Path] = ()) -> Guest:
    """The ``busybox`` guest kind: the default guest itself."""
    return base


class _NothingToPrepare(Exception):
    """The platform has no faster form of this kernel: boot the image itself."""
