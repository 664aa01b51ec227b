"""A cache that fills up or holds damaged files: VMs still start where they can, and
what cannot be done is said, naming the directory (issue 16, cases 1 and 2)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import small_tmpfs

pytestmark = pytest.mark.vm

ONE_VM = """
def test_vm(qemu_vm):
    assert qemu_vm.check("echo up") == "up\\n"
"""


def run_suite(pytester: pytest.Pytester, cache: Path) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        f"--qemu-cache-dir={cache}", "--qemu-accel=tcg", "--qemu-boot-timeout=300", "-W",
        "default::UserWarning", "-p", "no:randomly",
    )  # fmt: skip


def test_a_cache_without_room_for_a_template_boots_plainly_and_says_why(
    pytester: pytest.Pytester, isolated_state: Path, qemu_pids: Callable[[], set[int]]
) -> None:
    # Room for the guest's files (a 60-odd MB kernel, initramfs, agent), not for a
    # template's 256 MB of RAM: before, every VM died of SIGBUS, this run and the next.
    pytester.makepyfile(ONE_VM)
    with small_tmpfs(pytester.path / "cache", size_kib=100 * 1024) as cache:
        for _ in range(2):
            result = run_suite(pytester, cache)
            result.assert_outcomes(passed=1)
            result.stdout.fnmatch_lines(
                [f"*CacheWarning: the pytest-qemu cache is full: {cache}/snapshots has * MiB "
                 "free*boots instead of being cloned*"]
            )  # fmt: skip
            assert not list((cache / "snapshots").glob("*.ram")), "a template was kept"
    assert qemu_pids() == set()


def test_a_cache_with_almost_no_room_falls_back_or_names_the_directory(
    pytester: pytest.Pytester, isolated_state: Path, qemu_pids: Callable[[], set[int]]
) -> None:
    pytester.makepyfile(ONE_VM)
    # Room for the agent and an initramfs, not for the extracted kernel: the compressed
    # kernel boots instead.
    with small_tmpfs(pytester.path / "small", size_kib=8 * 1024) as cache:
        result = run_suite(pytester, cache)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(
            [f"*CacheWarning: the pytest-qemu cache is full: writing kernels * in {cache}/kernels "
             "failed (No space left on device)*booting /*vmlinuz* as it is*"]
        )  # fmt: skip
    # Room for nothing: a test error naming the directory, not an INTERNALERROR.
    with small_tmpfs(pytester.path / "tiny", size_kib=256) as cache:
        result = run_suite(pytester, cache)
        result.assert_outcomes(errors=1)
        output = result.stdout.str()
        assert "INTERNALERROR" not in output + result.stderr.str()
        result.stdout.fnmatch_lines(
            [f"the pytest-qemu cache is full: writing agents * in {cache}/agents failed "
             "(No space left on device)*"]
        )  # fmt: skip
    assert qemu_pids() == set()


def test_truncated_cached_files_are_rebuilt_not_trusted(
    pytester: pytest.Pytester,
    isolated_state: Path,
    tmp_path: Path,
    qemu_pids: Callable[[], set[int]],
) -> None:
    pytester.makepyfile(ONE_VM)
    cache = tmp_path / "cache"
    run_suite(pytester, cache).assert_outcomes(passed=1)
    # Before: a truncated agent made every VM wait out its boot timeout ("Bus error"),
    # a truncated kernel failed every VM with the header blaming KVM.
    built = [*(cache / "agents").iterdir(), *(cache / "kernels").iterdir()]
    damaged = [path for path in built if not path.name.endswith(".sum")]
    assert damaged, f"nothing built in {cache}"
    for path in damaged:
        os.truncate(path, path.stat().st_size // 2)
    result = run_suite(pytester, cache)
    result.assert_outcomes(passed=1)
    assert "KVM" not in result.stdout.str()
    for path in damaged:
        recorded_size = int(path.with_name(path.name + ".sum").read_text().split()[0])
        assert path.stat().st_size == recorded_size, f"{path} was not rebuilt"
    assert qemu_pids() == set()
