"""A root file system on a disk, mounted by the default guest and chrooted into."""

from __future__ import annotations

from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.virtio_blk import virtio_disk_args

#: Where the guest mounts a disk root; commands run chrooted into it.
DISK_ROOT_GUEST_PATH = "/debian"
_SERIAL = "pytest-qemu-root"


class DiskRoot(Device):
    """An ext4 disk holding a whole system (a Debian userland), as a virtio disk.

    *file* is what QEMU opens: a throwaway qcow2 overlay of the userland's base
    image (one per VM), or the raw disk being configured on its first boot
    (*keeps_writes*). The guest mounts it at ``/debian`` read-write when it boots, with
    its own ``/proc``, ``/sys``, ``/dev`` and a tmpfs on ``/run``. A template is saved
    with it mounted (mounting costs a clone about a second of fresh emulated processes):
    its overlay is frozen with the template, and each clone runs on a new overlay over
    that frozen one, so that the disk matches the memory it starts from.
    *identity* names the base image's content for templates.
    """

    guest_modules = ("virtio_blk", "ext4")

    def __init__(self, file: Path, format: str, identity: str, keeps_writes: bool = False) -> None:
        self.file = file
        self.format = format
        self.identity = identity
        self._keeps_writes = keeps_writes

    @property
    def keeps_guest_writes(self) -> bool:
        return self._keeps_writes

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        return virtio_disk_args(
            ctx,
            ctx.id_for(self, "root"),
            self.file,
            self.format,
            serial=_SERIAL,
            # A writeback cache for an overlay thrown away with the VM.
            cache=None if self._keeps_writes else "unsafe",
        )

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        # Not a pytest_qemu.* setting: those are applied after a restore, and this one
        # must be in place when a template is saved.
        return [f"pytest_qemu_root={_SERIAL},{DISK_ROOT_GUEST_PATH}"]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        # A disk being configured changes under a template: such VMs always boot.
        return None if self._keeps_writes else f"diskroot:{self.identity}"

    def guest_names(self, ctx: DeviceContext) -> list[tuple[str, str]]:
        return [("disk serial", _SERIAL), ("guest path", DISK_ROOT_GUEST_PATH)]

    def template_file(self) -> Path | None:
        """The overlay a template built with this VM writes to (frozen with it)."""
        return None if self._keeps_writes else self.file

    def use_template_file(self, overlay: Path) -> None:
        """Run a clone on *overlay*, a new overlay over a template's frozen disk."""
        self.file = overlay

    def __repr__(self) -> str:
        return f"DiskRoot({str(self.file)!r}, format={self.format!r})"
