"""The default guest: the host's Debian kernel and an initramfs the plugin writes itself."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from pytest_qemu.guest.agent_build import build_agent
from pytest_qemu.guest.cache import BuildCache, cache_key, file_fingerprint
from pytest_qemu.guest.initramfs import (
    GUEST_SCRIPTS,
    busybox_applets,
    find_busybox,
    guest_script,
    write_initramfs,
)
from pytest_qemu.guest.kernel import (
    HostKernel,
    KernelError,
    extract_vmlinux,
    find_host_kernel,
    has_pvh_note,
)
from pytest_qemu.guest.modules import ModuleIndex

#: Modules every default guest loads: the PCI transport and the agent's serial port.
BASE_MODULES = ("virtio_pci", "virtio_console")

#: Bump when the initramfs layout changes, so old cache entries are not reused.
_FORMAT_VERSION = "1"


#: The default guest's kernel arguments. panic=-1 with QEMU's -no-reboot turns a
#: guest panic into a QEMU exit, which the VM reports at once instead of timing out.
#: no_timer_check: an emulated CPU starved by a loaded host fails the kernel's early
#: IO-APIC timer check and panics ("IO-APIC + timer doesn't work!"), seen with 16
#: VMs booting at once on 2 cores.
DEFAULT_KERNEL_ARGS = ("console=ttyS0", "panic=-1", "rdinit=/init", "quiet", "no_timer_check")


class DefaultGuest:
    """Builds the default guest's files once and keeps them in a :class:`BuildCache`.

    The kernel is the newest ``/boot/vmlinuz-*``, booted as an uncompressed
    ``vmlinux`` when one can be extracted (QEMU's PVH boot skips the slow
    in-guest decompression). Each VM's initramfs holds only the modules its
    devices need.
    """

    def __init__(self, cache: BuildCache, host_kernel: HostKernel | None = None) -> None:
        self._cache = cache
        self._host_kernel = host_kernel
        self._lock = threading.Lock()
        self._modules: ModuleIndex | None = None
        self._initramfs_paths: dict[tuple[str, ...] | None, Path] = {}
        self._kernel_image: Path | None = None

    @property
    def host_kernel(self) -> HostKernel:
        if self._host_kernel is None:
            self._host_kernel = find_host_kernel()
        return self._host_kernel

    def kernel_image(self) -> Path:
        """The kernel to boot: an extracted PVH ``vmlinux`` if possible, else the ``vmlinuz``."""
        with self._lock:
            if self._kernel_image is None:
                self._kernel_image = self._build_kernel_image()
            return self._kernel_image

    def _build_kernel_image(self) -> Path:
        image = self.host_kernel.image
        key = cache_key([_FORMAT_VERSION, file_fingerprint(image)])

        def build(out: BinaryIO) -> None:
            out.close()
            extract_vmlinux(image, Path(out.name))

        try:
            vmlinux = self._cache.get("kernels", key, ".vmlinux", build)
        except KernelError:
            return image
        return vmlinux if has_pvh_note(vmlinux) else image

    def initramfs(self, modules: Iterable[str] | None) -> Path:
        """An initramfs that loads *modules* (and what they depend on) at boot.

        ``None`` means no modules at all, for a kernel other than the host's,
        which must then have virtio built in.
        """
        wanted = None if modules is None else tuple(sorted(set(modules)))
        # Every VM start asks: remember the answer instead of re-reading the inputs.
        with self._lock:
            if wanted in self._initramfs_paths:
                return self._initramfs_paths[wanted]
        resolved = [] if wanted is None else self._module_index().resolve([*BASE_MODULES, *wanted])
        busybox = find_busybox()
        agent = build_agent(self._cache)
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
            write_initramfs(out, busybox, busybox_applets(busybox), resolved, agent)

        path = self._cache.get("initramfs", key, ".cpio", build)
        with self._lock:
            self._initramfs_paths[wanted] = path
        return path

    def _module_index(self) -> ModuleIndex:
        with self._lock:
            if self._modules is None:
                self._modules = ModuleIndex(self.host_kernel.modules_dir)
            return self._modules
