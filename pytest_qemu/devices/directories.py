"""Host directories shared with the guest: 9p (read-write or read-only) and FAT (read-only)."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext, default_names
from pytest_qemu.devices.options import option_string, validate_guest_path, validate_id
from pytest_qemu.errors import ConfigurationError

#: Where the default guest mounts shared directories: ``/mnt/<tag>``.
GUEST_MOUNT_ROOT = "/mnt"

# The FAT16 disk QEMU 7.2's vvfat builds (block/vvfat.c, measured against a real start):
# 1024*16*63 sectors, 16-sector (8 KiB) clusters, 64472 clusters counting the fixed root.
_FAT_CLUSTER_BYTES = 8192
_FAT_CLUSTERS = 64472
_FAT_SLOTS_PER_CLUSTER = _FAT_CLUSTER_BYTES // 32
# The root directory is 512 slots: the volume label takes one. With more, QEMU either
# refuses to start or, depending on readdir order, silently drops the last names.
_FAT_ROOT_SLOTS = 511
_FAT_ROOT_CLUSTERS = 2
_FAT_NAME_CHARACTERS_PER_SLOT = 13


def _fat_slots(name: str) -> int:
    """Directory slots vvfat gives *name*: one short entry plus its long-name entries."""
    # Long names are UTF-16, 13 code units per slot; vvfat writes them for every name.
    units = len(name.encode("utf-16-le", "surrogatepass")) // 2
    return 1 + -(-units // _FAT_NAME_CHARACTERS_PER_SLOT)


def check_fat_directory(directory: Path) -> None:
    """Refuse a directory QEMU's vvfat cannot show faithfully, naming what is wrong.

    Walks the tree the way vvfat does (following symlinks, leaving out what
    cannot be stat-ed) and checks that no two names in one directory differ
    only in case, that the root directory's names fit its 511 free slots, and
    that everything fits the FAT16 disk (64472 clusters of 8 KiB).
    """
    clusters = _FAT_ROOT_CLUSTERS
    pending = [directory]
    while pending:
        current = pending.pop()
        is_root = current == directory
        # A subdirectory starts with its "." and ".." entries.
        slots = 0 if is_root else 2
        seen: dict[str, str] = {}
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            raise ConfigurationError(
                f"cannot list {current} ({error.strerror}): QEMU's vvfat would fail to start "
                f"with {directory}; make it readable or leave it out"
            ) from None
        for entry in entries:
            try:
                info = entry.stat()
            except OSError:
                continue  # vvfat leaves out what it cannot stat, such as dangling symlinks
            folded = entry.name.lower()
            if folded in seen:
                raise ConfigurationError(
                    f"{current / seen[folded]} and {entry.path} differ only in case: the "
                    "guest's FAT file system cannot tell them apart and would show one "
                    "file's contents for both; rename one of them"
                )
            seen[folded] = entry.name
            slots += _fat_slots(entry.name)
            if stat.S_ISDIR(info.st_mode):
                pending.append(Path(entry.path))
            elif info.st_size:
                clusters += -(-info.st_size // _FAT_CLUSTER_BYTES)
        if is_root and slots > _FAT_ROOT_SLOTS:
            raise ConfigurationError(
                f"{directory} has too many names at its top level for a FAT root directory: "
                f"its {len(seen)} names need {slots} directory slots and vvfat has "
                f"{_FAT_ROOT_SLOTS} (a name takes one slot plus one per "
                f"{_FAT_NAME_CHARACTERS_PER_SLOT} characters); move some into a subdirectory"
            )
        if not is_root:
            clusters += -(-slots // _FAT_SLOTS_PER_CLUSTER)
        # Checked as we go: a symlink loop makes the tree repeat until this fires.
        if clusters > _FAT_CLUSTERS:
            raise ConfigurationError(
                f"{directory} does not fit on the FAT disk vvfat builds: its files and "
                f"directories need more than {_FAT_CLUSTERS} clusters of "
                f"{_FAT_CLUSTER_BYTES // 1024} KiB ({_FAT_CLUSTERS * _FAT_CLUSTER_BYTES} bytes, "
                "counting every started cluster of each file and directory, and symlinked "
                "directories, which vvfat follows); use a P9Directory or a Disk for more data"
            )


_SECURITY_MODELS = ("mapped-file", "none")


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

    With the default ``security_model="mapped-file"``, files the guest creates
    appear on the host with mode 0600, and QEMU keeps their guest-side owner
    and mode in ``.virtfs_metadata/`` beside them. ``security_model="none"``
    writes files as the user running QEMU, with the modes the guest gives
    them, and no metadata files: what the host-userland guest uses for
    directories the host and the guest both work in.
    """

    guest_modules = ("9p", "9pnet_virtio")

    def __init__(
        self,
        directory: str | os.PathLike[str],
        tag: str | None = None,
        boot: bool = False,
        read_only: bool = False,
        guest_path: str | None = None,
        security_model: str = "mapped-file",
    ) -> None:
        self.directory = _host_directory(directory)
        if security_model not in _SECURITY_MODELS:
            raise ConfigurationError(
                f"9p security_model {security_model!r} is not supported: use one of "
                f"{_SECURITY_MODELS}"
            )
        self.security_model = security_model
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
                security_model=self.security_model,
                readonly=True if self.read_only else None,
            ),
            "-device",
            option_string(ctx.virtio_device("9p"), fsdev=fsdev, mount_tag=self.mount_tag(ctx)),
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

    def guest_names(self, ctx: DeviceContext) -> list[tuple[str, str]]:
        names = [("9p mount tag", self.mount_tag(ctx))]
        return names if self.boot else [*names, ("guest path", self.guest_path)]

    def __repr__(self) -> str:
        return f"P9Directory({str(self.directory)!r}, name={self.name!r})"


def writable_shares(directories: Sequence[Path], root: str) -> list[Device]:
    """Host *directories* shared read-write at their own paths inside a guest userland
    mounted at *root*, with the modes and owners the guest gives files (no metadata files)."""
    return [
        P9Directory(directory, security_model="none", guest_path=f"{root}{directory}")
        for directory in directories
    ]


class ReadOnlyDirectory(Device):
    """A host directory seen by the guest as a read-only FAT disk.

    QEMU's ``vvfat`` driver builds the FAT image from the directory; the drive
    is opened read-only, so guest writes fail with "Read-only file system" and
    the host directory is never changed. Files written on the host after the
    VM started may not be seen by the guest. The default guest mounts it at
    :attr:`guest_path` (``/mnt/<name>``).

    The directory is checked (see :func:`check_fat_directory`) when the device
    is created and again when a VM's command line is built, since files are
    often added in between: names that differ only in case, a root directory
    with too many names, or more than vvfat's FAT16 disk holds (about 504 MiB)
    raise :class:`~pytest_qemu.ConfigurationError`. vvfat follows symlinks,
    also out of the directory.
    """

    guest_modules = ("virtio_blk", "vfat")

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
        check_fat_directory(self.directory)

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        # Again here: the fat_dir fixture creates the device before the test fills it.
        check_fat_directory(self.directory)
        drive = ctx.id_for(self, "fat")
        return [
            "-drive",
            # driver=vvfat with dir= instead of file=fat:DIR: the fat: form parses
            # the path for ':rw:' and cuts it at the last colon.
            option_string(
                "if=none", id=drive, driver="vvfat", dir=str(self.directory), readonly=True
            ),
            "-device",
            option_string(ctx.virtio_device("blk"), drive=drive, serial=self.name),
        ]

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        return [f"pytest_qemu.mount=fat,{self.name},{self.guest_path},ro"]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        # The guest reads the serial from the device on every lookup, so it may differ.
        return "fat"

    def guest_names(self, ctx: DeviceContext) -> list[tuple[str, str]]:
        return [
            ("disk serial (FAT name or Disk serial)", self.name),
            ("guest path", self.guest_path),
        ]

    def __repr__(self) -> str:
        return f"ReadOnlyDirectory({str(self.directory)!r}, name={self.name!r})"
