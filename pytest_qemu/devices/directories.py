"""Host directories shared with the guest: 9p (read-write or read-only) and FAT (read-only)."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext, default_names
from pytest_qemu.devices.options import option_string, validate_guest_path, validate_id
from pytest_qemu.errors import ConfigurationError

#: Where the default guest mounts shared directories: ``/mnt/<tag>``.
GUEST_MOUNT_ROOT = "/mnt"


def _host_directory(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory).absolute()
    if not path.is_dir():
        raise ConfigurationError(f"{path} is not a directory: a shared directory must exist")
    return path


class P9Directory(Device):
    """A host directory shared over virtio-9p (``security_model=mapped-file``).

    The default guest mounts it at :attr:`guest_path` (``/mnt/<name>``). The
    9p mount tag is *tag* if given, else the device's QEMU id (``fs0``...). With
    ``boot=True`` it is meant as the guest's root file system and the default
    guest does not mount it. ``read_only=True`` makes the export read-only.
    Files the guest creates appear on the host with mode 0600, and QEMU keeps
    their guest-side owner and mode in ``.virtfs_metadata/`` beside them.
    """

    guest_modules = ("virtio_pci", "9p", "9pnet_virtio")

    def __init__(
        self,
        directory: str | os.PathLike[str],
        tag: str | None = None,
        boot: bool = False,
        read_only: bool = False,
        guest_path: str | None = None,
    ) -> None:
        self.directory = _host_directory(directory)
        self.tag = validate_id(tag, "9p mount tag") if tag is not None else None
        self.name = self.tag or default_names.next("share")
        self.boot = boot
        self.read_only = read_only
        self.guest_path = validate_guest_path(guest_path or f"{GUEST_MOUNT_ROOT}/{self.name}")

    def mount_tag(self, ctx: DeviceContext) -> str:
        """The 9p tag: *tag* if given, else positional (``fs0``...), so that VMs with
        the same devices can share a snapshot."""
        return self.tag or ctx.id_for(self, "fs")

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        fsdev = ctx.id_for(self, "fs")
        return [
            "-fsdev",
            option_string(
                "local",
                id=fsdev,
                path=str(self.directory),
                security_model="mapped-file",
                readonly=True if self.read_only else None,
            ),
            "-device",
            option_string("virtio-9p-pci", fsdev=fsdev, mount_tag=self.mount_tag(ctx)),
        ]

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        tag = self.mount_tag(ctx)
        if self.boot:
            return [f"root={tag}", "rootfstype=9p", "rootflags=trans=virtio,version=9p2000.L"]
        mode = "ro" if self.read_only else "rw"
        return [f"pytest_qemu.mount=9p,{tag},{self.guest_path},{mode}"]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        # A root file system is in use from the first instant: it cannot be swapped after restore.
        return None if self.boot else f"9p:{self.mount_tag(ctx)}:{self.read_only}"

    def __repr__(self) -> str:
        return f"P9Directory({str(self.directory)!r}, name={self.name!r})"


class ReadOnlyDirectory(Device):
    """A host directory seen by the guest as a read-only FAT disk.

    QEMU's ``vvfat`` driver builds the FAT image from the directory; the drive
    is opened read-only, so guest writes fail with "Read-only file system" and
    the host directory is never changed. Files written on the host after the
    VM started may not be seen by the guest. The default guest mounts it at
    :attr:`guest_path` (``/mnt/<name>``).
    """

    guest_modules = ("virtio_pci", "virtio_blk", "vfat")

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str | None = None,
        guest_path: str | None = None,
    ) -> None:
        self.directory = _host_directory(directory)
        # virtio-blk serials are at most 20 characters long.
        self.name = (
            validate_id(name, "FAT directory name")
            if name is not None
            else default_names.next("fat")
        )
        if len(self.name) > 20:
            raise ConfigurationError(
                f"FAT directory name {self.name!r} is longer than 20 characters"
            )
        self.guest_path = validate_guest_path(guest_path or f"{GUEST_MOUNT_ROOT}/{self.name}")

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        drive = ctx.id_for(self, "fat")
        return [
            "-drive",
            # driver=vvfat with dir= instead of file=fat:DIR: the fat: form parses
            # the path for ':rw:' and cuts it at the last colon.
            option_string(
                "if=none", id=drive, driver="vvfat", dir=str(self.directory), readonly=True
            ),
            "-device",
            option_string("virtio-blk-pci", drive=drive, serial=self.name),
        ]

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        return [f"pytest_qemu.mount=fat,{self.name},{self.guest_path},ro"]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        # The guest reads the serial from the device on every lookup, so it may differ.
        return "fat"

    def __repr__(self) -> str:
        return f"ReadOnlyDirectory({str(self.directory)!r}, name={self.name!r})"
