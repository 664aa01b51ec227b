"""The doctor's checks that need no VM: KVM's device, directories, a machine QEMU cannot start."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pytest_qemu import doctor
from pytest_qemu.platforms import get_platform
from pytest_qemu.vm import accel
from pytest_qemu.vm.diagnose import user_error


def test_a_missing_kvm_device_says_how_to_get_one(tmp_path: Path) -> None:
    problem = accel.kvm_device_problem(tmp_path / "kvm")
    assert problem is not None
    assert "does not exist" in problem and "modprobe kvm_intel" in problem


def test_an_inaccessible_kvm_device_says_which_group_to_join(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = tmp_path / "kvm"
    device.touch()
    monkeypatch.setattr(accel.os, "access", lambda path, mode: False)
    problem = accel.kvm_device_problem(device)
    assert problem is not None and "usermod -aG kvm" in problem
    assert accel.probe_accelerator("qemu-system-x86_64", "kvm").detail.startswith("/dev/kvm")


def test_a_directory_that_cannot_be_written_is_missing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.touch()
    finding = doctor.directory_finding("cache", blocker / "cache", "set PYTEST_QEMU_CACHE_DIR")
    assert finding.status == doctor.MISSING
    assert str(blocker / "cache") in finding.detail and "PYTEST_QEMU_CACHE_DIR" in finding.detail
    assert doctor.directory_finding("cache", tmp_path / "new", "").status == doctor.OK


def test_a_machine_qemu_cannot_start_is_missing_with_its_words() -> None:
    """Missing firmware: QEMU's own message, and the package that brings the firmware."""
    platform = get_platform("x86_64")
    binary = shutil.which(platform.qemu_binary)
    assert binary is not None, "scripts/setup.sh installs QEMU"
    broken = dataclasses.replace(
        platform, machine_args=(*platform.machine_args, "-bios", "/nonexistent/bios.bin")
    )
    finding = doctor.machine_finding(binary, broken)
    assert finding.status == doctor.MISSING
    # The words a test's VM error gives as its likely cause (tests/plugin/test_doctor.py).
    words = user_error("qemu: could not load PC BIOS '/nonexistent/bios.bin'")
    assert words is not None and words in finding.detail
    assert "apt-get install --reinstall qemu-system-x86" in finding.detail
    assert doctor.machine_finding(binary, platform).status == doctor.OK


def test_the_verdict_needs_the_required_architectures_and_the_host() -> None:
    ok = doctor.Finding(doctor.OK, "QEMU", "found")
    missing = doctor.Finding(doctor.MISSING, "QEMU", "not found")
    sections = [
        doctor.Section("aarch64", "aarch64", (missing,)),
        doctor.Section("x86_64", "x86_64", (ok,)),
        doctor.Section("host", "this host", (ok,)),
    ]
    assert doctor.ready(sections, ["x86_64"])
    assert not doctor.ready(sections, ["x86_64", "aarch64"])
    text = doctor.render(sections, ["aarch64"])
    assert "aarch64: cannot run VMs" in text and "NOT ready: aarch64" in text


def test_uefi_firmware_is_a_warning_when_missing_and_no_row_where_there_is_none(
    tmp_path: Path,
) -> None:
    x86 = get_platform("x86_64")
    assert x86.uefi is not None
    found = doctor.uefi_finding(x86)
    assert found is not None and found.status == doctor.OK and "(ovmf)" in found.detail
    missing = dataclasses.replace(
        x86, uefi=dataclasses.replace(x86.uefi, code=tmp_path / "OVMF_CODE.fd")
    )
    warned = doctor.uefi_finding(missing)
    assert warned is not None and warned.status == doctor.WARN
    assert "apt-get install ovmf" in warned.detail
    assert doctor.uefi_finding(get_platform("s390x")) is None
