"""A cloud-init seed volume, attached read-only for cloud-init's NoCloud data source."""

from __future__ import annotations

from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.virtio_blk import virtio_disk_args


class CloudInitSeed(Device):
    """The FAT volume *file* (labelled ``CIDATA``) as a read-only virtio disk.

    A seed is read at a guest's first boot only. *identity* names its content when
    it is the same for every VM (its host name and instance id given): VMs with it
    are clones of one template. None (a seed naming its VM): the VM boots.
    """

    guest_modules = ("virtio_blk",)

    def __init__(self, file: Path, identity: str | None = None) -> None:
        self.file = file
        self.identity = identity

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        return virtio_disk_args(ctx, ctx.id_for(self, "cidata"), self.file, "raw", readonly=True)

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        return None if self.identity is None else f"cloud-init:{self.identity}"

    def __repr__(self) -> str:
        return f"CloudInitSeed({str(self.file)!r})"
