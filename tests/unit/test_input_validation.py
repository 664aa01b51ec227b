"""Values that cannot work are refused up front, naming the value. No QEMU, no guest build."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pytest_qemu import VM, ConfigurationError, MachineSpec, VirtioRandom
from pytest_qemu.devices.options import validate_kernel_argument
from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.session import QemuSession
from tests.helpers import make_settings

MIB = 1024 * 1024


def sized_file(path: Path, size: int) -> Path:
    """A sparse file of *size* bytes: only its size matters to the memory check."""
    with path.open("wb") as file:
        os.truncate(file.fileno(), size)
    return path


def bzimage(path: Path, file_size: int, init_size: int) -> Path:
    """A file with an x86 boot protocol 2.15 setup header, like /boot/vmlinuz."""
    header = bytearray(0x264)
    header[0x202:0x206] = b"HdrS"
    header[0x206:0x208] = (0x20F).to_bytes(2, "little")
    header[0x260:0x264] = init_size.to_bytes(4, "little")
    path.write_bytes(bytes(header))
    os.truncate(path, file_size)
    return path


# --- memory: the minimum comes from the boot files -------------------------------------


def test_64_mib_is_refused_for_a_debian_sized_kernel(tmp_path: Path) -> None:
    kernel = sized_file(tmp_path / "vmlinux", 65_906_612)
    initramfs = sized_file(tmp_path / "initramfs.cpio", 3_435_188)
    with pytest.raises(ConfigurationError) as error:
        MachineSpec(kernel=kernel, initramfs=initramfs, memory=64)
    message = str(error.value)
    assert "memory 64 MiB" in message
    assert "at least 96 MiB" in message
    assert str(kernel) in message and str(initramfs) in message
    assert "62.9 MiB" in message and "unpacks" in message
    MachineSpec(kernel=kernel, initramfs=initramfs, memory=96)


def test_the_minimum_follows_kernel_initramfs_and_cpus(tmp_path: Path) -> None:
    kernel = sized_file(tmp_path / "vmlinux", 60 * MIB)
    initramfs = sized_file(tmp_path / "initramfs.cpio", 4 * MIB)

    def minimum(**options: object) -> int:
        with pytest.raises(ConfigurationError, match=r"at least (\d+) MiB") as error:
            MachineSpec(kernel=kernel, initramfs=initramfs, memory=17, **options)  # type: ignore[arg-type]
        found = re.search(r"at least (\d+) MiB", str(error.value))
        assert found is not None
        return int(found.group(1))

    # 60 + 2 * 4 + 24 + 1 CPU = 93, rounded up to a multiple of 8.
    assert minimum() == 96
    assert minimum(cpus=16) == 112
    sized_file(initramfs, 20 * MIB)
    assert minimum() == 128


def test_a_bzimage_is_measured_by_what_it_unpacks_to(tmp_path: Path) -> None:
    kernel = bzimage(tmp_path / "vmlinuz", file_size=8 * MIB, init_size=64 * MIB)
    with pytest.raises(ConfigurationError, match=r"at least 96 MiB.*needs 64\.0 MiB"):
        MachineSpec(kernel=kernel, memory=88)
    MachineSpec(kernel=kernel, memory=96)


@pytest.mark.parametrize("memory", ["512", 512.0, True, 0, -1, 2 * 1024 * 1024])
def test_memory_of_the_wrong_type_or_range_is_refused(tmp_path: Path, memory: object) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"memory {memory!r} MiB is not valid")):
        MachineSpec(kernel=tmp_path / "vmlinux", memory=memory)  # type: ignore[arg-type]


@pytest.mark.parametrize("cpus", ["2", 2.0, True, 0, 256])
def test_cpus_of_the_wrong_type_or_range_are_refused(tmp_path: Path, cpus: object) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"cpus {cpus!r} is not valid")):
        MachineSpec(kernel=tmp_path / "vmlinux", cpus=cpus)  # type: ignore[arg-type]


# --- kernel arguments ------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["a\nb", "tab\there", "cr\r", "bell\x07", "del\x7f"])
def test_control_characters_in_kernel_arguments_are_refused(tmp_path: Path, argument: str) -> None:
    with pytest.raises(ConfigurationError, match="control character") as error:
        MachineSpec(kernel=tmp_path / "vmlinux", kernel_args=["quiet", argument])
    assert repr(argument) in str(error.value)


def test_kernel_arguments_must_be_a_list_of_strings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="kernel argument 7 is not a string"):
        MachineSpec(kernel=tmp_path / "vmlinux", kernel_args=["quiet", 7])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="'quiet' is one string"):
        MachineSpec(kernel=tmp_path / "vmlinux", kernel_args="quiet")


def test_validate_kernel_argument_names_the_option() -> None:
    assert validate_kernel_argument("root=/dev/vda") == "root=/dev/vda"
    with pytest.raises(ConfigurationError, match=r"^--qemu-kernel-args 'x': argument 'a\\nb'"):
        validate_kernel_argument("a\nb", "--qemu-kernel-args 'x': argument")


def test_the_kernel_command_line_must_fit_in_2048_bytes(tmp_path: Path) -> None:
    prefix = ["console=ttyS0", "panic=-1"]
    filler = "x" * (2047 - len(" ".join(prefix)) - 1)
    MachineSpec(kernel=tmp_path / "vmlinux", kernel_args=[*prefix, filler])
    with pytest.raises(ConfigurationError) as error:
        MachineSpec(kernel=tmp_path / "vmlinux", kernel_args=[*prefix, filler + "x"])
    message = str(error.value)
    assert "2048 bytes long" in message and "at most 2047" in message
    assert "console=ttyS0" in message


def test_the_command_line_length_counts_bytes_not_characters(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="2048 bytes long"):
        MachineSpec(kernel=tmp_path / "vmlinux", kernel_args=["é" * 1024])


# --- devices ---------------------------------------------------------------------------


def test_machine_spec_refuses_a_string_of_devices(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="devices 'abc' is not a list of devices"):
        MachineSpec(kernel=tmp_path / "vmlinux", devices="abc")  # type: ignore[arg-type]


# --- the factory: checked before any guest file is built -------------------------------


@pytest.fixture
def factory(tmp_path: Path) -> VMFactory:
    return VMFactory(QemuSession(make_settings(tmp_path / "cache")), log_root=tmp_path / "logs")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"devices": "abc"}, "devices 'abc' is not a list of devices"),
        ({"devices": b"abc"}, "devices b'abc' is not a list of devices"),
        ({"devices": 3}, "devices 3 is not a list of devices"),
        ({"devices": VirtioRandom()}, "devices VirtioRandom() is not a list of devices"),
        ({"devices": [VirtioRandom(), "rng"]}, "'rng' is not a pytest_qemu Device"),
        ({"memory": "512"}, "memory '512' MiB is not valid"),
        ({"memory": True}, "memory True MiB is not valid"),
        ({"memory": 0}, "memory 0 MiB is not valid"),
        ({"cpus": 0}, "cpus 0 is not valid"),
        ({"cpus": "2"}, "cpus '2' is not valid"),
        ({"boot_timeout": 0}, "boot_timeout 0 is not valid"),
        ({"boot_timeout": "10"}, "boot_timeout '10' is not valid"),
        ({"boot_timeout": -5.0}, "boot_timeout -5.0 is not valid"),
        ({"boot_timeout": float("nan")}, "boot_timeout nan is not valid"),
        ({"boot_timeout": float("inf")}, "boot_timeout inf is not valid"),
        ({"boot_timeout": True}, "boot_timeout True is not valid"),
        ({"kernel_args": [1]}, "argument 1 is not a string"),
        ({"qemu_args": 5}, "qemu_args 5 is not a list of arguments"),
        ({"snapshot": "no"}, "snapshot 'no' is not valid: give True or False"),
        ({"userland": "alpine"}, "userland 'alpine' is not valid: use one of"),
        ({"arch": 64}, "arch 64 is not valid"),
    ],
)
def test_factory_refuses_bad_arguments_before_building_anything(
    factory: VMFactory, tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        factory(**options)  # type: ignore[arg-type]
    assert not (tmp_path / "cache").exists(), "the guest was built before the check"
    assert factory.vms == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": float("nan")}, "timeout nan is not valid"),
        ({"timeout": float("inf")}, "timeout inf is not valid"),
        ({"timeout": 0}, "timeout 0 is not valid"),
        ({"input": None}, "input None is not valid: give bytes or str"),
        ({"input": 5}, "input 5 is not valid: give bytes or str"),
    ],
)
def test_run_refuses_bad_arguments_naming_them(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    # Checked before the VM is asked anything: this one was never started.
    vm = VM(MachineSpec(kernel=sized_file(tmp_path / "vmlinux", MIB)), log_dir=tmp_path / "logs")
    try:
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            vm.run("cat", **options)  # type: ignore[arg-type]
    finally:
        vm.kill()


def test_put_and_get_refuse_a_timeout_that_is_not_a_number(tmp_path: Path) -> None:
    vm = VM(MachineSpec(kernel=sized_file(tmp_path / "vmlinux", MIB)), log_dir=tmp_path / "logs")
    try:
        with pytest.raises(ConfigurationError, match="timeout nan is not valid"):
            vm.put(tmp_path / "vmlinux", "/tmp/x", timeout=float("nan"))
        with pytest.raises(ConfigurationError, match="timeout nan is not valid"):
            vm.get("/etc/hostname", tmp_path, timeout=float("nan"))
    finally:
        vm.kill()
