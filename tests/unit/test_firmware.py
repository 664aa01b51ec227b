"""firmware= and secure_boot= without QEMU: the platforms' files, the flash, the errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_qemu import ConfigurationError, SetupError, VirtioRandom
from pytest_qemu.devices.base import DeviceContext
from pytest_qemu.devices.firmware import UefiFlash
from pytest_qemu.guests.firmware import check_firmware, check_secure_direct_boot, uefi_flash
from pytest_qemu.platforms import get_platform, names
from pytest_qemu.platforms.base import UefiFirmware
from pytest_qemu.platforms.x86_64 import OVMF_SMM_ARGS
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.diagnose import failure_report


def test_a_vm_gets_its_own_variable_store_over_the_firmwares(tmp_path: Path) -> None:
    platform = get_platform("x86_64")
    flash = uefi_flash(platform, False, tmp_path)
    args = flash.qemu_args(DeviceContext(platform))
    assert args[1].startswith("if=pflash,unit=0,format=raw,readonly=on")
    assert "file.filename=/usr/share/OVMF/OVMF_CODE_4M.fd" in args[1]
    variables = tmp_path / "uefi-variables.qcow2"
    assert args[3] == f"if=pflash,unit=1,format=qcow2,file.driver=file,file.filename={variables}"
    assert flash.template_file() == tmp_path / "uefi-variables.qcow2"
    assert flash.snapshot_layout(DeviceContext(platform)) is not None


def test_secure_boot_uses_the_microsoft_keys_and_smm_on_x86(tmp_path: Path) -> None:
    flash = uefi_flash(get_platform("x86_64"), True, tmp_path)
    args = flash.qemu_args(DeviceContext(get_platform("x86_64")))
    assert "OVMF_CODE_4M.secboot.fd" in args[1]
    assert args[-4:] == [
        "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"
    ]  # fmt: skip
    _code, variables, _ = get_platform("aarch64").uefi_files(secure_boot=True)
    assert variables.name == "AAVMF_VARS.ms.fd"


def test_the_flash_comes_before_what_the_firmware_needs_of_the_machine() -> None:
    flash = UefiFlash(Path("/fw/C.fd"), Path("/vm/v.qcow2"), "id", OVMF_SMM_ARGS)
    assert flash.qemu_args(DeviceContext(get_platform("i386"))) == [
        "-drive", "if=pflash,unit=0,format=raw,readonly=on,file.driver=file,file.filename=/fw/C.fd",
        "-drive", "if=pflash,unit=1,format=qcow2,file.driver=file,file.filename=/vm/v.qcow2",
        *OVMF_SMM_ARGS,
    ]  # fmt: skip
    # The machine arguments are part of a template's layout: a clone needs the same machine.
    plain = UefiFlash(Path("/fw/C.fd"), Path("/vm/v.qcow2"), "id")
    context = DeviceContext(get_platform("i386"))
    assert flash.snapshot_layout(context) != plain.snapshot_layout(context)


def test_the_flash_is_no_device_the_guest_sets_up_after_a_clone(tmp_path: Path) -> None:
    flash = UefiFlash(Path("/fw/C.fd"), Path("/vm/v.qcow2"), "id")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    spec = MachineSpec(kernel=kernel, devices=[flash], platform=get_platform("mips64el"))
    # No guest setup to run in its clones, and no blocker of VMs with devices.
    assert not spec.has_guest_devices
    assert spec.platform.clone_blocker_for(spec.has_guest_devices) is None
    assert dataclasses.replace(spec, devices=[flash, VirtioRandom()]).has_guest_devices


def test_i386s_only_ovmf_needs_smm_in_every_vm_and_has_no_microsoft_keys() -> None:
    code, variables, extra = get_platform("i386").uefi_files()
    assert (code.name, variables.name) == ("OVMF32_CODE_4M.secboot.fd", "OVMF32_VARS_4M.fd")
    assert extra == OVMF_SMM_ARGS
    with pytest.raises(ConfigurationError, match="Microsoft's keys for i386"):
        get_platform("i386").uefi_files(secure_boot=True)


def test_armhf_boots_aavmf32_from_virts_two_64_mib_flash_banks() -> None:
    code, variables, extra = get_platform("armhf").uefi_files()
    assert (code.name, variables.name, extra) == ("AAVMF32_CODE.fd", "AAVMF32_VARS.fd", ())
    # virt's flash banks are 64 MiB each: QEMU refuses an image of another size.
    assert code.stat().st_size == variables.stat().st_size == 64 << 20
    with pytest.raises(ConfigurationError, match="Microsoft's keys for armhf"):
        get_platform("armhf").uefi_files(secure_boot=True)


def test_riscv64_says_what_its_uefi_firmware_needs() -> None:
    with pytest.raises(ConfigurationError, match=r"qemu-efi-riscv64.*QEMU 8\.1"):
        get_platform("riscv64").uefi_files()


@pytest.mark.parametrize("name", names())
def test_every_architecture_has_uefi_files_or_says_why_not(name: str) -> None:
    platform = get_platform(name)
    if platform.uefi is None:
        with pytest.raises(
            ConfigurationError, match=rf"not available on {name}: .+ firmware='bios'"
        ):
            platform.uefi_files()
    else:
        code, variables, _ = platform.uefi_files()
        assert code != variables


def test_secure_boot_of_a_kernel_given_directly_is_refused_where_the_firmware_refuses_it(
    tmp_path: Path,
) -> None:
    kernel = tmp_path / "vmlinuz"
    # AAVMF stops at "Security Violation": no VM waits out its boot timeout for that.
    with pytest.raises(ConfigurationError, match=r"aarch64: .*qemu-efi-aarch64.*shim"):
        check_secure_direct_boot(get_platform("aarch64"), True, kernel)
    # OVMF boots it; a disk image boots through shim; without secure boot all is well.
    check_secure_direct_boot(get_platform("x86_64"), True, kernel)
    check_secure_direct_boot(get_platform("aarch64"), True, None)
    check_secure_direct_boot(get_platform("aarch64"), False, kernel)


def test_a_missing_firmware_file_names_the_package(tmp_path: Path) -> None:
    platform = dataclasses.replace(
        get_platform("x86_64"),
        uefi=UefiFirmware("ovmf", tmp_path / "OVMF_CODE.fd", tmp_path / "OVMF_VARS.fd"),
    )
    with pytest.raises(SetupError, match=r"apt-get install ovmf"):
        platform.uefi_files()


def test_a_platform_without_uefi_firmware_is_named(tmp_path: Path) -> None:
    platform = dataclasses.replace(get_platform("x86_64"), name="sparc64", uefi=None)
    with pytest.raises(ConfigurationError, match="sparc64"):
        platform.uefi_files()
    no_secure = dataclasses.replace(
        get_platform("x86_64"),
        uefi=UefiFirmware("ovmf", Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/x")),
    )
    with pytest.raises(ConfigurationError, match="Microsoft"):
        no_secure.uefi_files(secure_boot=True)


@pytest.mark.parametrize(
    ("firmware", "secure_boot", "message"),
    [("efi", False, "not one of"), ("bios", True, "needs firmware='uefi'"),
     (None, True, "needs firmware"), ("uefi", "yes", "True or False")],
)  # fmt: skip
def test_wrong_firmware_arguments_are_refused(
    firmware: object, secure_boot: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_firmware(firmware, secure_boot)


#: AAVMF's console when secure boot refused the kernel given directly (aarch64, seen).
REFUSED = """\
BdsDxe: failed to load Boot0001 "UEFI Non-Block Boot Device" from VenMedia(1428F772): Not Found
BdsDxe: failed to start Boot0002 "EFI Internal Shell" from Fv(64074AFE): Security Violation
BdsDxe: No bootable option or device was found.
"""


@pytest.mark.parametrize(
    ("console", "cause"),
    [(REFUSED, "secure boot: the UEFI firmware refused"),
     (REFUSED.replace("Security Violation", "Not Found"), "the UEFI firmware found nothing"),
     ("Linux version 6.1", None)],
)  # fmt: skip
def test_a_failure_report_says_why_the_firmware_started_nothing(
    console: str, cause: str | None, tmp_path: Path
) -> None:
    report = failure_report(
        "the guest did not come up", argv=["qemu"], status=None, stderr="",
        stderr_log=tmp_path / "e", console_tail=console, console_log=tmp_path / "c",
    )  # fmt: skip
    headline = report.split("\nQEMU was running")[0]
    if cause is None:
        assert "likely cause" not in headline
    else:
        assert f"likely cause: {cause}" in headline
