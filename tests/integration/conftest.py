"""Every VM-booting test here runs on x86_64 and aarch64, by parametrization, and
``test_architectures.py`` runs its tests on every registered architecture."""

from __future__ import annotations

import pytest

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
