"""Turning snapshots off, per run and per test."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

SUITE = """
import pytest

def test_default(qemu_vm_factory):
    qemu_vm_factory()  # builds the snapshot if needed
    assert qemu_vm_factory().restored_from is not None

@pytest.mark.qemu(snapshot=False)
def test_marker(qemu_vm):
    assert qemu_vm.restored_from is None

def test_argument(qemu_vm_factory):
    assert qemu_vm_factory(snapshot=False).restored_from is None
"""


def test_marker_and_argument_turn_snapshots_off(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile(SUITE)
    pytester.runpytest_subprocess("--qemu-accel=tcg").assert_outcomes(passed=3)


def test_option_turns_snapshots_off(pytester: pytest.Pytester, isolated_state: Path) -> None:
    pytester.makepyfile(
        """
        def test_off(qemu_vm):
            assert qemu_vm.restored_from is None
        """
    )
    pytester.runpytest_subprocess("--qemu-accel=tcg", "--qemu-snapshots=off").assert_outcomes(
        passed=1
    )
