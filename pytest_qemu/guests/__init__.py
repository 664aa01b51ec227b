"""Kinds of guest behind :class:`~pytest_qemu.guests.base.Guest`, and what builds them.

The kinds users choose by name (``userland=``) are registered in
:data:`GUEST_KINDS`: each is a callable ``(default_guest, writable_directories)``
returning the guest (given, as keywords, the options its entry lists too). A disk
image (``image=``) and your own kernel or initramfs are chosen by their own arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_qemu.registry import Entry, Registry

if TYPE_CHECKING:
    from pytest_qemu.guests.base import Guest

#: Makes the guest of a kind from the default guest and the directories shared read-write,
#: plus the keyword options its entry lists (``packages=``, ``suite=``).
GuestKind = Callable[..., "Guest"]

#: Every guest kind users name: a new one is a module of this package and a line here.
#: ``options`` lists ``"kernel"`` if it boots your own kernel and initramfs too.
GUEST_KINDS: Registry[GuestKind] = Registry(
    "userland",
    [
        Entry(
            "busybox",
            "pytest_qemu.guests.default:busybox_userland",
            "hermetic, the default",
            options=("kernel",),
        ),
        Entry(
            "host",
            "pytest_qemu.guests.host_userland:HostUserlandGuest",
            "the host's root, read-only",
        ),
        Entry(
            "debian",
            "pytest_qemu.guests.debian_userland:DebianUserlandGuest",
            "Debian of the VM's architecture on a disk, with packages=[...]",
            options=("packages", "suite"),
        ),
    ],
)

__all__ = ["GUEST_KINDS", "GuestKind"]
