"""The command channel, console and QMP of a real VM (one boot for the whole module)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pytest_qemu import VM, CommandFailed, CommandTimeout, VMFactory

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def shared_vm(qemu_session_vm_factory: VMFactory, arch: str) -> Iterator[VM]:
    # One VM for the many small checks below: boots are the slow part under TCG.
    with qemu_session_vm_factory(arch=arch) as vm:
        yield vm


def test_streams_and_status_are_separate(shared_vm: VM) -> None:
    result = shared_vm.run("echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")


def test_arbitrary_bytes_and_lines_survive(shared_vm: VM) -> None:
    payload = bytes(range(256)) * 4 + b"\n\nlast line without newline"
    result = shared_vm.run("cat", input=payload)
    assert result.stdout_bytes == payload
    multi = shared_vm.run("printf 'a\\n\\n  b  \\n'")
    assert multi.stdout == "a\n\n  b  \n"


def test_large_output(shared_vm: VM) -> None:
    result = shared_vm.run("head -c 1000000 /dev/zero | tr '\\0' x")
    assert result.stdout == "x" * 1_000_000


def test_quotes_and_multiline_commands(shared_vm: VM) -> None:
    script = """
    name='it'"'"'s'
    for word in "$name" "two words"; do
        echo "[$word]"
    done
    """
    assert shared_vm.check(script) == "[it's]\n[two words]\n"


def test_check_raises_with_everything_needed(shared_vm: VM) -> None:
    with pytest.raises(CommandFailed) as failure:
        shared_vm.check("echo partial; echo broken >&2; exit 4")
    message = str(failure.value)
    assert failure.value.returncode == 4
    assert "exit 4" in message and "partial" in message and "broken" in message


def test_timeout_kills_the_command_and_keeps_the_vm(shared_vm: VM) -> None:
    with pytest.raises(CommandTimeout, match="sleep 30"):
        shared_vm.run("sleep 30", timeout=1)
    assert shared_vm.check("echo still here") == "still here\n"


def test_background_output_does_not_leak_into_later_commands(shared_vm: VM) -> None:
    shared_vm.check("(sleep 1; echo late; echo late-error >&2) & echo started")
    result = shared_vm.run("sleep 2; echo now")
    assert (result.stdout, result.stderr) == ("now\n", "")


def test_commands_do_not_appear_on_the_console(shared_vm: VM) -> None:
    shared_vm.check("echo secret-marker-$((6 * 7))")
    assert "secret-marker-42" not in shared_vm.console.text()


def test_console_expect_and_write(shared_vm: VM) -> None:
    shared_vm.console.expect("guest ready", timeout=5)
    shared_vm.console.write("echo typed-$((40 + 2))\n")
    shared_vm.console.expect("typed-42", timeout=30)
    shared_vm.check("echo from-agent-to-console > /dev/console")
    shared_vm.console.expect("from-agent-to-console", timeout=10)


def test_qmp(shared_vm: VM) -> None:
    assert shared_vm.qmp("query-status")["status"] == "running"
    assert os.path.exists(shared_vm.qmp_socket)
    names = [
        device["name"] for device in shared_vm.qmp("qom-list", path="/machine/peripheral-anon")
    ]
    assert names


def test_argv_and_logs(shared_vm: VM, arch: str) -> None:
    assert shared_vm.argv[0].endswith(f"qemu-system-{arch}")
    assert shared_vm.check("uname -m") == f"{arch}\n"
    assert "-no-reboot" in shared_vm.argv
    assert shared_vm.console_log.is_file()
    assert "pytest-qemu: guest ready" in shared_vm.console_log.read_text(errors="replace")
