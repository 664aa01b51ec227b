"""User suites that boot real VMs, run through pytester in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_qemu.vm.rundir import remove_orphaned_run_directories
from tests.helpers import recorded_leases

pytestmark = pytest.mark.vm


def test_parallel_suite_with_a_failure_and_no_leftovers(
    pytester: pytest.Pytester, isolated_state: Path, qemu_pids: Callable[[], set[int]]
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_qemu import VirtioRandom

        @pytest.mark.parametrize("qemu_devices", [[], [VirtioRandom()]])
        def test_boots(qemu_vm, qemu_devices):
            assert qemu_vm.check("echo $((20 + 22))") == "42\\n"

        def test_fails_with_console(qemu_vm):
            qemu_vm.check("echo going-wrong; false")
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--qemu-accel=tcg")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*CommandFailed: guest command exited with status 1: 'echo going-wrong; false'*",
            "*qemu vm0 (*",
            "*--- transcript ---*",
            "*started: cloned from template*",
            "*$ echo going-wrong; false*",
            "*-> exit status 1 in*",
            "*stdout: going-wrong*",
            "*--- console, last 40 lines*",
            "*pytest-qemu: guest ready*",
            "*--- QEMU command line ---*",
            "*--- QEMU stderr*",
        ]
    )
    assert "machine.py" not in result.stdout.str(), "our internal frames should be hidden"
    assert "\x1b[6n" not in result.stdout.str(), "terminal control noise in the report"
    transcript = next(pytester.path.rglob("qemu-test_fails_with_console*/vm0/transcript.log"))
    assert "echo going-wrong" in transcript.read_text()
    assert qemu_pids() == set()
    assert recorded_leases(isolated_state) == []


def test_boot_timeout_reports_command_line_stderr_and_console(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile("def test_vm(qemu_vm): pass")
    result = pytester.runpytest_subprocess(
        "--qemu-boot-timeout=1", "--qemu-accel=tcg", "--qemu-snapshots=off"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the guest did not come up within the boot timeout of 1 s*",
            "*command line: *qemu-system-x86_64 *-kernel*",
            "*QEMU stderr*",
            "*last console lines*",
        ]
    )


def test_guest_panic_is_reported_at_once(pytester: pytest.Pytester, isolated_state: Path) -> None:
    pytester.makepyfile(
        """
        import time
        import pytest
        from pytest_qemu import VMExited

        def test_panic(qemu_vm_factory):
            started = time.monotonic()
            with pytest.raises(VMExited) as failure:
                qemu_vm_factory(kernel_args=["rdinit=/no/such/init"], boot_timeout=100)
            assert time.monotonic() - started < 60
            assert "Kernel panic" in str(failure.value)
        """
    )
    pytester.runpytest_subprocess("--qemu-accel=tcg").assert_outcomes(passed=1)


def test_killing_pytest_kills_its_vms(pytester: pytest.Pytester, isolated_state: Path) -> None:
    pid_file = pytester.path / "vm.json"
    pytester.makepyfile(
        f"""
        import json, os, time

        def test_hang(qemu_vm):
            with open({str(pid_file)!r} + ".tmp", "w") as out:
                json.dump({{"qemu": qemu_vm.pid, "pytest": os.getpid()}}, out)
            os.rename({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
            time.sleep(600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--qemu-accel=tcg", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists():
            assert process.poll() is None, "pytest ended before its VM started"
            assert time.monotonic() < deadline, "the VM did not start"
            time.sleep(0.2)
        pids = json.loads(pid_file.read_text())
        os.kill(pids["pytest"], signal.SIGKILL)
        process.wait(30)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pids['qemu']}").exists() and not _is_zombie(pids["qemu"]):
            assert time.monotonic() < deadline, "QEMU outlived the pytest process that started it"
            time.sleep(0.1)
        # The killed run's socket directory is left for the next VM start on the host to
        # sweep (another test's run may already have): the sweep leaves none of it.
        remove_orphaned_run_directories()
        left = list(Path(tempfile.gettempdir()).glob(f"pytest-qemu-vm-{pids['pytest']}-*"))
        assert left == [], "the sweep kept a killed run's socket directory"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
