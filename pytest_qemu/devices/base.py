"""The :class:`Device` interface and the per-VM context devices are built in.

A device is a description: it turns into QEMU arguments and kernel arguments
when a VM is built, and holds no process or file open itself. Building is pure,
so device matrices are tested without starting QEMU.
"""

from __future__ import annotations

import abc
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_qemu.platforms.base import Platform


class DeviceContext:
    """What one VM's devices share while its command line is built.

    It hands out QEMU ids that are unique within the VM and stable per device,
    so a device asked twice (for its QEMU and its kernel arguments) names the
    same objects both times, and two FAT directories in one VM never clash.
    It knows the VM's *platform* (None: the host's), which says how devices
    attach (:meth:`virtio_device`).
    """

    def __init__(self, platform: Platform | None = None) -> None:
        self._platform = platform
        self._indexes: dict[tuple[int, str], int] = {}
        self._counters: dict[str, Iterator[int]] = {}
        self._keep_alive: list[object] = []

    def index_for(self, device: object, prefix: str) -> int:
        """The position of *device* among this VM's objects of kind *prefix*, from 0."""
        key = (id(device), prefix)
        if key not in self._indexes:
            counter = self._counters.setdefault(prefix, itertools.count())
            self._indexes[key] = next(counter)
            # id() is only unique among live objects: keep the device alive with its index.
            self._keep_alive.append(device)
        return self._indexes[key]

    @property
    def platform(self) -> Platform:
        """The VM's architecture."""
        if self._platform is None:
            from pytest_qemu.platforms import get_platform

            self._platform = get_platform()
        return self._platform

    def virtio_device(self, kind: str) -> str:
        """QEMU's driver of the virtio device *kind* (``rng``, ``blk``...) on this platform."""
        return self.platform.virtio_device(kind)

    def id_for(self, device: object, prefix: str) -> str:
        """The QEMU id of *device*'s object of kind *prefix*: ``fs0``, ``net1``..."""
        return f"{prefix}{self.index_for(device, prefix)}"


class Device(abc.ABC):
    """Something attached to a VM: it knows the QEMU and kernel arguments it needs.

    Subclasses implement :meth:`qemu_args`, and :meth:`kernel_args` when the
    guest must be told about the device. ``guest_modules`` names the kernel
    modules the default guest loads for it.
    """

    guest_modules: tuple[str, ...] = ()
    #: Whether the guest drives this device itself (a disk, a share, a network card).
    #: False for what only the firmware uses (its flash): a VM with no other device
    #: is set up and cloned as one without devices.
    in_guest: bool = True

    @property
    def keeps_guest_writes(self) -> bool:
        """Whether the host keeps what the guest writes to this device once the VM ends
        (a persistent disk), so that the guest must flush its caches before it stops."""
        return False

    @abc.abstractmethod
    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        """The QEMU command-line arguments that add this device."""

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        """Kernel command-line arguments the guest needs for this device."""
        return []

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        """What the guest sees of this device, for keying VM snapshots; None if not snapshot-safe.

        A VM restored from a snapshot must have the same virtual hardware as
        the VM that was saved. Devices whose guest-visible state cannot be
        carried over (or is unknown, as with raw arguments) return None, and
        VMs with them boot cold.
        """
        return None

    def guest_names(self, ctx: DeviceContext) -> list[tuple[str, str]]:
        """The names this device takes in the guest, as (kind, name) pairs.

        Two devices of one VM may not take the same name of a kind (two disks
        with one serial, two shares mounted at one path): one would hide the
        other. The kinds are free text shown in the error.
        """
        return []

    def template_file(self) -> Path | None:
        """A file whose content is part of the guest's state (a disk overlay the guest
        wrote to), which a VM template built with this device must keep; None if none."""
        return None

    def use_template_file(self, overlay: Path) -> None:  # noqa: B027
        """Make a clone use *overlay*, a new overlay over a template's frozen copy of
        :meth:`template_file` (or, when a clone fails, the original file again)."""

    def release(self) -> None:  # noqa: B027 - optional hook, most devices hold nothing
        """Give back what was allocated for the VM (ports, numbers); called at VM teardown."""


class _NameSequence:
    """Process-wide default names (``share0``, ``share1``...) for devices built without one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, Iterator[int]] = {}

    def next(self, prefix: str) -> str:
        with self._lock:
            counter = self._counters.setdefault(prefix, itertools.count())
            return f"{prefix}{next(counter)}"


default_names = _NameSequence()
