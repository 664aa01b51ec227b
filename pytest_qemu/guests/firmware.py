"""The firmware a VM boots through: ``"bios"`` (QEMU's default) or ``"uefi"``."""

from __future__ import annotations

from pathlib import Path

from pytest_qemu.cache import file_fingerprint
from pytest_qemu.devices.firmware import UefiFlash
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.guests.overlays import create_overlay
from pytest_qemu.platforms import Platform

#: The values of ``firmware=``.
FIRMWARES = ("bios", "uefi")


def check_firmware(firmware: object, secure_boot: object) -> None:
    """Refuse a ``firmware=``/``secure_boot=`` pair that means nothing."""
    if firmware is not None and firmware not in FIRMWARES:
        raise ConfigurationError(f"firmware={firmware!r} is not one of {list(FIRMWARES)}")
    if not isinstance(secure_boot, bool):
        raise ConfigurationError(f"secure_boot={secure_boot!r} must be True or False")
    if secure_boot and firmware != "uefi":
        raise ConfigurationError("secure_boot=True needs firmware='uefi'")


def uefi_flash(platform: Platform, secure_boot: bool, workdir: Path) -> UefiFlash:
    """The UEFI flash of a VM of *platform*, its variable store a new overlay in *workdir*."""
    code, variables, extra = platform.uefi_files(secure_boot)
    overlay = create_overlay(variables, "raw", workdir / "uefi-variables.qcow2")
    identity = f"{file_fingerprint(code)}+{file_fingerprint(variables)}"
    return UefiFlash(code, overlay, identity, extra)


def check_secure_direct_boot(platform: Platform, secure_boot: bool, kernel: Path | None) -> None:
    """Refuse secure boot of a *kernel* given directly where the firmware never boots one:
    Debian's kernels are signed for shim, not with a key the firmware trusts."""
    firmware = platform.uefi
    if secure_boot and kernel is not None and firmware and not firmware.secure_direct_boot:
        raise ConfigurationError(
            f"secure_boot=True on {platform.name}: its UEFI firmware ({firmware.package}) "
            f"refuses a kernel given directly ({kernel}) that is not signed with a key in its "
            "database (Microsoft's), and Debian's kernels are signed for shim: boot a disk "
            "image through shim (image=, no kernel=), or leave secure_boot off"
        )
