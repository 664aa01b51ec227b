"""Small devices: entropy, disks, and raw arguments for anything we do not model."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext, default_names
from pytest_qemu.devices.options import option_string, validate_id, validate_kernel_argument
from pytest_qemu.devices.virtio_blk import virtio_disk_args
from pytest_qemu.errors import ConfigurationError

_DISK_FORMATS = frozenset({"raw", "qcow2", "vmdk", "vdi", "vhdx", "qed"})


class VirtioRandom(Device):
    """A virtio-rng device fed from the host's ``/dev/urandom``.

    Guests without it can block on the kernel's entropy pool early in boot.
    """

    guest_modules = ("virtio_rng",)

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        rng = ctx.id_for(self, "rng")
        return [
            "-object",
            option_string("rng-random", id=rng, filename="/dev/urandom"),
            "-device",
            option_string(ctx.virtio_device("rng"), rng=rng),
        ]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        return "rng"

    def __repr__(self) -> str:
        return "VirtioRandom()"


class Disk(Device):
    """A disk image attached as a virtio block device.

    The default guest links it as ``/dev/disk/by-id/virtio-<serial>`` (see
    :attr:`guest_device`). By default the guest writes to a throwaway
    copy-on-write overlay that QEMU creates for the VM (``snapshot=on``), so
    the image is never changed and one image can back many VMs at once.
    ``persistent=True`` writes the guest's changes into the image itself;
    ``read_only=True`` opens the image read-only, so guest writes fail.
    """

    guest_modules = ("virtio_blk",)

    def __init__(
        self,
        image: str | os.PathLike[str],
        format: str = "raw",
        read_only: bool = False,
        serial: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.image = Path(image).absolute()
        if not self.image.is_file() and not self.image.is_block_device():
            raise ConfigurationError(f"disk image {self.image} does not exist or is not a file")
        if format not in _DISK_FORMATS:
            raise ConfigurationError(
                f"disk format {format!r} is not supported: use one of {sorted(_DISK_FORMATS)}"
            )
        if persistent and read_only:
            raise ConfigurationError(
                f"disk {self.image} is both persistent and read_only: a read-only image keeps "
                "no changes, so give persistent=True (guest writes go into the image) or "
                "read_only=True (guest writes fail), not both"
            )
        self.format = format
        self.read_only = read_only
        self.persistent = persistent
        self.serial = (
            validate_id(serial, "disk serial") if serial is not None else default_names.next("disk")
        )
        if len(self.serial) > 20:
            raise ConfigurationError(f"disk serial {self.serial!r} is longer than 20 characters")

    @property
    def guest_device(self) -> str:
        """The block device's path in the default guest."""
        return f"/dev/disk/by-id/virtio-{self.serial}"

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        return virtio_disk_args(
            ctx,
            ctx.id_for(self, "disk"),
            self.image,
            self.format,
            serial=self.serial,
            readonly=True if self.read_only else None,
            # QEMU writes to a temporary qcow2 overlay (in $TMPDIR) backed by the image.
            snapshot=None if self.read_only or self.persistent else True,
        )

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        # The guest learns the disk's size when it probes it, before the snapshot; only
        # a raw image's size is known without reading the image. A persistent image's
        # content can change between VMs, so a saved boot could show stale data.
        if self.format != "raw" or self.persistent:
            return None
        return f"disk:{self.read_only}:{self.image.stat().st_size}"

    @property
    def keeps_guest_writes(self) -> bool:
        return self.persistent and not self.read_only

    def guest_names(self, ctx: DeviceContext) -> list[tuple[str, str]]:
        return [("disk serial (FAT name or Disk serial)", self.serial)]

    def __repr__(self) -> str:
        return (
            f"Disk({str(self.image)!r}, format={self.format!r}, read_only={self.read_only}, "
            f"persistent={self.persistent})"
        )


class ArbitraryArgs(Device):
    """Arguments passed to QEMU and the kernel as they are, for what no device models.

    Nothing is escaped: the caller owns these strings. Only their type is checked,
    and that kernel arguments hold no control characters.
    """

    def __init__(
        self,
        qemu_args: Iterable[str] = (),
        kernel_args: Iterable[str] = (),
        guest_modules: Iterable[str] = (),
    ) -> None:
        self._qemu_args = list(qemu_args)
        self._kernel_args = list(kernel_args)
        self.guest_modules = tuple(guest_modules)
        for value in [*self._qemu_args, *self._kernel_args]:
            if not isinstance(value, str):
                raise ConfigurationError(f"argument {value!r} is not a string")
        for value in self._kernel_args:
            validate_kernel_argument(value)

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        return list(self._qemu_args)

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        return list(self._kernel_args)

    def __repr__(self) -> str:
        return f"ArbitraryArgs({self._qemu_args!r}, {self._kernel_args!r})"
