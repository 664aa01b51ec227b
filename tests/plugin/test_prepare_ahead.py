"""VMs prepared ahead (``--qemu-prepare-ahead``): the next test's VM starts during this one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

SUITE = """
import pathlib
import pytest

@pytest.mark.parametrize("index", range(4))
def test_each_vm_is_fresh(index, qemu_vm, tmp_path_factory):
    # Nothing a previous test (or the preparation) did is there.
    assert qemu_vm.check("ls /tmp; echo $((6 * 7)) > /tmp/mine; cat /tmp/mine") == "42\\n"
    prepared = any("prepared ahead" in entry for entry in qemu_vm.transcript.entries)
    results = pathlib.Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / str(index)).write_text(str(prepared))
    # The logs are the test's own, where the test's other VMs' logs go.
    basetemp = tmp_path_factory.getbasetemp()
    assert qemu_vm.console_log.is_file()
    assert qemu_vm.log_dir.parent.parent == basetemp
    assert "qemu-prepared" not in str(qemu_vm.log_dir)
    assert "Linux version" in qemu_vm.kernel_log()

def test_without_a_vm():
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["alone", "xdist"])
def test_prepared_vms_are_fresh_and_nothing_is_left(
    pytester: pytest.Pytester,
    isolated_state: Path,
    qemu_pids: Callable[[], set[int]],
    workers: list[str],
) -> None:
    pytester.makepyfile(SUITE)
    basetemp = pytester.path / "basetemp"
    result = pytester.runpytest_subprocess(
        "--qemu-accel=tcg", "--qemu-prepare-ahead=2", f"--basetemp={basetemp}", *workers
    )
    result.assert_outcomes(passed=5)
    prepared = [(path.read_text() == "True") for path in (pytester.path / "results").iterdir()]
    # The first test of each process starts its own VM; the ones after take a prepared one
    # (xdist may hand a worker a single test).
    assert len(prepared) == 4
    assert 1 <= prepared.count(False) <= (1 if not workers else 2), prepared
    assert qemu_pids() == set()
    assert not list(basetemp.rglob("qemu-prepared*"))
    result.stdout.fnmatch_lines(
        [f"4 VMs started: *; {prepared.count(True)} prepared ahead while earlier tests ran"]
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [("lots", "*--qemu-prepare-ahead 'lots' is not 'auto', 'off' or a number*"), ("0", "*'0'*")],
)
def test_a_bad_prepare_ahead_value_is_a_usage_error(
    pytester: pytest.Pytester, value: str, message: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess(f"--qemu-prepare-ahead={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
