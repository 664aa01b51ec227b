"""Network devices and the command line around them: pure, with a private allocator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pytest_qemu import (
    ArbitraryArgs,
    ConfigurationError,
    DeviceContext,
    Disk,
    MachineSpec,
    Network,
    P9Directory,
    ReadOnlyDirectory,
    UserNetwork,
    VirtioRandom,
)
from pytest_qemu.allocation import Allocator
from pytest_qemu.devices.network import mac_address, multicast_netdev
from pytest_qemu.vm.argv import RuntimePaths, build_command_line, incoming_uri


@pytest.fixture
def allocator(tmp_path: Path) -> Iterator[Allocator]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    allocator = Allocator(state)
    yield allocator
    assert allocator.leases() == [], "a test left leases behind"


def command_line(tmp_path: Path, devices: list[object], **options: object) -> list[str]:
    spec = MachineSpec(kernel=tmp_path / "vmlinux", devices=devices)  # type: ignore[arg-type]
    paths = RuntimePaths.in_directory(tmp_path, tmp_path)
    return build_command_line(spec, paths, **options).argv  # type: ignore[arg-type]


def test_macs_are_locally_administered_and_do_not_wrap() -> None:
    assert mac_address(1) == "0e:00:00:00:00:01"
    assert mac_address(256) == "0e:00:00:00:01:00"
    assert mac_address(2**24 - 1) == "0e:00:00:ff:ff:ff"
    assert len({mac_address(n) for n in range(1, 2000)}) == 1999
    with pytest.raises(ConfigurationError):
        mac_address(2**40)


def test_multicast_netdev_is_always_bound_to_loopback() -> None:
    assert multicast_netdev("net0", 24000) == (
        "socket,id=net0,mcast=230.0.0.1:24000,localaddr=127.0.0.1"
    )


def test_every_multicast_netdev_on_a_command_line_is_bound_to_loopback(
    tmp_path: Path, allocator: Allocator
) -> None:
    with Network(allocator) as first, Network(allocator) as second:
        devices = [first.new_vm(), second.new_vm(), first.new_vm()]
        argv = command_line(tmp_path, devices)
        netdevs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-netdev"]
        assert len(netdevs) == 3
        for netdev in netdevs:
            assert "mcast=" in netdev
            assert re.search(r"(^|,)localaddr=127\.0\.0\.1(,|$)", netdev), netdev
        assert f"mcast=230.0.0.1:{first.port}" in netdevs[0]
        assert first.port != second.port


def test_network_hands_out_distinct_macs_and_addresses_from_threads(allocator: Allocator) -> None:
    with Network(allocator) as network, ThreadPoolExecutor(8) as pool:
        interfaces = list(pool.map(lambda _: network.new_vm(), range(40)))
        assert len({interface.mac for interface in interfaces}) == 40
        assert len({interface.address for interface in interfaces}) == 40
        prefix = network.subnet_prefix
        assert all(interface.address.startswith(prefix + ".") for interface in interfaces)
        assert not prefix.startswith("10.0."), "10.0.2.0/24 belongs to user networking"
        assert len(allocator.leases()) == 40 + 2  # MACs, the port, the network id
    assert allocator.leases() == []


def test_closed_network_refuses_new_vms(allocator: Allocator) -> None:
    network = Network(allocator)
    network.close()
    with pytest.raises(ConfigurationError, match="closed"):
        network.new_vm()


def test_kernel_arguments_carry_mac_address_and_position(allocator: Allocator) -> None:
    with Network(allocator) as network:
        first, second = network.new_vm(), network.new_vm()
        ctx = DeviceContext()
        first.qemu_args(ctx)
        assert second.kernel_args(ctx) == [f"pytest_qemu.net={second.mac},{second.address}/24,,1"]


def test_user_network_forwards_leased_loopback_ports(allocator: Allocator) -> None:
    device = UserNetwork(forwards=[80, 22], allocator=allocator)
    args = device.qemu_args(DeviceContext())
    host, port = device.host_address(80)
    assert host == "127.0.0.1"
    assert f"hostfwd=tcp:127.0.0.1:{port}-:80" in args[1]
    assert f"hostfwd=tcp:127.0.0.1:{device.host_port(22)}-:22" in args[1]
    assert "restrict=on" in args[1]
    assert device.snapshot_layout(DeviceContext()) is None
    with pytest.raises(ConfigurationError, match="guest port 443 is not forwarded"):
        device.host_port(443)
    device.release()
    assert allocator.leases() == []


@pytest.mark.parametrize("bad", [0, 70000, "80"])
def test_user_network_rejects_bad_ports(allocator: Allocator, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="not a TCP port"):
        UserNetwork(forwards=[bad], allocator=allocator)  # type: ignore[list-item]


def test_setup_settings_move_off_the_kernel_command_line_for_snapshots(tmp_path: Path) -> None:
    share = P9Directory(tmp_path)
    spec = MachineSpec(
        kernel=tmp_path / "vmlinux", kernel_args=["quiet"], devices=[share, VirtioRandom()]
    )
    paths = RuntimePaths.in_directory(tmp_path, tmp_path)
    on_boot = build_command_line(spec, paths)
    for_snapshot = build_command_line(spec, paths, setup_on_kernel_command_line=False)
    setting = f"pytest_qemu.mount=9p,fs0,{share.guest_path},rw"
    assert setting in on_boot.argv[on_boot.argv.index("-append") + 1]
    assert for_snapshot.argv[for_snapshot.argv.index("-append") + 1] == "quiet"
    assert for_snapshot.setup_args == [setting]
    assert for_snapshot.device_layout == ["9p:fs0:False", "rng"]


def test_devices_without_a_layout_disable_snapshots(tmp_path: Path) -> None:
    spec = MachineSpec(kernel=tmp_path / "k", devices=[VirtioRandom(), ArbitraryArgs(["-S"])])
    built = build_command_line(spec, RuntimePaths.in_directory(tmp_path, tmp_path))
    assert built.device_layout is None


def test_a_clone_reads_its_state_from_an_inherited_descriptor(tmp_path: Path) -> None:
    argv = command_line(tmp_path, [], incoming_fd=7, qmp_listener_fd=5)
    assert argv[-2:] == ["-incoming", "defer"]
    assert incoming_uri(7) == "fd:7"
    assert "socket,id=qmp,fd=5,server=on,wait=off" in argv
    assert not any("qmp.sock" in argument for argument in argv)


def test_clashing_names_are_rejected(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 512)
    with pytest.raises(ConfigurationError, match="9p mount tag 'fs0'"):
        command_line(tmp_path, [P9Directory(tmp_path), P9Directory(tmp_path, tag="fs0")])
    with pytest.raises(ConfigurationError, match="disk serial"):
        command_line(
            tmp_path, [ReadOnlyDirectory(tmp_path, name="data"), Disk(image, serial="data")]
        )
    with pytest.raises(ConfigurationError, match="guest path"):
        command_line(
            tmp_path,
            [
                P9Directory(tmp_path, guest_path="/mnt/x"),
                ReadOnlyDirectory(tmp_path, guest_path="/mnt/x"),
            ],
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory": 16}, "memory 16 MiB"),
        ({"cpus": 0}, "cpus 0"),
        ({"accelerator": "hax"}, "accelerator 'hax'"),
        ({"devices": ["-device virtio-rng-pci"]}, "is not a pytest_qemu Device"),
    ],
)
def test_machine_spec_validation(tmp_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        MachineSpec(kernel=tmp_path / "k", **options)  # type: ignore[arg-type]
