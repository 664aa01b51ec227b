from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import running_qemu_pids


@pytest.fixture(autouse=True)
def _no_vms_prepared_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester's runs prepare no VMs ahead unless a test asks: under the outer run's
    xdist workers, the CPUs they would count as free are not."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "--qemu-prepare-ahead=off")


@pytest.fixture
def isolated_state(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private allocator state directory for the pytester runs of one test."""
    state = pytester.path / "qemu-state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("PYTEST_QEMU_STATE_DIR", str(state))
    return state


@pytest.fixture
def qemu_pids(pytester: pytest.Pytester) -> Callable[[], set[int]]:
    """Lists the QEMU processes started by this test's pytester runs.

    They are told apart from other tests' VMs by their log files, which live
    under the pytester directory.
    """
    return lambda: running_qemu_pids(str(pytester.path).encode())
