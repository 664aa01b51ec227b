"""The QEMU arguments of a virtio-serial port connected to a UNIX socket on the host."""

from __future__ import annotations

from pathlib import Path

from pytest_qemu.devices.options import option_string


def serial_port_args(bus_device: str, port_id: str, name: str, socket_path: Path) -> list[str]:
    """A virtio-serial controller of its own (``<port_id>-bus``), and on it a port named
    *name* (what the guest looks for) whose host side is a listening UNIX socket.

    The port's QEMU id is *port_id*: QMP's ``VSERPORT_CHANGE`` events name it.
    """
    bus = f"{port_id}-bus"
    return [
        "-device", option_string(bus_device, id=bus),
        "-chardev", option_string(
            "socket", id=port_id, path=str(socket_path), server=True, wait=False
        ),
        "-device", option_string(
            "virtserialport", bus=f"{bus}.0", chardev=port_id, name=name, id=port_id
        ),
    ]  # fmt: skip
