"""Every VM-booting test here runs on x86_64 and aarch64, by parametrization, and
``test_architectures.py`` runs its tests on every registered architecture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_qemu import VMFactory
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.snapshot import SnapshotStore

#: The architectures the deep integration modules boot (the wide module overrides it).
ARCHITECTURES = ["x86_64", "aarch64"]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch(request: pytest.FixtureRequest) -> str:
    """The architecture of this module's VMs (module-scoped, so shared VMs can use it)."""
    return str(request.param)


@pytest.fixture
def qemu_arch(arch: str) -> str:
    """Overrides the plugin's ``qemu_arch``: ``qemu_vm`` and ``qemu_vm_factory`` boot *arch*."""
    return arch


@pytest.fixture
def private_factory(
    request: pytest.FixtureRequest, tmp_path: Path, arch: str
) -> Iterator[VMFactory]:
    """VMs of *arch* with a template store private to this test: its first VM of a
    layout builds the template, whatever the shared cache holds."""
    factory = VMFactory(
        QemuSession.of(request.config),
        log_root=tmp_path,
        snapshots=SnapshotStore(tmp_path / "snapshots"),
        defaults={"arch": arch},
    )
    try:
        yield factory
    finally:
        factory.close()
