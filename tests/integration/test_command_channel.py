"""The command channel under faults and load: agent death, timeouts, big output, files."""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from pathlib import Path

import pytest

from pytest_qemu import (
    VM,
    AgentDied,
    BootTimeout,
    CommandRefused,
    CommandTimeout,
    ConfigurationError,
    TransferFailed,
    VMExited,
)
from pytest_qemu.guests.cpio import CpioWriter
from pytest_qemu.plugin.factory import VMFactory
from tests.helpers import small_tmpfs

pytestmark = pytest.mark.vm


def test_killing_every_process_fails_the_command_at_once_and_the_vm_goes_on(
    qemu_vm: VM,
) -> None:
    started = time.monotonic()
    with pytest.raises(AgentDied, match="agent died"):
        qemu_vm.run("kill -9 -1; sleep 100", timeout=None)
    assert time.monotonic() - started < 5
    # The agent restarts and nothing holds its port: the next command just works.
    assert qemu_vm.check("echo back") == "back\n"
    assert "Device or resource busy" not in qemu_vm.console.text()


@pytest.mark.parametrize(
    ("command", "reason"),
    [("poweroff -f", "powered off.*guest-shutdown"), ("reboot -f", "rebooted.*guest-reset")],
)
def test_a_guest_that_powers_off_is_vm_exited_with_the_reason_every_time(
    qemu_vm_factory: VMFactory, command: str, reason: str
) -> None:
    # The agent's port closes before QEMU exits: that is not an agent death (issue 16:
    # 10 of 24 were AgentDied on a busy host). Several VMs at once make the gap longer.
    vms = [qemu_vm_factory() for _ in range(3)]
    for vm in vms:
        with pytest.raises(VMExited, match=reason):
            vm.run(command)
        assert not vm.is_running()


def test_a_full_host_disk_is_named_and_the_guest_is_free_for_the_next_command(
    pytestconfig: pytest.Config, tmp_path: Path, arch: str
) -> None:
    # The VM's log directory (where big output spills, like tmp_path) on a 4 MiB disk.
    with small_tmpfs(tmp_path / "full", size_kib=4096) as full:
        factory = VMFactory.from_config(pytestconfig, log_root=full / "logs")
        try:
            vm = factory(arch=arch)
            with pytest.raises(CommandRefused) as refused:
                vm.run("head -c 40000000 /dev/zero; echo done >&2", timeout=120)
            message = str(refused.value)
            assert "exit status 0" in message and str(vm.log_dir) in message
            assert "No space left on device" in message and "full" in message
            # The guest finished that command: the next one is not refused as "running".
            assert vm.check("echo next") == "next\n"
            vm.check("head -c 8000000 /dev/zero > /tmp/big")
            with pytest.raises(TransferFailed, match=f"{re.escape(str(full))}.*No space left"):
                vm.get("/tmp/big", full)
            assert not list(full.glob(".*.partial"))
            assert vm.check("echo after") == "after\n"
        finally:
            factory.close()


def test_a_timeout_kills_the_whole_process_group(qemu_vm: VM) -> None:
    with pytest.raises(CommandTimeout, match="still usable") as timeout:
        qemu_vm.run("sleep 100 & echo $! > /tmp/child; echo started; sleep 100", timeout=1)
    assert timeout.value.result is not None
    assert timeout.value.result.stdout == "started\n"
    child = qemu_vm.check("cat /tmp/child").strip()
    assert qemu_vm.run(f"kill -0 {child}").returncode != 0, "the backgrounded child survived"


def test_background_processes_never_block_or_leak(qemu_vm: VM) -> None:
    # The background writer outlives its command: the command returns, and its later
    # output goes nowhere rather than into the next command's.
    assert qemu_vm.check("(sleep 1; echo late; echo late >&2) & echo now") == "now\n"
    result = qemu_vm.run("sleep 2; echo next")
    assert (result.stdout, result.stderr) == ("next\n", "")


def test_env_cwd_and_input(qemu_vm: VM) -> None:
    result = qemu_vm.run(
        'pwd; echo "$GREETING"; cat', env={"GREETING": "a b'c"}, cwd="/tmp", input="piped\n"
    )
    assert result.stdout == "/tmp\na b'c\npiped\n"
    assert qemu_vm.check("pwd") == "/root\n"
    missing = qemu_vm.run("true", cwd="/no/such/dir")
    assert missing.returncode == 126 and "/no/such/dir" in missing.stderr
    with pytest.raises(ConfigurationError, match="BAD=NAME"):
        qemu_vm.run("true", env={"BAD=NAME": "x"})


def test_a_signal_is_a_negative_status(qemu_vm: VM) -> None:
    assert qemu_vm.run("kill -9 $$").returncode == -9


def test_100_mb_of_output_arrive_intact(qemu_vm: VM) -> None:
    # 1 MB of known text in the guest, printed 100 times.
    qemu_vm.check("seq 1 148000 > /tmp/pattern")
    pattern = "".join(f"{number}\n" for number in range(1, 148001)).encode()
    result = qemu_vm.run("for i in $(seq 100); do cat /tmp/pattern; done", timeout=300)
    assert result.stdout_output.size == 100 * len(pattern)
    assert result.stdout_output.spilled, "output past the memory limit must go to a file"
    expected = hashlib.sha256(pattern * 100).hexdigest()
    digest = hashlib.sha256()
    with result.open_stdout() as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == expected


def test_input_of_any_bytes(qemu_vm: VM) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    result = qemu_vm.run("cat", input=payload)
    assert result.stdout_bytes == payload


def test_put_and_get_keep_bytes_and_mode(qemu_vm: VM, tmp_path: Path) -> None:
    source = tmp_path / "tool.sh"
    source.write_bytes(b"#!/bin/sh\necho from-a-put-script\n" + os.urandom(2_000_000))
    source.chmod(0o751)
    qemu_vm.put(source, "/root/tool.sh")
    assert qemu_vm.check("stat -c %a /root/tool.sh") == "751\n"
    assert qemu_vm.run("/root/tool.sh").stdout.startswith("from-a-put-script")
    back = qemu_vm.get("/root/tool.sh", tmp_path / "back.sh")
    assert back.read_bytes() == source.read_bytes()
    assert back.stat().st_mode & 0o777 == 0o751
    qemu_vm.check("printf made-in-guest > /tmp/out.txt; chmod 600 /tmp/out.txt")
    into_directory = qemu_vm.get("/tmp/out.txt", tmp_path)
    assert into_directory == tmp_path / "out.txt"
    assert into_directory.read_text() == "made-in-guest"


def test_transfer_errors_name_the_path(qemu_vm: VM, tmp_path: Path) -> None:
    with pytest.raises(TransferFailed, match="/no/such/file"):
        qemu_vm.get("/no/such/file", tmp_path)
    (tmp_path / "x").write_text("x")
    with pytest.raises(TransferFailed, match="/no/such/dir/x"):
        qemu_vm.put(tmp_path / "x", "/no/such/dir/x")
    with pytest.raises(ConfigurationError, match="not a file"):
        qemu_vm.put(tmp_path / "missing", "/tmp/x")
    assert not list(tmp_path.glob(".*partial")), "a failed get leaves no partial file"


def _slow_initramfs(tmp_path: Path, qemu_vm_factory: VMFactory, delay: int) -> Path:
    """The default initramfs with an init that sleeps *delay* seconds before the real one."""
    default = qemu_vm_factory.guest.boot_files([]).initramfs
    assert default is not None
    overlay = io.BytesIO()
    with CpioWriter(overlay) as archive:
        archive.add_file(
            "sbin/slow-init", f"#!/bin/sh\nsleep {delay}\nexec /init\n".encode(), 0o755
        )
    combined = tmp_path / "slow.cpio"
    combined.write_bytes(default.read_bytes() + overlay.getvalue())
    return combined


# Boot timing does not depend on the architecture: once is enough for these slow ones.
@pytest.mark.parametrize("qemu_arch", ["x86_64"])
def test_a_slow_guest_boots_within_a_long_boot_timeout(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    initramfs = _slow_initramfs(tmp_path, qemu_vm_factory, 25)
    vm = qemu_vm_factory(
        initramfs=initramfs, kernel_args=["rdinit=/sbin/slow-init"], boot_timeout=60,
        snapshot=False,
    )  # fmt: skip
    assert (vm.boot_seconds or 0) >= 25
    assert vm.check("echo up") == "up\n"


@pytest.mark.parametrize("qemu_arch", ["x86_64"])
def test_the_boot_timeout_is_honoured_to_the_second(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    initramfs = _slow_initramfs(tmp_path, qemu_vm_factory, 60)
    started = time.monotonic()
    with pytest.raises(BootTimeout, match="boot timeout of 4 s"):
        qemu_vm_factory(
            initramfs=initramfs, kernel_args=["rdinit=/sbin/slow-init"], boot_timeout=4,
            snapshot=False,
        )  # fmt: skip
    assert 4 <= time.monotonic() - started < 5.5


#: Commands whose every observable outcome must not depend on when they run.
_SHELL_CASES = [
    "nonexistent-command-xyz",
    "echo $0 $#; exit 3",
    "if",  # a syntax error
    'echo "${__pytest_qemu_command-unset}"; set | grep -c pytest_qemu_command',
    "cat; echo done >&2",
    "exec echo replaced",
]


def test_a_clones_first_command_runs_like_any_other(qemu_vm_factory: VMFactory) -> None:
    # A clone's first plain command goes to the shell its template started ahead; later
    # ones, and those with an environment or a directory, start their own.
    outcomes = []
    for case in _SHELL_CASES:
        vm = qemu_vm_factory()
        first = vm.run(case, input="in\n")
        again = vm.run(case, input="in\n")
        with_env = vm.run(case, input="in\n", env={"X": "1"})
        outcomes.append((case, first.returncode, first.stdout, first.stderr))
        for later in (again, with_env):
            assert (later.returncode, later.stdout, later.stderr) == (
                first.returncode,
                first.stdout,
                first.stderr,
            ), case
        vm.kill()
    returncodes = {case: code for case, code, _, _ in outcomes}
    assert returncodes["nonexistent-command-xyz"] == 127
    assert returncodes["echo $0 $#; exit 3"] == 3
    assert returncodes["if"] == 2
    vm = qemu_vm_factory()
    shell = "tr '\\0' ' ' </proc/$$/cmdline"
    assert "read -r -d" in vm.check(shell)  # the shell started ahead took the first command
    assert "read -r -d" not in vm.check(shell)
    stdouts = {case: out for case, _, out, _ in outcomes}
    assert stdouts["echo $0 $#; exit 3"] == "sh 0\n"
    assert stdouts[_SHELL_CASES[3]] == "unset\n0\n"  # the agent's variable does not leak
    assert stdouts["cat; echo done >&2"] == "in\n"
    assert stdouts["exec echo replaced"] == "replaced\n"


def test_a_clones_first_command_can_time_out_and_the_vm_goes_on(qemu_vm: VM) -> None:
    with pytest.raises(CommandTimeout, match="still usable"):
        qemu_vm.run("echo started; sleep 100", timeout=1)
    assert qemu_vm.check("echo next") == "next\n"
