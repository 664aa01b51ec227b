"""A real Debian userland of the VM's architecture: ``userland="debian"``.

The default guest's kernel (the architecture's own Debian kernel) and init boot,
mount a Debian root file system from a virtio disk at ``/debian`` and run the
agent's commands chrooted into it, as root. The disk holds the suite's
essential packages plus ``packages`` and their dependencies; it is built once
per (architecture, suite, sorted packages) by :mod:`pytest_qemu.images.debian_root`
without root or emulation on the host, and configured by its first boot here.
Each VM runs on its own copy-on-write overlay of that base image, so VMs never
see each other's writes and clones start from one template. pytest's temporary
directory is shared read-write at the same path, as with the host's userland.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.devices.base import Device
from pytest_qemu.devices.directories import writable_shares
from pytest_qemu.devices.diskroot import DISK_ROOT_GUEST_PATH, DiskRoot
from pytest_qemu.errors import SetupError
from pytest_qemu.guests.agent import AgentGuest
from pytest_qemu.guests.base import BootFiles
from pytest_qemu.guests.default import DefaultGuest
from pytest_qemu.guests.overlays import create_overlay
from pytest_qemu.images.debian_root import (
    FIRST_BOOT_SCRIPT,
    BuiltUserland,
    DebianRootRecipe,
    debian_root_image,
)

#: Seconds the first boot may take to configure the packages under emulation.
CONFIGURE_TIMEOUT = 1800.0
#: Memory of the VM that configures the packages (dpkg and maintainer scripts), MiB.
_CONFIGURE_MEMORY = 1024


class DebianUserlandGuest(AgentGuest):
    """The default guest's kernel and init, commands run in a Debian userland on a disk.

    *packages* (and their dependencies) of Debian *suite* (default: the platform's,
    such as bookworm) are installed beside the essential set; *writable* directories
    (they must exist) are shared read-write at the same paths.
    """

    command_root = DISK_ROOT_GUEST_PATH
    #: The shell on the console runs in the Debian userland too.
    console_shell = f"exec chroot {DISK_ROOT_GUEST_PATH} /bin/bash -l"

    def __init__(
        self,
        base: DefaultGuest,
        writable: Sequence[Path] = (),
        packages: Sequence[str] = (),
        suite: str | None = None,
    ) -> None:
        super().__init__(base.platform)
        self._base = base
        self._writable = tuple(Path(directory).absolute() for directory in writable)
        self.recipe = DebianRootRecipe.of(
            base.platform, suite or base.platform.debian_suite, packages
        )
        self._lock = threading.Lock()
        self._built: BuiltUserland | None = None

    def userland(self) -> BuiltUserland:
        """The built userland (built on first use, once across processes)."""
        with self._lock:
            if self._built is None:
                self._built = debian_root_image(
                    self._base.cache.root, self.platform, self.recipe, self._configure
                )
            return self._built

    def devices(self, requested: Sequence[Device], workdir: Path) -> list[Device]:
        built = self.userland()
        overlay = create_overlay(built.disk, "qcow2", workdir / "debian-root.qcow2")
        # The root first: the shared directories are mounted inside it.
        return [
            DiskRoot(overlay, "qcow2", built.directory.name),
            *writable_shares(self._writable, DISK_ROOT_GUEST_PATH),
            *requested,
        ]

    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        return self._base.boot_files(devices)

    @property
    def default_cwd(self) -> str:
        """Root's home in the Debian userland."""
        return "/root"

    @property
    def snapshot_key_parts(self) -> tuple[str, ...]:
        return ("debian-userland", self.recipe.name)

    @property
    def boot_timeout_hint(self) -> str:
        return f"the VM runs {self.recipe.describe()} from a disk mounted by the default guest"

    def _configure(self, disk: Path) -> None:
        """Boot *disk* (raw, written in place) and run its first-boot script natively."""
        # The VM sits above the guests: imported here, where a userland is configured.
        from pytest_qemu.vm.argv import MachineSpec
        from pytest_qemu.vm.machine import VM

        root = DiskRoot(disk, "raw", "configuring", keeps_writes=True)
        boot = self._base.boot_files([root])
        spec = MachineSpec(
            kernel=boot.kernel,
            initramfs=boot.initramfs,
            kernel_args=boot.kernel_args,
            devices=[root],
            platform=self.platform,
            memory=_CONFIGURE_MEMORY,
        )
        vm = VM(spec, boot_timeout=300, guest=self)
        try:
            vm.start()
            result = vm.run(f"{FIRST_BOOT_SCRIPT} 2>&1", timeout=CONFIGURE_TIMEOUT, cwd="/")
            if result.returncode != 0:
                raise SetupError(
                    f"{self.recipe.describe()}: configuring the packages in the "
                    f"{self.platform.name} guest failed (dpkg, exit status "
                    f"{result.returncode}):\n{dpkg_failure(result.stdout)}"
                )
            # Write everything back before QEMU ends: the disk becomes the base image.
            vm.commands.run_setup(f"sync && mount -o remount,ro {DISK_ROOT_GUEST_PATH}")
        finally:
            vm.shutdown(timeout=30)


def dpkg_failure(output: str, context: int = 3) -> str:
    """The part of dpkg's *output* that says what failed: each error with the lines just
    before it (a maintainer script's own messages), then the summary at the end."""
    lines = output.splitlines()
    shown: list[str] = []
    for index, line in enumerate(lines):
        if line.startswith("dpkg: error") or "returned error exit status" in line:
            for previous in lines[max(0, index - context) : index + 2]:
                if previous not in shown[-context - 2 :]:
                    shown.append(previous)
    return "\n".join([*shown[:40], "...", *lines[-12:]] if shown else lines[-30:])
