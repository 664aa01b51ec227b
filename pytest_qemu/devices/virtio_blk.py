"""The QEMU arguments of a virtio block device over a host file (pure)."""

from __future__ import annotations

from pathlib import Path

from pytest_qemu.devices.base import DeviceContext
from pytest_qemu.devices.options import option_string


def virtio_disk_args(
    ctx: DeviceContext,
    drive: str,
    file: Path,
    format: str,
    serial: str | None = None,
    **drive_options: str | bool | None,
) -> list[str]:
    """``-drive`` (id *drive*) on *file* and the virtio block device that shows it.

    *drive_options* are further ``-drive`` options (``None`` leaves one out).
    """
    return [
        "-drive",
        option_string(
            "if=none",
            id=drive,
            format=format,
            **drive_options,
            # file.driver=file keeps QEMU from reading a protocol ("nbd:") into the path.
            **{"file.driver": "file", "file.filename": str(file)},
        ),
        "-device",
        option_string(ctx.virtio_device("blk"), drive=drive, serial=serial),
    ]
