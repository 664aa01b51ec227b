"""Many VMs at once on a 2-core machine, and what a failing VM test's report shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import recorded_leases

pytestmark = pytest.mark.vm

SIXTEEN_VMS = """
import pytest

@pytest.mark.parametrize("number", range(16))
def test_one_vm(qemu_vm, number):
    assert qemu_vm.check(f"echo $(({number} * 2))") == f"{number * 2}\\n"
"""


@pytest.mark.parametrize("snapshots", ["off", "on"])
def test_sixteen_workers_sixteen_vms(
    pytester: pytest.Pytester,
    isolated_state: Path,
    qemu_pids: Callable[[], set[int]],
    snapshots: str,
) -> None:
    pytester.makepyfile(SIXTEEN_VMS)
    result = pytester.runpytest_subprocess(
        "-n", "16", "--qemu-accel=tcg", f"--qemu-snapshots={snapshots}",
        # 16 emulated boots share 2 cores: give them time; the point is that none is lost.
        "--qemu-boot-timeout=400",
    )  # fmt: skip
    result.assert_outcomes(passed=16)
    assert qemu_pids() == set()
    assert recorded_leases(isolated_state) == []


def test_a_failing_vm_test_reports_no_qmp_connection_noise(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile(
        """
        def test_fails(qemu_vm):
            qemu_vm.check("exit 3")
        """
    )
    result = pytester.runpytest_subprocess("--qemu-accel=tcg", "--qemu-snapshots=off")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "CommandFailed" in output
    assert "Failed to establish connection" not in output
    assert "qemu.qmp" not in output
