"""Disk images: a throwaway overlay by default, writing through only when asked. No QEMU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pytest_qemu import ConfigurationError, DeviceContext, Disk, MachineSpec, VirtioRandom
from pytest_qemu.guests.overlays import create_overlay, recreate_overlay
from pytest_qemu.vm.argv import RuntimePaths, build_command_line
from tests.unit.test_devices import split_options


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "data.img"
    path.write_bytes(b"\0" * 4096)
    return path


def drive_options(disk: Disk) -> list[str]:
    arguments = disk.qemu_args(DeviceContext())
    return split_options(arguments[arguments.index("-drive") + 1])


def test_default_disk_writes_to_a_throwaway_overlay(image: Path) -> None:
    disk = Disk(image, serial="data")
    assert disk.persistent is False
    assert drive_options(disk) == [
        "if=none",
        "id=disk0",
        "format=raw",
        "snapshot=on",
        "file.driver=file",
        f"file.filename={image}",
    ]


def test_persistent_disk_writes_through_to_the_image(image: Path) -> None:
    options = drive_options(Disk(image, persistent=True))
    assert not any(option.startswith(("snapshot=", "readonly=")) for option in options)
    assert f"file.filename={image}" in options


def test_read_only_disk_has_no_overlay(image: Path) -> None:
    options = drive_options(Disk(image, read_only=True))
    assert "readonly=on" in options
    assert not any(option.startswith("snapshot=") for option in options)


def test_persistent_and_read_only_together_are_refused(image: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"persistent and read_only") as error:
        Disk(image, persistent=True, read_only=True)
    assert str(image) in str(error.value)


@pytest.mark.parametrize("format", ["raw", "qcow2"])
def test_persistent_disks_are_never_restored_from_a_snapshot(image: Path, format: str) -> None:
    assert Disk(image, format=format, persistent=True).snapshot_layout(DeviceContext()) is None


def test_overlay_and_read_only_raw_disks_keep_their_snapshot_layout(image: Path) -> None:
    assert Disk(image).snapshot_layout(DeviceContext()) == "disk:False:4096"
    assert Disk(image, read_only=True).snapshot_layout(DeviceContext()) == "disk:True:4096"
    assert Disk(image, format="qcow2").snapshot_layout(DeviceContext()) is None


def test_a_persistent_disk_makes_its_vm_boot(image: Path, tmp_path: Path) -> None:
    paths = RuntimePaths.in_directory(tmp_path, tmp_path)

    def layout(disk: Disk) -> list[str] | None:
        spec = MachineSpec(kernel=tmp_path / "vmlinux", devices=[disk, VirtioRandom()])
        return build_command_line(spec, paths).device_layout

    assert layout(Disk(image, serial="a")) == ["disk:False:4096", "rng"]
    assert layout(Disk(image, serial="b", persistent=True)) is None


def test_repr_shows_persistence(image: Path) -> None:
    assert "persistent=True" in repr(Disk(image, persistent=True))


def test_a_new_overlay_over_a_frozen_overlays_base(image: Path, tmp_path: Path) -> None:
    # A template's builder falls back to booting with a new overlay over the same base
    # when the clone of the template it just built fails (its own overlay went into it).
    frozen = create_overlay(image, "raw", tmp_path / "template.disk0")
    frozen.chmod(0o444)
    fresh = recreate_overlay(frozen, tmp_path / "system-overlay.qcow2")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(fresh)],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert (info["format"], info["full-backing-filename"], info["backing-filename-format"]) == (
        "qcow2",
        str(image),
        "raw",
    )


def test_a_file_without_a_backing_file_gets_no_new_overlay(image: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="has no backing file"):
        recreate_overlay(image, tmp_path / "overlay.qcow2")
