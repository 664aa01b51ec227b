"""firmware="uefi": the default guest booted by OVMF/AAVMF, each VM with its own variables.

Runs on each architecture of the integration tests (``arch`` from conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_qemu import VMFactory
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.snapshot import SnapshotStore

pytestmark = pytest.mark.vm


@pytest.fixture
def factory(request: pytest.FixtureRequest, tmp_path: Path, arch: str) -> Iterator[VMFactory]:
    """VMs with a snapshot store private to this test, so the first one builds a template."""
    made = VMFactory(
        QemuSession.of(request.config),
        log_root=tmp_path,
        snapshots=SnapshotStore(tmp_path / "snapshots"),
        defaults={"arch": arch},
    )
    try:
        yield made
    finally:
        made.close()


def _flash_files(argv: list[str]) -> list[str]:
    return [
        part.removeprefix("file.filename=")
        for arg in argv
        if arg.startswith("if=pflash")
        for part in arg.split(",")
        if part.startswith("file.filename=")
    ]


def test_a_uefi_guest_sees_efi_and_so_do_its_clones(factory: VMFactory) -> None:
    first = factory(firmware="uefi", boot_timeout=300)
    second = factory(firmware="uefi", boot_timeout=300)
    for vm in (first, second):
        assert vm.run("test -d /sys/firmware/efi").returncode == 0
        assert vm.restored_from is not None
    code, first_variables = _flash_files(first.argv)
    second_code, second_variables = _flash_files(second.argv)
    assert code == second_code and code.endswith(".fd")
    # Each VM writes to a variable store of its own.
    assert first_variables != second_variables
    bios = factory(boot_timeout=300)
    assert bios.run("test -d /sys/firmware/efi").returncode == 1
