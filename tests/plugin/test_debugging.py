"""Debugging a failed VM test: kernel warnings, log gathering, gdb, keeping VMs, a shell."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_qemu.platforms.foreign import packages_dir
from tests.helpers import running_qemu_pids

pytestmark = pytest.mark.vm

WARNING_AT_WARNING_LEVEL = (
    "echo '<4>WARNING: CPU: 0 PID: 1 at drivers/pytest/qemu.c:42 test' > /dev/kmsg"
)


def test_a_kernel_warning_fails_the_test_even_off_the_console(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        def test_warns(qemu_vm):
            qemu_vm.check({WARNING_AT_WARNING_LEVEL!r})
            # quiet keeps warnings off the console: only the kernel log has it.
            assert "drivers/pytest/qemu.c" not in qemu_vm.console.text()

        @pytest.mark.qemu(kernel_warnings=False)
        def test_allowed_to_warn(qemu_vm):
            qemu_vm.check({WARNING_AT_WARNING_LEVEL!r})

        def test_quiet_kernel(qemu_vm):
            qemu_vm.check("true")
        """
    )
    result = pytester.runpytest_subprocess("--qemu-accel=tcg")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*GuestKernelTrouble: the guest kernel of * logged trouble during the test:*",
            "*WARNING: CPU: 0 PID: 1 at drivers/pytest/qemu.c:42 test*",
        ]
    )
    # The trouble alone: none of the plugin's frames (its hook, the kernel log check).
    assert "kernel_log.py" not in result.stdout.str()
    assert "pytest_qemu/plugin/__init__.py" not in result.stdout.str()
    ignored = pytester.runpytest_subprocess(
        "--qemu-accel=tcg", "--qemu-kernel-warnings=ignore", "-k", "test_warns"
    )
    ignored.assert_outcomes(passed=1)


def test_log_dir_junit_and_the_terminal_summary(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile(
        """
        def test_passes(qemu_vm):
            qemu_vm.check("true")

        def test_fails(qemu_vm):
            qemu_vm.check("echo visible-in-the-transcript; exit 5")
        """
    )
    logs = pytester.path / "ci-logs"
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "--qemu-accel=tcg", "-n", "2", f"--qemu-log-dir={logs}", f"--junitxml={junit}"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- pytest-qemu -*",
            "*2 VMs started: * cloned from a template, * booted*",
            "*ready after*",
        ]
    )
    (kept,) = logs.iterdir()
    assert "test_fails" in kept.name
    files = sorted(path.name for path in (kept / "vm0").iterdir())
    assert files == ["command-line.txt", "console.log", "qemu-stderr.log", "transcript.log"]
    assert "visible-in-the-transcript" in (kept / "vm0" / "transcript.log").read_text()
    properties = {
        element.get("name"): element.get("value")
        for element in ElementTree.parse(junit).iter("property")
    }
    assert properties == {"qemu_vm0_logs": str(kept / "vm0")}


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is installed by scripts/setup.sh")
def test_gdb_attaches_to_the_stub_the_report_names(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile(
        """
        import shlex, subprocess

        def test_debug(qemu_vm):
            command = qemu_vm.gdb_command()
            assert command and "target remote" in command
            assert "nokaslr" in qemu_vm.kernel_args
            gdb = shlex.split(command)
            answer = subprocess.run(
                [gdb[0], "-batch", "-nx", *gdb[1:-1], "-ex", "info registers rip", "-ex", "detach"],
                capture_output=True, text=True, timeout=120,
            )
            assert "rip" in answer.stdout, answer.stdout + answer.stderr
            assert qemu_vm.check("echo alive after gdb") == "alive after gdb\\n"
            raise AssertionError("fail, to see the gdb command in the report")
        """
    )
    result = pytester.runpytest_subprocess("--qemu-accel=tcg", "--qemu-gdb")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gdb stub: gdb -ex 'target remote */gdb.sock'*"])


def _run_in_pty(argv: list[str], cwd: Path) -> tuple[int, int]:
    """Start *argv* on a new pseudo-terminal; return its pid and the terminal's master end."""
    pid, master = pty.fork()
    if pid == 0:  # the child
        os.chdir(cwd)
        os.execv(argv[0], argv)
    return pid, master


def _read_until(master: int, pattern: str, timeout: float, seen: list[bytes]) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = b"".join(seen).decode(errors="replace")
        if re.search(pattern, text):
            return text
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{pattern!r} did not appear; the terminal showed:\n{text}"
        if select.select([master], [], [], min(remaining, 1))[0]:
            try:
                seen.append(os.read(master, 65536))
            except OSError:
                raise AssertionError(f"the terminal closed before {pattern!r}:\n{text}") from None


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the process did not end")


def test_keep_failed_waits_for_enter_and_then_ends_the_vms(
    pytester: pytest.Pytester, isolated_state: Path, qemu_pids: Callable[[], set[int]]
) -> None:
    pytester.makepyfile(
        """
        def test_fails(qemu_vm):
            qemu_vm.check("echo left-for-you > /tmp/clue")
            assert False
        """
    )
    # The VM's logs (and so its command line, which qemu_pids looks for) go under the
    # run's basetemp: keep it inside pytester.path whatever pytest's default temp root.
    pid, master = _run_in_pty(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--qemu-accel=tcg",
         "--qemu-keep-failed", "-s", f"--basetemp={pytester.path / 'basetemp'}"],
        pytester.path,
    )  # fmt: skip
    seen: list[bytes] = []
    try:
        text = _read_until(master, r"press Enter to end them", 120, seen)
        socket_path = re.search(r"python -m pytest_qemu console (\S+)", text)
        assert socket_path, text
        assert "QMP: " in text
        assert qemu_pids(), "the failed test's VM must still run"
        os.write(master, b"\n")
        _read_until(master, r"1 failed", 60, seen)
        assert _wait(pid, 30) == 1
    finally:
        os.close(master)
    assert qemu_pids() == set()


#: Where the set-up script put foreign packages, read before pytester moves HOME.
_FOREIGN_PACKAGES = packages_dir("arm64").parent


def _shell_session(
    arguments: list[str], cwd: Path, command: Callable[[str], str], answer: str
) -> None:
    """Run ``python -m pytest_qemu shell *arguments*`` on a terminal, type into the guest's
    shell the command that *command* makes of what the terminal showed so far, wait for
    *answer* (a regex), and leave with Ctrl-]."""
    pid, master = _run_in_pty([sys.executable, "-m", "pytest_qemu", "shell", *arguments], cwd)
    seen: list[bytes] = []
    try:
        text = _read_until(master, r"Ctrl-\] leaves", 180, seen)
        # busybox's shell asks where the cursor is: answer as a terminal would. The host's
        # shell just prompts.
        prompt = _read_until(master, r"\x1b\[6n|[#$] $", 60, seen)
        if prompt.endswith("\x1b[6n"):
            os.write(master, b"\x1b[1;1R")
            time.sleep(0.5)
        os.write(master, f"{command(text)}\r".encode())
        _read_until(master, answer, 60, seen)
        os.write(master, b"\x1d")
        assert _wait(pid, 30) == 0
    finally:
        os.close(master)


def test_the_shell_command_gives_an_interactive_shell(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    share = pytester.path / "share"
    share.mkdir()
    (share / "note.txt").write_text("from the host")

    def command(text: str) -> str:
        guest_path = re.search(r"is at (\S+) in the guest", text)
        assert guest_path, text
        return f"cat {guest_path.group(1)}/note.txt; echo; echo sum-$((40 + 2))"

    _shell_session(["--share", str(share)], pytester.path, command, r"from the host\s+sum-42")
    assert running_qemu_pids(str(share).encode()) == set(), "the shell's VM outlived it"


@pytest.mark.parametrize(
    ("arguments", "command", "answer"),
    [
        (["--arch", "aarch64"], "uname -m", r"\baarch64\s"),
        # An alias, and a 32-bit guest: its word size is its own.
        (["--arch", "armv7l"], "uname -m; od -An -tu1 -j4 -N1 /proc/self/exe", r"\barmv7l\s+1\s"),
        # Consoles other than a serial port: sclp (s390x) and hvc0 (pseries, by its alias).
        (["--arch", "s390x"], "uname -m; tty", r"\bs390x\s+/dev/ttysclp0\s"),
        (["--arch", "ppc64el"], "uname -m; tty", r"\bppc64le\s+/dev/hvc0\s"),
        # The shell runs in the host's root, as the host userland's commands do.
        (["--userland", "host"], "python3 -c 'print(6 * 7)'", r"\b42\s"),
    ],
    ids=["arch", "armhf", "s390x", "ppc64el", "userland"],
)
def test_the_shell_command_boots_other_guests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, isolated_state: Path,
    arguments: list[str], command: str, answer: str,
) -> None:  # fmt: skip
    # pytester's HOME has no cache: the set-up script's arm64 packages are in the real one.
    monkeypatch.setenv("PYTEST_QEMU_FOREIGN_PACKAGES", str(_FOREIGN_PACKAGES))
    _shell_session(arguments, pytester.path, lambda _text: command, answer)


def test_the_shell_command_reports_a_missing_image_plainly(pytester: pytest.Pytester) -> None:
    result = pytester.run(
        sys.executable, "-m", "pytest_qemu", "shell", "--image", "no-such.qcow2", timeout=120
    )
    assert result.ret == 1
    result.stderr.fnmatch_lines(["pytest-qemu: *no-such.qcow2*"])
    assert "Traceback" not in result.stderr.str()
