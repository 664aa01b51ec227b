"""Argument building for every device: pure, no QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qemu import (
    ArbitraryArgs,
    ConfigurationError,
    DeviceContext,
    Disk,
    P9Directory,
    ReadOnlyDirectory,
    VirtioRandom,
)
from pytest_qemu.devices.options import escape, option_string


def split_options(option: str) -> list[str]:
    """Split a QEMU option string the way QEMU does: on single commas only."""
    parts, current, index = [], "", 0
    while index < len(option):
        if option[index] == ",":
            if option[index + 1 : index + 2] == ",":
                current += ","
                index += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += option[index]
        index += 1
    return [*parts, current]


def test_escape_doubles_commas_and_rejects_control_characters() -> None:
    assert escape("/tmp/a,b,,c") == "/tmp/a,,b,,,,c"
    with pytest.raises(ConfigurationError, match="newline"):
        escape("a\nb")


def test_option_string_escapes_values_and_formats_booleans() -> None:
    text = option_string("local", path="/x,y", readonly=True, skipped=None, wait=False)
    assert text == "local,path=/x,,y,readonly=on,wait=off"
    assert split_options(text) == ["local", "path=/x,y", "readonly=on", "wait=off"]


def test_p9_directory_with_comma_and_injection_attempt(tmp_path: Path) -> None:
    hostile = tmp_path / "x,security_model=none"
    hostile.mkdir()
    device = P9Directory(hostile, tag="data")
    args = device.qemu_args(DeviceContext())
    assert args[0] == "-fsdev"
    options = split_options(args[1])
    assert f"path={hostile}" in options
    assert [o for o in options if o.startswith("security_model=")] == ["security_model=mapped-file"]
    assert args[2:] == ["-device", "virtio-9p-pci,fsdev=fs0,mount_tag=data"]
    assert device.kernel_args(DeviceContext()) == ["pytest_qemu.mount=9p,data,/mnt/data,rw"]
    assert device.snapshot_layout(DeviceContext()) == "9p:data:False"
    assert device.guest_path == "/mnt/data"


def test_p9_read_only_and_boot(tmp_path: Path) -> None:
    read_only = P9Directory(tmp_path, tag="ro", read_only=True)
    assert "readonly=on" in split_options(read_only.qemu_args(DeviceContext())[1])
    assert read_only.kernel_args(DeviceContext())[0].endswith(",ro")
    root = P9Directory(tmp_path, tag="root", boot=True)
    assert "root=root" in root.kernel_args(DeviceContext())


def test_read_only_directory_is_really_read_only(tmp_path: Path) -> None:
    directory = tmp_path / "c:rw:d,e"
    directory.mkdir()
    device = ReadOnlyDirectory(directory, name="files")
    drive, drive_options, _, nic = device.qemu_args(DeviceContext())
    options = split_options(drive_options)
    assert drive == "-drive"
    assert "readonly=on" in options
    assert "driver=vvfat" in options
    assert f"dir={directory}" in options
    # "fat:rw:" deletes host files the guest overwrites; ide-drive is gone from QEMU 7.2.
    assert not any("fat:" in option or "rw=on" in option for option in options)
    assert "ide-drive" not in nic
    assert nic == "virtio-blk-pci,drive=fat0,serial=files"


def test_ids_are_unique_per_vm_and_stable_per_device(tmp_path: Path) -> None:
    ctx = DeviceContext()
    first, second = ReadOnlyDirectory(tmp_path), ReadOnlyDirectory(tmp_path)
    shares = [P9Directory(tmp_path), P9Directory(tmp_path)]
    ids = [first.qemu_args(ctx)[1], second.qemu_args(ctx)[1], first.qemu_args(ctx)[1]]
    assert "id=fat0" in ids[0] and "id=fat1" in ids[1] and ids[2] == ids[0]
    fsdevs = [share.qemu_args(ctx)[1].split(",")[1] for share in shares]
    assert fsdevs == ["id=fs0", "id=fs1"]
    assert first.name != second.name and shares[0].name != shares[1].name
    assert [share.mount_tag(ctx) for share in shares] == ["fs0", "fs1"]
    assert shares[0].guest_path != shares[1].guest_path


@pytest.mark.parametrize("bad_tag", ["", "has space", "a" * 32, "0starts-with-digit", "x,y"])
def test_bad_tags_are_rejected_with_the_value(tmp_path: Path, bad_tag: str) -> None:
    with pytest.raises(ConfigurationError, match="9p mount tag"):
        P9Directory(tmp_path, tag=bad_tag)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"missing.*is not a directory"):
        P9Directory(tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="guest path"):
        P9Directory(tmp_path, guest_path="relative/path")


def test_virtio_random() -> None:
    assert VirtioRandom().qemu_args(DeviceContext()) == [
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-pci,rng=rng0",
    ]


def test_disk(tmp_path: Path) -> None:
    image = tmp_path / "nbd:odd,name.img"
    image.write_bytes(b"\0" * 512)
    disk = Disk(image, format="raw", read_only=True, serial="data")
    _, drive, _, device = disk.qemu_args(DeviceContext())
    assert split_options(drive) == [
        "if=none",
        "id=disk0",
        "format=raw",
        "readonly=on",
        "file.driver=file",
        f"file.filename={image}",
    ]
    assert device == "virtio-blk-pci,drive=disk0,serial=data"
    assert disk.guest_device == "/dev/disk/by-id/virtio-data"
    with pytest.raises(ConfigurationError, match="'vhd'"):
        Disk(image, format="vhd")
    with pytest.raises(ConfigurationError, match="does not exist"):
        Disk(tmp_path / "none.img")


def test_arbitrary_args_pass_through() -> None:
    device = ArbitraryArgs(["-device", "pvpanic"], ["loglevel=7"], guest_modules=["pvpanic"])
    assert device.qemu_args(DeviceContext()) == ["-device", "pvpanic"]
    assert device.kernel_args(DeviceContext()) == ["loglevel=7"]
    assert device.guest_modules == ("pvpanic",)
    with pytest.raises(ConfigurationError, match="not a string"):
        ArbitraryArgs([1])  # type: ignore[list-item]
