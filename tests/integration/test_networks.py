"""Networks between real VMs, and user networking with forwarded ports."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from pytest_qemu import Network, UserNetwork
from pytest_qemu.plugin.factory import VMFactory

pytestmark = pytest.mark.vm


def test_three_vms_started_concurrently_ping_each_other(
    qemu_vm_factory: VMFactory, qemu_network: Network
) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        interfaces = list(pool.map(lambda _: qemu_network.new_vm(), range(3)))
        vms = list(pool.map(lambda interface: qemu_vm_factory(devices=[interface]), interfaces))
    assert len({interface.mac for interface in interfaces}) == 3
    for vm in vms:
        for interface in interfaces:
            vm.check(f"ping -c 1 -W 5 {interface.address}", timeout=30)


def test_two_networks_do_not_see_each_other(qemu_vm_factory: VMFactory) -> None:
    with Network() as first, Network() as second:
        assert first.port != second.port
        on_first = first.new_vm()
        vm_first = qemu_vm_factory(devices=[on_first])
        vm_second = qemu_vm_factory(devices=[second.new_vm()])
        # Give the second VM an address in the first network's subnet: only a shared
        # Ethernet segment would let the first VM reach it.
        vm_second.check(f"ip addr add {first.subnet_prefix}.200/24 dev eth0")
        vm_second.check(f"ping -c 1 -W 2 {first.subnet_prefix}.200")
        unreachable = vm_first.run(f"ping -c 2 -W 2 {first.subnet_prefix}.200", timeout=30)
        assert unreachable.returncode != 0
        assert vm_first.run(f"ping -c 1 -W 2 {on_first.address}").returncode == 0


def test_host_fetches_a_page_from_a_guest_httpd(qemu_vm_factory: VMFactory) -> None:
    network = UserNetwork(forwards=[80])
    vm = qemu_vm_factory(devices=[network])
    vm.check("mkdir -p /srv && echo hello-from-the-guest > /srv/index.html && httpd -h /srv -p 80")
    host, port = network.host_address(80)
    assert host == "127.0.0.1"
    with urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=30) as response:
        assert response.read() == b"hello-from-the-guest\n"


@pytest.mark.parametrize("qemu_arch", [None], ids=["mixed"])
def test_an_x86_vm_and_an_arm_vm_share_a_network(
    qemu_vm_factory: VMFactory, qemu_network: Network
) -> None:
    nics = {arch: qemu_network.new_vm() for arch in ("x86_64", "aarch64")}
    vms = {arch: qemu_vm_factory(devices=[nic], arch=arch) for arch, nic in nics.items()}
    assert vms["aarch64"].check("uname -m") == "aarch64\n"
    vms["x86_64"].check(f"ping -c 1 -W 5 {nics['aarch64'].address}", timeout=30)
    vms["aarch64"].check(f"ping -c 1 -W 5 {nics['x86_64'].address}", timeout=30)
