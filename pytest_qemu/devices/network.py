"""Networks: isolated Ethernet segments between VMs, and QEMU user networking.

A :class:`Network` carries its frames over UDP multicast bound to the loopback
interface. Unlike ``-netdev socket,listen=``, which serves a single peer, every
VM on a multicast group sees every other one, in any start order and with no
helper process. Each network has its own leased port, so tests never see each
other's frames.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.options import option_string
from pytest_qemu.errors import ConfigurationError

if TYPE_CHECKING:
    from pytest_qemu.allocation import Allocator, Lease

MULTICAST_GROUP = "230.0.0.1"
#: Frames leave through the real network card unless the multicast socket is bound here.
MULTICAST_LOCAL_ADDRESS = "127.0.0.1"
_MAX_VMS_PER_NETWORK = 254


def _default_allocator() -> Allocator:
    # Imported here so that building arguments never needs the allocator's state directory.
    from pytest_qemu.allocation.default import default_allocator

    return default_allocator()


def mac_address(vm_number: int) -> str:
    """A locally administered unicast MAC (``0e:...``) unique to *vm_number*."""
    if not 0 <= vm_number < 2**40:
        raise ConfigurationError(f"VM number {vm_number} does not fit in a MAC address")
    octets = vm_number.to_bytes(5, "big")
    return "0e:" + ":".join(f"{octet:02x}" for octet in octets)


def multicast_netdev(netdev_id: str, port: int) -> str:
    """The ``-netdev`` option string of a loopback-only multicast network."""
    return option_string(
        "socket",
        id=netdev_id,
        mcast=f"{MULTICAST_GROUP}:{port}",
        localaddr=MULTICAST_LOCAL_ADDRESS,
    )


def _subnet_prefix(network_id: int) -> str:
    # 10.0.x.0/24 is left alone: user networking lives in 10.0.2.0/24.
    second_octet = 1 + (network_id >> 8)
    if second_octet > 255:
        raise ConfigurationError(f"network id {network_id} is too large for a 10.X.Y.0/24 subnet")
    return f"10.{second_octet}.{network_id & 0xFF}"


def _virtio_nic(ctx: DeviceContext, netdev: str, mac: str) -> list[str]:
    return ["-device", option_string(ctx.virtio_device("net"), netdev=netdev, mac=mac)]


class Network:
    """One isolated network between VMs.

    Call :meth:`new_vm` once per VM to get the device that plugs that VM in;
    each gets its own MAC and the address ``10.X.Y.N/24``, where ``X.Y`` is the
    network's id. The network's port is leased on first use and released by
    :meth:`close` (the ``qemu_network`` fixture closes it at test end).
    """

    def __init__(self, allocator: Allocator | None = None) -> None:
        self._allocator = allocator or _default_allocator()
        self._lock = threading.Lock()
        self._port_lease: Lease | None = None
        self._id_lease: Lease | None = None
        self._interfaces: list[NetworkInterface] = []
        self._closed = False

    def _ensure_leases(self) -> None:
        if self._closed:
            raise ConfigurationError("this Network is closed: create a new one")
        if self._id_lease is None:
            self._id_lease = self._allocator.lease_network_id("network subnet")
        if self._port_lease is None:
            self._port_lease = self._allocator.lease_port("udp", "network multicast port")

    @property
    def port(self) -> int:
        """The UDP port of this network's multicast group."""
        with self._lock:
            self._ensure_leases()
            assert self._port_lease is not None
            return self._port_lease.value

    @property
    def network_id(self) -> int:
        """The number that makes this network's subnet (``10.X.Y.0/24``) unique."""
        with self._lock:
            self._ensure_leases()
            assert self._id_lease is not None
            return self._id_lease.value

    @property
    def subnet_prefix(self) -> str:
        """The first three octets of this network's addresses, e.g. ``10.0.7``."""
        return _subnet_prefix(self.network_id)

    @property
    def interfaces(self) -> list[NetworkInterface]:
        """The devices handed out by :meth:`new_vm`, in order."""
        with self._lock:
            return list(self._interfaces)

    def new_vm(self) -> NetworkInterface:
        """Return the network device for one more VM on this network."""
        with self._lock:
            self._ensure_leases()
            index = len(self._interfaces) + 1
            if index > _MAX_VMS_PER_NETWORK:
                raise ConfigurationError(
                    f"a Network holds at most {_MAX_VMS_PER_NETWORK} VMs: create another Network"
                )
            assert self._id_lease is not None
            address = f"{_subnet_prefix(self._id_lease.value)}.{index}"
            vm_number = self._allocator.lease_vm_number("network interface MAC")
            interface = NetworkInterface(self, address, vm_number)
            self._interfaces.append(interface)
            return interface

    def close(self) -> None:
        """Release the network's port and its VMs' numbers. Idempotent."""
        with self._lock:
            self._closed = True
            leases = [i._vm_number for i in self._interfaces] + [self._port_lease, self._id_lease]
            self._port_lease = self._id_lease = None
        for lease in leases:
            if lease is not None:
                lease.release()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        port = self._port_lease.value if self._port_lease else None
        return f"Network(port={port}, vms={len(self._interfaces)})"


class NetworkInterface(Device):
    """One VM's connection to a :class:`Network`, made by :meth:`Network.new_vm`.

    The default guest brings the interface up with :attr:`address`.
    """

    guest_modules = ("virtio_net",)

    def __init__(self, network: Network, address: str, vm_number: Lease) -> None:
        self.network = network
        self._vm_number = vm_number
        self.mac = mac_address(vm_number.value)
        self.address = address
        self.prefix_length = 24

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        netdev = ctx.id_for(self, "net")
        return [
            "-netdev",
            multicast_netdev(netdev, self.network.port),
            *_virtio_nic(ctx, netdev, self.mac),
        ]

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        position = ctx.index_for(self, "net")
        return [f"pytest_qemu.net={self.mac},{self.address}/{self.prefix_length},,{position}"]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        return "net:multicast"

    def __repr__(self) -> str:
        return f"NetworkInterface(address={self.address!r}, mac={self.mac!r})"


class UserNetwork(Device):
    """QEMU user networking, with guest TCP ports forwarded to leased host ports.

    The guest gets ``10.0.2.15/24`` with gateway ``10.0.2.2``. Read a forward's
    host side with :meth:`host_port`; it always listens on ``127.0.0.1``. With
    ``restrict=True`` (the default) the guest cannot open connections out of
    the VM; forwarded ports still work.
    """

    guest_modules = ("virtio_net",)
    guest_address = "10.0.2.15"
    gateway = "10.0.2.2"

    def __init__(
        self,
        forwards: Iterable[int] = (),
        restrict: bool = True,
        allocator: Allocator | None = None,
    ) -> None:
        self.forwards = tuple(forwards)
        for port in self.forwards:
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigurationError(f"guest port {port!r} is not a TCP port number (1-65535)")
        if len(set(self.forwards)) != len(self.forwards):
            raise ConfigurationError(f"guest ports {self.forwards} are forwarded more than once")
        self.restrict = restrict
        self._allocator = allocator or _default_allocator()
        self._lock = threading.Lock()
        self._host_ports: dict[int, Lease] = {}
        self._vm_number: Lease | None = None

    @property
    def mac(self) -> str:
        """The guest interface's MAC, unique among all VMs on the host."""
        with self._lock:
            if self._vm_number is None:
                self._vm_number = self._allocator.lease_vm_number("user network MAC")
            return mac_address(self._vm_number.value)

    def host_port(self, guest_port: int) -> int:
        """The port on ``127.0.0.1`` that reaches *guest_port* in the guest."""
        if guest_port not in self.forwards:
            raise ConfigurationError(
                f"guest port {guest_port} is not forwarded; "
                f"the forwarded ports are {list(self.forwards)}"
            )
        with self._lock:
            if guest_port not in self._host_ports:
                self._host_ports[guest_port] = self._allocator.lease_port(
                    "tcp", f"user network forward to guest port {guest_port}"
                )
            return self._host_ports[guest_port].value

    def host_address(self, guest_port: int) -> tuple[str, int]:
        """``("127.0.0.1", port)``: where to connect to reach *guest_port*."""
        return ("127.0.0.1", self.host_port(guest_port))

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        netdev = ctx.id_for(self, "net")
        forwards = ",".join(
            f"hostfwd=tcp:127.0.0.1:{self.host_port(port)}-:{port}" for port in self.forwards
        )
        head = option_string("user", id=netdev, net="10.0.2.0/24", restrict=self.restrict)
        netdev_option = f"{head},{forwards}" if forwards else head
        return ["-netdev", netdev_option, *_virtio_nic(ctx, netdev, self.mac)]

    def kernel_args(self, ctx: DeviceContext) -> list[str]:
        position = ctx.index_for(self, "net")
        return [f"pytest_qemu.net={self.mac},{self.guest_address}/24,{self.gateway},{position}"]

    def release(self) -> None:
        with self._lock:
            leases = [*self._host_ports.values(), self._vm_number]
            self._host_ports.clear()
            self._vm_number = None
        for lease in leases:
            if lease is not None:
                lease.release()

    def __repr__(self) -> str:
        return f"UserNetwork(forwards={list(self.forwards)})"


class SSHForward(Device):
    """The network an SSH channel reaches a guest through: QEMU user networking
    (``restrict=on``: the guest reaches nothing outside), the guest configuring its
    interface by DHCP, and the guest's port 22 forwarded to :attr:`host_port` on
    ``127.0.0.1``, leased for the VM until :meth:`release`.

    The host port is no part of what the guest sees: a template's clones share it
    and each gets a forwarded port of its own.
    """

    guest_modules = ("virtio_net",)
    guest_port = 22

    def __init__(self, allocator: Allocator | None = None) -> None:
        self._lease: Lease | None = (allocator or _default_allocator()).lease_port(
            "tcp", "SSH forward to guest port 22"
        )
        #: The port on ``127.0.0.1`` that reaches the guest's port 22.
        self.host_port = self._lease.value

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        netdev = ctx.id_for(self, "ssh")
        forward = f"hostfwd=tcp:127.0.0.1:{self.host_port}-:{self.guest_port}"
        head = option_string("user", id=netdev, restrict=True)
        return [
            "-netdev",
            f"{head},{forward}",
            "-device",
            option_string(ctx.virtio_device("net"), netdev=netdev),
        ]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        return "ssh-forward"

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __repr__(self) -> str:
        return f"SSHForward(127.0.0.1:{self.host_port})"
