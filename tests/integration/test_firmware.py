"""firmware="uefi": the default guest booted by the UEFI firmware, each VM with its own variables.

Runs on every registered architecture Debian ships UEFI firmware for (``Platform.uefi``):
a new one gets these tests with no list to edit.
"""

from __future__ import annotations

import pytest

from pytest_qemu import VM, VMFactory
from pytest_qemu.platforms import get_platform, names

pytestmark = pytest.mark.vm

#: The architectures with UEFI firmware, from the registry.
UEFI_ARCHITECTURES = [name for name in names() if get_platform(name).uefi is not None]
#: Those whose firmware boots the default guest's kernel with secure boot on.
SECURE_DIRECT_BOOT = [
    name
    for name in UEFI_ARCHITECTURES
    if (firmware := get_platform(name).uefi) is not None and firmware.secure_direct_boot
]


@pytest.fixture(scope="module", params=UEFI_ARCHITECTURES)
def arch(request: pytest.FixtureRequest) -> str:
    """Overrides the integration tests' two architectures with those that have UEFI."""
    return str(request.param)


@pytest.fixture
def factory(private_factory: VMFactory) -> VMFactory:
    """VMs with a template store private to this test, so the first one builds a template."""
    return private_factory


def _flash_files(argv: list[str]) -> list[str]:
    return [
        part.removeprefix("file.filename=")
        for arg in argv
        if arg.startswith("if=pflash")
        for part in arg.split(",")
        if part.startswith("file.filename=")
    ]


def test_a_uefi_guest_sees_efi_and_so_do_its_clones(
    factory: VMFactory, qemu_vm: VM, arch: str
) -> None:
    first = factory(firmware="uefi", boot_timeout=300)
    second = factory(firmware="uefi", boot_timeout=300)
    cloned = get_platform(arch).clone_blocker_for(has_devices=False) is None
    for vm in (first, second):
        assert vm.run("test -d /sys/firmware/efi").returncode == 0
        assert "Secure boot enabled" not in vm.check("dmesg")
        assert (vm.restored_from is not None) == cloned, vm.boot_reason
    code, first_variables = _flash_files(first.argv)
    second_code, second_variables = _flash_files(second.argv)
    assert code == second_code and code.endswith(".fd")
    # Each VM writes to a variable store of its own.
    assert first_variables != second_variables
    # The session's default VM (a clone in a full run) boots without UEFI.
    assert qemu_vm.run("test -d /sys/firmware/efi").returncode == 1


@pytest.mark.parametrize("arch", SECURE_DIRECT_BOOT)
def test_secure_boot_is_on_in_the_guest_and_locks_its_kernel_down(factory: VMFactory) -> None:
    # Debian's kernel is signed for shim, not with Microsoft's key: OVMF boots it
    # through its own loader, and the kernel sees secure boot on (it reads the firmware's
    # SecureBoot variable) and locks itself down.
    vm = factory(firmware="uefi", secure_boot=True, boot_timeout=300)
    log = vm.check("dmesg")
    assert "secureboot: Secure boot enabled" in log
    assert "Kernel is locked down from EFI Secure Boot" in log
    # A clone of a machine with SMM (q35) resumes like any other.
    assert vm.restored_from is not None
