"""The SSH channel's and cloud-init seed's pieces without QEMU: command lines, seeds, errors."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pytest_qemu import CloudInit, ConfigurationError
from pytest_qemu.channels import open_channel
from pytest_qemu.channels.base import ChannelClosed, CommandRequest, NoReply
from pytest_qemu.channels.shell import shell_runner
from pytest_qemu.channels.ssh import SSHChannel
from pytest_qemu.channels.sshkeys import session_key
from pytest_qemu.devices.base import DeviceContext
from pytest_qemu.devices.cloudinit import CloudInitSeed
from pytest_qemu.devices.network import SSHForward
from pytest_qemu.guests.cloudinit import (
    cloud_init_setting,
    merge_config,
    seed_documents,
    write_seed,
)
from pytest_qemu.guests.image import ImageGuest
from pytest_qemu.platforms import get_platform


def test_a_request_becomes_one_shell_line_under_timeout() -> None:
    line = shell_runner(
        CommandRequest("echo $A; pwd", timeout=2.4, env={"A": "b c"}, cwd="/my dir")
    )
    result = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=False)
    assert result.stdout == "b c\n/my dir\n" or "can't cd" in result.stderr + result.stdout
    assert line.startswith("timeout -s KILL 2 env 'A=b c' sh -c ")
    assert shell_runner(CommandRequest("true", timeout=None)).startswith("timeout -s KILL 0 ")


def test_a_shell_line_reports_its_cwd_failing_with_126() -> None:
    line = shell_runner(CommandRequest("true", cwd="/no/such/dir"))
    assert subprocess.run(["sh", "-c", line], check=False).returncode == 126


def test_the_session_key_is_private_and_outside_home() -> None:
    key = session_key()
    assert key.private_key.parent.stat().st_mode & 0o077 == 0
    assert ".ssh" not in key.private_key.parts
    assert key.public_key.startswith("ssh-ed25519 ")
    assert session_key() is key


def test_the_ssh_forward_is_on_loopback_only_and_leased(tmp_path: Path) -> None:
    forward, other = SSHForward(), SSHForward()
    try:
        args = forward.qemu_args(DeviceContext(get_platform()))
        netdev = args[args.index("-netdev") + 1]
        assert f"hostfwd=tcp:127.0.0.1:{forward.host_port}-:22" in netdev
        assert "restrict=on" in netdev
        assert args[args.index("-device") + 1].startswith(get_platform().virtio_device("net"))
        assert other.host_port != forward.host_port
        # The port is the host's side only: clones of one template each get their own.
        assert forward.snapshot_layout(DeviceContext()) == other.snapshot_layout(DeviceContext())
    finally:
        forward.release()
        other.release()
    forward.release()  # idempotent


def test_the_ssh_channel_logs_in_with_the_sessions_key_by_default(tmp_path: Path) -> None:
    channel = open_channel("ssh", tmp_path, get_platform(), port=2222, credentials=None)
    assert isinstance(channel, SSHChannel)
    assert (channel.user, channel.key, channel.port) == ("pytest", session_key().private_key, 2222)
    assert channel.known_hosts == tmp_path / "ssh_known_hosts"
    assert channel.qemu_args() == []  # the SSHForward device is the transport
    channel.close()


def test_user_data_is_merged_into_the_seeds() -> None:
    config = CloudInit(
        user="alice",
        user_data={"users": [{"name": "bob"}], "runcmd": [["true"]], "hostname": "mine"},
        meta_data={"extra": 1},
    )
    documents = seed_documents(config, "ssh-ed25519 AAAA k", "vm-1", "vm-1")
    assert documents["user-data"].startswith("#cloud-config\n")
    user_data = json.loads(documents["user-data"].split("\n", 1)[1])
    assert [user["name"] for user in user_data["users"]] == ["alice", "bob"]
    assert user_data["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA k"]
    assert user_data["runcmd"] == [["true"]]
    assert user_data["hostname"] == "mine"
    assert json.loads(documents["meta-data"]) == {
        "instance-id": "vm-1", "local-hostname": "vm-1", "extra": 1,
    }  # fmt: skip
    assert merge_config({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}


def test_a_seed_is_a_cidata_fat_volume(tmp_path: Path) -> None:
    seed = write_seed(tmp_path / "seed.img", {"meta-data": "{}\n", "user-data": "#cloud-config\n"})
    label = subprocess.run(
        ["mlabel", "-s", "-i", str(seed), "::"], capture_output=True, text=True, check=True
    )
    assert "CIDATA" in label.stdout
    listing = subprocess.run(
        ["mtype", "-i", str(seed), "::user-data"], capture_output=True, text=True, check=True
    )
    assert listing.stdout == "#cloud-config\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["seed.img"]
    args = CloudInitSeed(seed).qemu_args(DeviceContext(get_platform()))
    assert "readonly=on" in args[1] and "format=raw" in args[1]


@pytest.mark.parametrize("value", ["yes", 1, CloudInit])
def test_a_wrong_cloud_init_value_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="cloud_init="):
        cloud_init_setting(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["", "two words", "a;b"])
def test_a_wrong_user_name_is_refused(user: str) -> None:
    with pytest.raises(ConfigurationError, match="CloudInit"):
        CloudInit(user=user)


def test_ssh_without_credentials_or_cloud_init_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    with pytest.raises(ConfigurationError, match=r"credentials=.*cloud_init="):
        ImageGuest(get_platform(), image, channel="ssh")
    with pytest.raises(ConfigurationError, match="does not exist"):
        ImageGuest(get_platform(), image, channel="ssh", credentials=("u", str(tmp_path / "k")))


def test_nothing_answering_on_the_port_is_no_reply_naming_it(tmp_path: Path) -> None:
    forward = SSHForward()  # a leased port nothing listens on
    channel = SSHChannel(tmp_path, forward.host_port)
    try:
        channel.connect(time.monotonic() + 1, lambda: True)
        started = time.monotonic()
        with pytest.raises(NoReply) as error:
            channel.wait_ready(time.monotonic() + 3)
        assert time.monotonic() - started < 3 + 5
        assert f"127.0.0.1:{forward.host_port} (the guest's port 22)" in str(error.value)
        assert "Connection refused" in str(error.value)
        channel.connect(time.monotonic() + 1, lambda: False)
        with pytest.raises(ChannelClosed, match="QEMU exited"):
            channel.wait_ready(time.monotonic() + 3)
    finally:
        channel.close()
        forward.release()
