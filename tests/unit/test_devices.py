"""Argument building for every device: pure, no QEMU."""

from __future__ import annotations

import os
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


def test_arbitrary_kernel_args_without_control_characters() -> None:
    with pytest.raises(ConfigurationError, match=r"'a\\nb' contains the control character"):
        ArbitraryArgs(kernel_args=["quiet", "a\nb"])
    assert ArbitraryArgs(["-append\n"]).qemu_args(DeviceContext()) == ["-append\n"]


# --- FAT directories: what vvfat cannot show faithfully is refused -----------------------
# The limits were found by starting QEMU 7.2 on such directories (see docs/devices.md).

FAT_CLUSTER = 8192
FAT_CLUSTERS = 64472


def sparse(path: Path, size: int) -> None:
    with path.open("wb") as file:
        os.truncate(file.fileno(), size)


def names(directory: Path, count: int, width: int) -> None:
    for index in range(count):
        (directory / f"{index:0{width}d}").touch()


def test_names_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("upper")
    (tmp_path / "readme.txt").write_text("lower")
    with pytest.raises(ConfigurationError, match="differ only in case") as error:
        ReadOnlyDirectory(tmp_path)
    assert str(tmp_path / "README.txt") in str(error.value)
    assert str(tmp_path / "readme.txt") in str(error.value)


def test_case_clashes_are_found_at_any_depth(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "Data").mkdir()
    (deep / "DATA").write_text("x")
    with pytest.raises(ConfigurationError, match="differ only in case") as error:
        ReadOnlyDirectory(tmp_path)
    assert str(deep / "DATA") in str(error.value) and str(deep / "Data") in str(error.value)
    (deep / "DATA").unlink()
    (tmp_path / "b").mkdir()  # the same name in another directory is fine
    ReadOnlyDirectory(tmp_path)


def test_files_added_after_the_device_was_created_are_checked_too(tmp_path: Path) -> None:
    device = ReadOnlyDirectory(tmp_path)
    (tmp_path / "Notes").write_text("1")
    (tmp_path / "notes").write_text("2")
    with pytest.raises(ConfigurationError, match="differ only in case"):
        device.qemu_args(DeviceContext())


@pytest.mark.parametrize(
    ("count", "width", "fits"),
    [
        (255, 4, True),  # 255 x 2 slots + the volume label = 511
        (256, 4, False),
        (255, 13, True),  # 13 characters still take one long-name slot
        (170, 14, True),  # 14 take two: 170 x 3 = 510
        (171, 14, False),
    ],
)
def test_the_root_directory_holds_511_slots(
    tmp_path: Path, count: int, width: int, fits: bool
) -> None:
    names(tmp_path, count, width)
    if fits:
        ReadOnlyDirectory(tmp_path)
    else:
        with pytest.raises(ConfigurationError, match=r"too many names.*move some into") as error:
            ReadOnlyDirectory(tmp_path)
        assert f"its {count} names need" in str(error.value)


def test_long_names_are_counted_in_characters_not_bytes(tmp_path: Path) -> None:
    for index in range(255):
        (tmp_path / f"{'é' * 10}{index:03d}").touch()  # 13 characters, 23 bytes
    ReadOnlyDirectory(tmp_path)


def test_subdirectories_do_not_count_against_the_root(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    names(tmp_path / "sub", 600, 4)
    ReadOnlyDirectory(tmp_path)


@pytest.mark.parametrize(("extra", "fits"), [(0, True), (1, False)])
def test_the_disk_holds_64472_clusters_of_8_kib(tmp_path: Path, extra: int, fits: bool) -> None:
    # The root directory takes 2 clusters; the largest file takes the rest.
    sparse(tmp_path / "big.bin", (FAT_CLUSTERS - 2) * FAT_CLUSTER + extra)
    if fits:
        ReadOnlyDirectory(tmp_path)
    else:
        with pytest.raises(ConfigurationError, match=r"does not fit.*64472 clusters of 8 KiB"):
            ReadOnlyDirectory(tmp_path)


@pytest.mark.parametrize(("entries", "fits"), [(127, True), (128, False)])
def test_a_subdirectory_takes_a_cluster_per_256_slots(
    tmp_path: Path, entries: int, fits: bool
) -> None:
    # "." and ".." plus 127 names of 2 slots fill one cluster; one name more needs a second.
    sparse(tmp_path / "big.bin", (FAT_CLUSTERS - 3) * FAT_CLUSTER)
    (tmp_path / "sub").mkdir()
    names(tmp_path / "sub", entries, 3)
    if fits:
        ReadOnlyDirectory(tmp_path)
    else:
        with pytest.raises(ConfigurationError, match="does not fit"):
            ReadOnlyDirectory(tmp_path)


def test_empty_files_take_no_cluster_and_small_ones_a_whole_one(tmp_path: Path) -> None:
    sparse(tmp_path / "big.bin", (FAT_CLUSTERS - 4) * FAT_CLUSTER)
    (tmp_path / "empty").touch()
    (tmp_path / "one").write_text("1")
    (tmp_path / "two").write_text("2")
    ReadOnlyDirectory(tmp_path)
    (tmp_path / "three").write_text("3")
    with pytest.raises(ConfigurationError, match="does not fit"):
        ReadOnlyDirectory(tmp_path)


def test_symlinks_are_followed_like_vvfat_does(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    outside = tmp_path / "outside"
    shared.mkdir()
    outside.mkdir()
    sparse(outside / "big.bin", 300 * 1024 * 1024)
    (shared / "dangling").symlink_to(tmp_path / "missing")
    (shared / "link").symlink_to(outside)
    ReadOnlyDirectory(shared)
    (shared / "link2").symlink_to(outside)  # the same 300 MiB seen twice
    with pytest.raises(ConfigurationError, match="does not fit"):
        ReadOnlyDirectory(shared)


def test_a_symlink_loop_ends_like_it_does_in_vvfat(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "d" / "up").symlink_to("..")
    # The kernel stops resolving after 40 links, so the repeated tree ends; QEMU starts.
    ReadOnlyDirectory(tmp_path)


def test_an_unreadable_subdirectory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path: Path) -> object:
        # Root reads every directory whatever its mode, so the refusal is simulated.
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ConfigurationError, match=f"cannot list {locked} \\(Permission denied\\)"):
        ReadOnlyDirectory(tmp_path)
