"""The lines the console and SSH channels send a restored or running guest, run by a real
shell on the host where they can be (no QEMU)."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from pathlib import Path

import pytest

from pytest_qemu.channels import console
from pytest_qemu.channels.base import CommandRequest
from pytest_qemu.channels.console import command_script, ready_probe
from pytest_qemu.channels.ssh import personalise_line


def _shell(line: str, prelude: str = "") -> str:
    result = subprocess.run(
        ["sh", "-c", prelude + line], capture_output=True, text=True, check=False, timeout=30
    )
    return result.stdout + result.stderr


def test_a_booting_guest_is_probed_without_touching_its_clock() -> None:
    line = ready_probe("abc123", resumed=False).decode()
    assert "date" not in line and line.count("\n") == 1
    assert re.search(r"PQabc123_0_42\n", _shell(line))
    # Its echo on the terminal is never taken for the answer.
    assert not re.search(rb"PQabc123_\d+_42", line.encode())
    # More than 32 bytes typed before a booting aarch64 guest's kernel opens its UART
    # wedge the console's input (see ConsoleChannel._typed_bytes_pending).
    assert len(line.encode()) < 32


def test_a_restored_guest_gets_the_hosts_clock_and_entropy_in_the_probe() -> None:
    line = ready_probe("abc123", resumed=True).decode()
    assert line.count("\n") == 1
    stamp = int(re.search(r"date -u -s @(\d+) ", line).group(1))  # type: ignore[union-attr]
    assert abs(stamp - time.time()) < 5
    assert ready_probe("abc123", resumed=True) != ready_probe("abc123", resumed=True)
    # date, stood in for by a shell function (the host's clock stays as it is): its
    # status reaches the marker, and on success the entropy goes to /dev/urandom.
    assert re.search(r"PQabc123_0_42", _shell(line, "date() { return 0; }; "))
    assert re.search(r"PQabc123_5_42", _shell(line, "date() { return 5; }; "))


@pytest.mark.parametrize("stdin", [b"", b"\x00binary\xff input\n" * 300])
def test_a_command_script_frames_output_and_status_and_cleans_up(
    stdin: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    monkeypatch.setattr(console, "_WORK", str(work))
    request = CommandRequest("cat; echo out; exit 3", stdin=stdin, timeout=20)
    output = _shell(command_script(request, 7))
    match = re.search(r"PQ_OUT_7\n(.*)PQ_ERR_7\n(.*)PQ_STATUS_7_(\d+)\n", output, re.S)
    assert match is not None, output
    assert base64.b64decode("".join(match.group(1).split())) == stdin + b"out\n"
    assert match.group(2) == ""  # nothing on stderr: nothing encoded
    assert match.group(3) == "3"
    assert list(work.iterdir()) == []


def test_an_ssh_clone_sets_the_clock_through_sudo_unless_logged_in_as_root(
    tmp_path: Path,
) -> None:
    as_user, as_root = personalise_line("pytest"), personalise_line("root")
    assert as_user.startswith("sudo -n date -u -s @") and "sudo" not in as_root
    assert as_root.startswith("date -u -s @") and as_user.count("\n") == 0
    stamp = int(re.search(r"date -u -s @(\d+) ", as_root).group(1))  # type: ignore[union-attr]
    assert abs(stamp - time.time()) < 5
    # Fresh entropy each time; date (stood in for by a shell function, the host's clock
    # stays as it is) is the only process, and echo the shell's own.
    assert as_user.split()[-2] != personalise_line("pytest").split()[-2]
    called = tmp_path / "date-arguments"
    assert _shell(as_root, f'date() {{ echo "$@" > {called}; }}; ') == ""
    assert called.read_text() == f"-u -s @{stamp}\n"
