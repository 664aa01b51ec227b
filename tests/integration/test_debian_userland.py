"""A Debian userland of the VM's architecture: packages, a pristine root, shared tmp_path,
private writes, and clear errors. One userland per architecture is built for the whole
suite (``packages=["python3-pytest"]``, the set docs/other-architectures.md's example
uses too, kept in the plugin's cache between runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qemu import VM, ConfigurationError, SetupError, VMFactory
from pytest_qemu.images.debian_root import DebianRootRecipe
from pytest_qemu.platforms import get_platform

#: The one package set these tests use: one build per architecture for the suite.
PACKAGES = ["python3-pytest"]

pytestmark = [
    pytest.mark.vm,
    pytest.mark.qemu(userland="debian", packages=PACKAGES),
    # The first test of an architecture builds its userland: minutes under emulation.
    pytest.mark.timeout(3600),
]


def test_python3_reports_the_guest_architecture_and_byte_order(qemu_vm: VM, arch: str) -> None:
    machine, order = qemu_vm.check(
        "python3 -c 'import platform, sys; print(platform.machine(), sys.byteorder)'"
    ).split()
    assert order == get_platform(arch).byte_order == "little"
    assert machine == arch
    assert qemu_vm.check("id -u") == "0\n"
    assert "Debian" in qemu_vm.check("cat /etc/os-release")


@pytest.mark.parametrize("arch", ["s390x"], indirect=True)
def test_python3_on_s390x_says_big(qemu_vm: VM, arch: str) -> None:
    assert qemu_vm.check("python3 -c 'import sys; print(sys.byteorder)'") == "big\n"
    assert qemu_vm.check("dpkg --print-architecture") == "s390x\n"


def test_the_root_is_pristine_debian_without_host_tools(qemu_vm: VM, arch: str) -> None:
    # Host tools the machine running the tests has, and no minimal Debian does.
    for tool in ("gcc", "cc", "make", "qemu-img", "git", "mmdebstrap"):
        assert qemu_vm.run(f"command -v {tool}").returncode != 0, tool
    # Nor the host's files: this checkout is not there.
    assert qemu_vm.run(f"test -e {Path(__file__).resolve().parent}").returncode != 0
    installed = qemu_vm.check("dpkg-query -W -f '${Status}\\n' python3 dpkg")
    assert installed == "install ok installed\n" * 2
    # Every package was configured on the first boot.
    assert qemu_vm.check("dpkg --audit; echo $?").strip().endswith("0")


def test_tmp_path_is_shared_both_ways(qemu_vm: VM, tmp_path: Path) -> None:
    (tmp_path / "from-host.txt").write_text("written on the host\n")
    assert qemu_vm.check(f"cat {tmp_path}/from-host.txt") == "written on the host\n"
    qemu_vm.check(f"python3 -c 'print(6 * 7)' > {tmp_path}/from-guest.txt")
    assert (tmp_path / "from-guest.txt").read_text() == "42\n"


def test_clones_do_not_see_each_others_writes(qemu_vm_factory: VMFactory) -> None:
    first = qemu_vm_factory()
    second = qemu_vm_factory()
    first.check("echo first > /etc/written-by-a-test")
    assert second.run("cat /etc/written-by-a-test").returncode != 0
    assert first.check("cat /etc/written-by-a-test") == "first\n"
    third = qemu_vm_factory()
    assert third.restored_from is not None, "a later VM is a clone of the template"
    assert third.run("cat /etc/written-by-a-test").returncode != 0


@pytest.mark.parametrize("arch", ["x86_64"], indirect=True)
def test_an_unknown_package_fails_clearly_and_leaves_nothing(
    qemu_vm_factory: VMFactory, arch: str, pytestconfig: pytest.Config
) -> None:
    packages = ["python3", "no-such-package-pytest-qemu"]
    with pytest.raises(SetupError) as raised:
        qemu_vm_factory(packages=packages)
    message = str(raised.value)
    assert "no-such-package-pytest-qemu" in message
    assert "amd64" in message and "bookworm" in message
    assert "Unable to locate package" in message
    # Nothing of this build is left (other workers may be building other userlands).
    name = DebianRootRecipe.of(get_platform(arch), "bookworm", packages).name
    userlands = Path(qemu_vm_factory.guest.cache.root) / "userlands"
    assert not [path for path in userlands.iterdir() if name in path.name]


@pytest.mark.parametrize("arch", ["x86_64"], indirect=True)
def test_packages_need_the_debian_userland(qemu_vm_factory: VMFactory, arch: str) -> None:
    with pytest.raises(ConfigurationError, match=r"packages=\['python3'\].*userland='debian'"):
        qemu_vm_factory(userland="busybox", packages=["python3"])
