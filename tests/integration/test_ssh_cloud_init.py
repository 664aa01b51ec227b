"""The SSH channel and cloud-init: a stand-in for a stock cloud image, set up by a seed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_qemu import VM, AgentDied, BootTimeout, CloudInit, CommandTimeout, VMFactory
from pytest_qemu.channels.base import NoReply
from pytest_qemu.channels.ssh import SSHChannel
from pytest_qemu.channels.sshkeys import generate_key_pair, session_key
from pytest_qemu.images import DebianImage, build_debian_image
from pytest_qemu.plugin.session import QemuSession

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def arch() -> str:
    # The test image is Debian for the host's architecture (amd64).
    return "x86_64"


@pytest.fixture(scope="session")
def cloud_image(pytestconfig: pytest.Config) -> DebianImage:
    """The stand-in cloud image: cloud-init and sshd, no user, no password, no key."""
    return build_debian_image(QemuSession.of(pytestconfig).cache_dir, cloud=True)


#: Host name and instance id given: every VM gets the same seed, so they share a template.
SEED = CloudInit(
    user="tester",
    user_data={"write_files": [{"path": "/etc/seeded", "content": "yes\n"}]},
    meta_data={"instance-id": "pinned", "local-hostname": "cloudy"},
)
#: How the tests start VMs of the cloud image: firmware alone, cloud-init, SSH.
CLOUD_VM: dict[str, Any] = {
    "channel": "ssh",
    "cloud_init": SEED,
    "firmware": "uefi",
    "memory": 512,
    "boot_timeout": 600,
}


@pytest.fixture(scope="session")
def debian(pytestconfig: pytest.Config) -> DebianImage:
    """The Debian test image: no cloud-init, no sshd."""
    return build_debian_image(QemuSession.of(pytestconfig).cache_dir)


def forwarded_port(vm: VM) -> int:
    (forward,) = [arg for arg in vm.argv if "hostfwd=" in arg]
    match = re.search(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22", forward)
    assert match, forward
    return int(match.group(1))


@pytest.fixture(scope="module")
def cloud_vm(qemu_session_vm_factory: VMFactory, cloud_image: DebianImage) -> Iterator[VM]:
    """One VM of the cloud image, booted by UEFI firmware alone, set up by cloud-init,
    reached over SSH (shared: a first boot with cloud-init takes minutes under emulation)."""
    vm = qemu_session_vm_factory(image=cloud_image.disk, **CLOUD_VM)
    yield vm
    vm.shutdown()


def test_cloud_init_creates_the_user_with_the_sessions_key(cloud_vm: VM) -> None:
    assert cloud_vm.check("id -un") == "tester\n"
    assert cloud_vm.check("hostname") == "cloudy\n"
    assert cloud_vm.check("cat /etc/seeded") == "yes\n"  # the user's own user-data
    assert cloud_vm.check("sudo -n id -u") == "0\n"


def test_the_cloud_image_booted_through_uefi_by_itself(cloud_vm: VM) -> None:
    assert cloud_vm.run("test -d /sys/firmware/efi").returncode == 0
    assert "-kernel" not in cloud_vm.argv


def test_clones_of_an_ssh_template_each_have_their_own_port(
    cloud_vm: VM, qemu_vm_factory: VMFactory, cloud_image: DebianImage
) -> None:
    assert cloud_vm.restored_from is not None  # the template was built by this VM
    clone = qemu_vm_factory(image=cloud_image.disk, **CLOUD_VM)
    assert clone.restored_from == cloud_vm.restored_from
    assert forwarded_port(clone) != forwarded_port(cloud_vm)
    clone.check("touch /tmp/only-in-the-clone")
    assert cloud_vm.run("test -e /tmp/only-in-the-clone").returncode == 1
    assert clone.check("id -un") == "tester\n"


def test_commands_over_ssh(cloud_vm: VM, tmp_path: Path) -> None:
    result = cloud_vm.run("echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert cloud_vm.check("cat", input=b"in\x00put") == "in\x00put"
    assert cloud_vm.check("echo $A", env={"A": "b c"}) == "b c\n"
    assert cloud_vm.check("pwd", cwd="/tmp") == "/tmp\n"
    big = cloud_vm.run("head -c 20000000 /dev/zero")
    assert len(big.stdout_bytes) == 20_000_000
    source = tmp_path / "source"
    source.write_bytes(bytes(range(256)) * 1000)
    cloud_vm.put(source, "/tmp/copy", mode=0o640)
    cloud_vm.get("/tmp/copy", tmp_path / "back")
    assert (tmp_path / "back").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "back").read_bytes() == source.read_bytes()


def test_a_timeout_ends_the_remote_process_group(cloud_vm: VM) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        cloud_vm.run("sleep 300 & sleep 301; wait", timeout=2)
    assert time.monotonic() - started < 30
    assert cloud_vm.run("pgrep -f 'sleep 30[01]'").returncode == 1


def test_a_session_the_guest_ends_is_followed_by_a_new_login(cloud_vm: VM) -> None:
    # The guest ends the channel's session under a command (the user's sshd killed): the
    # command fails saying so, and the next one logs in again.
    with pytest.raises(AgentDied, match=r"the guest ended the SSH session .* logs in again"):
        cloud_vm.run('pkill -KILL -u "$(id -u)" -x sshd; sleep 30', timeout=60)
    assert cloud_vm.check("echo back") == "back\n"


def test_the_forward_is_on_loopback_only(cloud_vm: VM) -> None:
    forwards = [arg for arg in cloud_vm.argv if "hostfwd=" in arg]
    assert len(forwards) == 1
    assert re.search(r"hostfwd=tcp:127\.0\.0\.1:\d+-:22", forwards[0])
    assert "restrict=on" in forwards[0]


@pytest.mark.parametrize("wrong", ["key", "user"])
def test_a_wrong_key_or_user_is_a_clear_error_in_time(
    cloud_vm: VM, tmp_path: Path, wrong: str
) -> None:
    key = (
        generate_key_pair(tmp_path / "other").private_key
        if wrong == "key"
        else session_key().private_key
    )
    user = "tester" if wrong == "key" else "nobody"
    # The running VM's sshd, with these credentials.
    channel = SSHChannel(tmp_path, forwarded_port(cloud_vm), credentials=(user, key))
    started = time.monotonic()
    try:
        with pytest.raises(NoReply) as error:
            channel.wait_ready(time.monotonic() + 15)
    finally:
        channel.close()
    assert time.monotonic() - started < 15 + 25
    message = str(error.value)
    assert f"127.0.0.1:{channel.port}" in message and repr(user) in message
    assert "Permission denied" in message


def test_an_image_without_cloud_init_or_sshd_times_out_saying_so(
    qemu_vm_factory: VMFactory, debian: DebianImage
) -> None:
    started = time.monotonic()
    with pytest.raises(BootTimeout) as error:
        qemu_vm_factory(
            image=debian.disk, channel="ssh", cloud_init=True, memory=512, boot_timeout=45
        )
    assert time.monotonic() - started < 45 + 30
    message = str(error.value)
    assert "cloud-init did not pick up the seed" in message
    assert re.search(r"127\.0\.0\.1:\d+ \(the guest's port 22\)", message)
    assert "console" in message.lower()
