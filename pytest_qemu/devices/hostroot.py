"""The host's root file system, shared read-only for the host-userland guest."""

from __future__ import annotations

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.options import option_string

#: Where the guest mounts the host's root; commands run chrooted into it.
HOST_ROOT_GUEST_PATH = "/host"
_TAG = "hostroot"


class HostRoot(Device):
    """The host's ``/``, exported read-only over virtio-9p (``security_model=none``).

    The default guest mounts it at ``/host`` with ``cache=loose`` (the fastest
    for a tree nobody changes while the VM runs) and gives it its own
    ``/proc``, ``/sys`` and ``/dev``, a tmpfs on ``/run``, and overlays on
    ``/tmp``, ``/var``, ``/root`` and ``/home`` that show the host's files and
    keep the guest's writes in guest memory. The host's files can never be
    written through it.
    """

    guest_modules = ("9p", "9pnet_virtio", "overlay")

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        fsdev = ctx.id_for(self, "hostfs")
        return [
            "-fsdev",
            option_string(
                "local",
                id=fsdev,
                path="/",
                security_model="none",
                readonly=True,
                # The host's / spans several file systems (/proc, /sys and /dev all have
                # inode 1): without remapping, their inode numbers collide in the guest,
                # whose cache then takes /proc for /sys.
                multidevs="remap",
            ),
            "-device",
            option_string(ctx.virtio_device("9p"), fsdev=fsdev, mount_tag=_TAG),
        ]

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        return [f"pytest_qemu.hostroot={_TAG},{HOST_ROOT_GUEST_PATH}"]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        return "hostroot"

    def guest_names(self, ctx: DeviceContext) -> list[tuple[str, str]]:
        return [("9p mount tag", _TAG), ("guest path", HOST_ROOT_GUEST_PATH)]

    def __repr__(self) -> str:
        return "HostRoot()"
