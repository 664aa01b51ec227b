"""The system disk of a VM that boots a disk image of its own."""

from __future__ import annotations

from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.virtio_blk import virtio_disk_args


class SystemDisk(Device):
    """A disk image attached as the VM's first virtio disk (``/dev/vda``).

    *file* is what QEMU opens: the image itself for a persistent VM, else a
    throwaway qcow2 overlay whose backing file is the image (made by the
    image guest, one per VM). *identity* names the image's content for
    templates: two VMs of one image and hardware share a template.
    """

    guest_modules = ("virtio_blk",)

    def __init__(self, file: Path, format: str, identity: str, persistent: bool) -> None:
        self.file = file
        self.format = format
        self.identity = identity
        self.persistent = persistent

    @property
    def keeps_guest_writes(self) -> bool:
        return self.persistent

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        # No bootindex: it would clash with -kernel's boot ROM, and the firmware boots
        # the only disk anyway.
        return virtio_disk_args(
            ctx,
            ctx.id_for(self, "system"),
            self.file,
            self.format,
            # A writeback cache: the overlay is thrown away with the VM anyway.
            cache="unsafe" if not self.persistent else None,
        )

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        # A persistent disk changes under the template: such VMs always boot.
        return None if self.persistent else f"system:{self.identity}"

    def guest_names(self, ctx: DeviceContext) -> list[tuple[str, str]]:
        return [("system disk", "/dev/vda")]

    def template_file(self) -> Path | None:
        """The file whose content a template built with this VM must keep (its overlay)."""
        return None if self.persistent else self.file

    def use_template_file(self, overlay: Path) -> None:
        """Run a clone on *overlay*, a new overlay over a template's frozen disk."""
        self.file = overlay

    def __repr__(self) -> str:
        return f"SystemDisk({str(self.file)!r}, format={self.format!r})"
