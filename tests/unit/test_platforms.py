"""The architectures of the registry: names, aliases, their facts and their seams (no QEMU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import pytest_qemu
from pytest_qemu.devices.base import DeviceContext
from pytest_qemu.devices.misc import VirtioRandom
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.platforms import PLATFORMS, get_platform, names
from pytest_qemu.vm.argv import MachineSpec


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("amd64", "x86_64"),
        ("arm64", "aarch64"),
        ("i686", "i386"),
        ("armv7l", "armhf"),
        ("mips64", "mips64el"),
    ],
)
def test_aliases_name_the_architecture(alias: str, name: str) -> None:
    assert get_platform(alias) is get_platform(name)


def test_the_public_list_is_the_registry() -> None:
    assert pytest_qemu.architectures() == names() == PLATFORMS.names()
    assert {"x86_64", "aarch64", "i386", "armhf", "mips64el"} <= set(names())


@pytest.mark.parametrize("name", names())
def test_every_architecture_has_its_facts(name: str) -> None:
    platform = get_platform(name)
    assert platform.name == name
    assert platform.qemu_binary.startswith("qemu-system-")
    assert platform.compiler and platform.compiler_packages
    assert platform.gdb_architecture, f"{name} has no gdb architecture"
    assert platform.word_size in (32, 64)
    # Aliases never collide across architectures.
    others = [get_platform(other) for other in names() if other != name]
    assert not {*platform.aliases, name} & {a for o in others for a in (*o.aliases, o.name)}


@pytest.mark.parametrize(
    ("name", "machine", "bits"),
    [("i386", "i686", 32), ("armhf", "armv7l", 32), ("mips64el", "mips64", 64)],
)
def test_uname_and_word_size_of_the_32_bit_and_mips_guests(
    name: str, machine: str, bits: int
) -> None:
    platform = get_platform(name)
    assert (platform.uname_machine, platform.word_size) == (machine, bits)


def test_gdb_uses_gdb_multiarch_with_the_architecture_for_a_foreign_guest() -> None:
    foreign = next(get_platform(name) for name in names() if not get_platform(name).is_host)
    command = foreign.gdb_command(Path("/run/gdb.sock"), Path("/k/vmlinux"))
    assert command[:3] == ["gdb-multiarch", "-ex", f"set architecture {foreign.gdb_architecture}"]
    assert command[-3:] == ["-ex", "target remote /run/gdb.sock", "/k/vmlinux"]
    host = dataclasses.replace(foreign, name=get_platform().name)
    assert host.gdb_command(Path("/s"), None) == ["gdb", "-ex", "target remote /s"]


def test_a_device_the_machine_cannot_have_is_an_error_naming_both() -> None:
    platform = dataclasses.replace(get_platform("mips64el"), unavailable_devices=("rng",))
    with pytest.raises(
        ConfigurationError, match=r"virtio rng device is not available on mips64el .*malta"
    ):
        VirtioRandom().qemu_args(DeviceContext(platform))


def test_the_malta_command_line_limit_leaves_room_for_the_initramfs_address() -> None:
    # QEMU's Malta firmware passes 255 bytes, "rd_start=0x... rd_size=... " among them.
    assert get_platform("mips64el").command_line_limit < 255 - 40
    with pytest.raises(ConfigurationError, match="a mips64el kernel takes at most"):
        MachineSpec(kernel=Path("/k"), platform=get_platform("mips64el"), kernel_args=["x" * 250])


def test_nothing_here_names_an_architecture_outside_platforms() -> None:
    # The seams: no module outside platforms/ may branch on these names.
    root = Path(pytest_qemu.__file__).parent
    for source in root.rglob("*.py"):
        if source.parent.name == "platforms":
            continue
        text = source.read_text()
        for name in ("i386", "armhf", "mips64el", "i686", "armv7l"):
            assert f'"{name}"' not in text, f"{source} names {name}"
