"""``python -m pytest_qemu doctor`` on this host, and with QEMU missing: the same words a
test's setup error has."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import pytest_qemu


def _doctor(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "pytest_qemu", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_the_version_is_the_installed_distribution_s() -> None:
    assert pytest_qemu.__version__ == metadata.version("pytest-qemu")


def test_doctor_passes_on_a_host_set_up_by_the_setup_script() -> None:
    result = _doctor("--arch", "x86_64")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"pytest-qemu {pytest_qemu.__version__}: what this host can run"
    assert lines[1].startswith("x86_64 (")
    rows = {line.split()[1]: line.split()[0] for line in lines[2:8]}
    assert rows["QEMU"] == rows["machine"] == rows["kernel"] == rows["busybox"] == "ok"
    assert rows["agent"] == "ok"
    assert "QEMU emulator version" in result.stdout
    assert "ready: x86_64 can run" in result.stdout
    assert "KVM" in result.stdout and "cache" in result.stdout and "/dev/shm" in result.stdout


def test_without_qemu_doctor_fails_with_the_words_a_test_gets(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _doctor("--arch", "x86_64", path=str(empty))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    missing = [line for line in lines if line.split()[:2] == ["missing", "QEMU"]]
    assert len(missing) == 1, result.stdout
    words = missing[0].split(None, 2)[2]
    assert "apt-get install qemu-system-x86" in words
    assert "NOT ready: x86_64" in result.stdout

    pytester.makepyfile("def test_vm(qemu_vm):\n    qemu_vm.run('true')\n")
    monkeypatch.setenv("PATH", str(empty))
    run = pytester.runpytest_subprocess("--qemu-arch=x86_64", "--qemu-accel=tcg")
    run.assert_outcomes(errors=1)
    assert words in run.stdout.str()


def test_a_bad_agent_mode_is_a_usage_error_at_the_start(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    monkeypatch.setenv("PYTEST_QEMU_AGENT", "always")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*PYTEST_QEMU_AGENT='always' is not one of auto, compile*"])


def test_a_missing_firmware_file_has_the_doctor_s_words_in_a_test(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    from pytest_qemu.vm.diagnose import user_error

    words = user_error("qemu: could not load PC BIOS '/nonexistent/bios.bin'")
    assert words is not None
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.qemu(snapshot=False)
        def test_vm(qemu_vm_factory):
            qemu_vm_factory(arch="x86_64", qemu_args=["-bios", "/nonexistent/bios.bin"])
        """
    )
    result = pytester.runpytest_subprocess("--qemu-accel=tcg")
    result.assert_outcomes(failed=1)
    assert f"likely cause: {words}" in result.stdout.str()
