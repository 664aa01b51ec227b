"""Tests for the cpio newc writer, checked with our own reader and with GNU cpio."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_qemu.guests.cpio import CpioWriter

# -- a minimal independent newc reader ------------------------------------------

_FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)


@dataclass
class Entry:
    name: str
    offset: int
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    rdevmajor: int
    rdevminor: int
    check: int
    data: bytes


def read_newc(archive: bytes) -> list[Entry]:
    entries: list[Entry] = []
    pos = 0
    while True:
        assert pos % 4 == 0, f"header at unaligned offset {pos}"
        assert archive[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        raw = archive[pos + 6 : pos + 110]
        fields = {name: int(raw[i * 8 : i * 8 + 8], 16) for i, name in enumerate(_FIELDS)}
        name_end = pos + 110 + fields["namesize"]
        assert archive[name_end - 1] == 0, "name not NUL-terminated"
        name = archive[pos + 110 : name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        assert archive[name_end:data_start] == b"\0" * (data_start - name_end)
        data_end = data_start + fields["filesize"]
        data = archive[data_start:data_end]
        entry = Entry(
            name=name,
            offset=pos,
            data=data,
            **{
                k: v
                for k, v in fields.items()
                if k not in ("filesize", "namesize", "devmajor", "devminor")
            },
        )
        entries.append(entry)
        pos = data_end + (-data_end % 4)
        assert archive[data_end:pos] == b"\0" * (pos - data_end)
        if name == "TRAILER!!!":
            assert pos == len(archive), "data after the trailer"
            return entries


def build() -> bytes:
    buffer = io.BytesIO()
    with CpioWriter(buffer) as archive:
        archive.add_directory("dev")
        archive.add_char_device("dev/console", 5, 1)
        archive.add_char_device("/dev/null", 1, 3, mode=0o666)
        archive.add_file("bin/busybox", b"\x7fELF-busybox", mode=0o755)
        archive.add_symlink("bin/sh", "busybox")
        archive.add_symlink("sbin/init", "/bin/busybox")
        archive.add_file("lib/modules/virtio_net.ko", b"k" * 4097)
        archive.add_directory("tmp", mode=0o1777)
        for size in range(6):
            archive.add_file(f"sizes/{size}", bytes(range(size)))
        archive.add_file("etc/empty", b"")
    return buffer.getvalue()


def by_name(entries: list[Entry]) -> dict[str, Entry]:
    return {entry.name: entry for entry in entries}


# -- format ---------------------------------------------------------------------


def test_entries_have_expected_types_modes_and_contents() -> None:
    entries = by_name(read_newc(build()))

    assert stat.S_ISDIR(entries["dev"].mode)
    assert stat.S_IMODE(entries["dev"].mode) == 0o755
    assert entries["dev"].nlink == 2

    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and stat.S_IMODE(console.mode) == 0o600
    assert (console.rdevmajor, console.rdevminor) == (5, 1)
    assert console.data == b""
    null = entries["dev/null"]
    assert stat.S_IMODE(null.mode) == 0o666 and (null.rdevmajor, null.rdevminor) == (1, 3)

    busybox = entries["bin/busybox"]
    assert stat.S_ISREG(busybox.mode) and stat.S_IMODE(busybox.mode) == 0o755
    assert busybox.data == b"\x7fELF-busybox"
    assert busybox.nlink == 1

    assert stat.S_ISLNK(entries["bin/sh"].mode)
    assert entries["bin/sh"].data == b"busybox"
    assert entries["sbin/init"].data == b"/bin/busybox"

    assert entries["lib/modules/virtio_net.ko"].data == b"k" * 4097
    assert stat.S_IMODE(entries["lib/modules/virtio_net.ko"].mode) == 0o644
    assert stat.S_IMODE(entries["tmp"].mode) == 0o1777
    for size in range(6):
        assert entries[f"sizes/{size}"].data == bytes(range(size))
    assert entries["etc/empty"].data == b""


def test_header_fields_are_deterministic_and_inodes_unique() -> None:
    entries = read_newc(build())
    assert entries[-1].name == "TRAILER!!!"
    body = entries[:-1]
    inodes = [entry.ino for entry in body]
    assert inodes == sorted(inodes) and len(set(inodes)) == len(inodes)
    assert all(entry.ino > 0 for entry in body)
    for entry in entries:
        assert (entry.uid, entry.gid, entry.mtime, entry.check) == (0, 0, 0, 0)


def test_same_inputs_give_identical_bytes() -> None:
    assert build() == build()


def test_parents_are_added_once_and_before_children() -> None:
    names = [entry.name for entry in read_newc(build())]
    assert names.count("lib") == 1 and names.count("lib/modules") == 1
    assert names.count("dev") == 1 and names.count("bin") == 1
    assert (
        names.index("lib") < names.index("lib/modules") < names.index("lib/modules/virtio_net.ko")
    )
    assert names.index("sbin") < names.index("sbin/init")
    for name in names[:-1]:
        parent = name.rpartition("/")[0]
        if parent:
            assert parent in names[: names.index(name)], f"{name} before its parent"


def test_paths_are_normalised() -> None:
    buffer = io.BytesIO()
    with CpioWriter(buffer) as archive:
        archive.add_file("/etc//./hostname", b"vm\n")
        archive.add_directory("/var/lib/")
    names = [entry.name for entry in read_newc(buffer.getvalue())]
    assert names == ["etc", "etc/hostname", "var", "var/lib", "TRAILER!!!"]


@pytest.mark.parametrize("bad", ["", "/", ".", "../etc/passwd", "etc/../../x", "a\0b"])
def test_invalid_paths_are_rejected_with_the_path_named(bad: str) -> None:
    archive = CpioWriter(io.BytesIO())
    with pytest.raises(ValueError) as excinfo:
        archive.add_file(bad, b"")
    assert repr(bad) in str(excinfo.value)


def test_duplicates_and_conflicts_are_rejected() -> None:
    archive = CpioWriter(io.BytesIO())
    archive.add_file("etc/hostname", b"a")
    with pytest.raises(ValueError, match="already added"):
        archive.add_file("etc/hostname", b"b")
    with pytest.raises(ValueError, match="already added"):
        archive.add_symlink("etc", "x")
    with pytest.raises(ValueError, match="not a directory"):
        archive.add_file("etc/hostname/x", b"")
    with pytest.raises(ValueError, match="not a directory"):
        archive.add_directory("etc/hostname")


def test_existing_directory_same_mode_is_a_no_op_other_mode_an_error() -> None:
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    archive.add_file("tmp/x", b"")
    archive.add_directory("tmp")
    with pytest.raises(ValueError, match="0o1777"):
        archive.add_directory("tmp", mode=0o1777)
    archive.close()
    assert [e.name for e in read_newc(buffer.getvalue())].count("tmp") == 1


def test_modes_accept_full_st_mode_but_not_wrong_type() -> None:
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    archive.add_file("a", b"", mode=stat.S_IFREG | 0o600)
    with pytest.raises(ValueError, match="invalid mode"):
        archive.add_file("b", b"", mode=stat.S_IFDIR | 0o755)
    with pytest.raises(ValueError, match="invalid device"):
        archive.add_char_device("dev/x", -1, 0)
    with pytest.raises(ValueError, match="symlink target"):
        archive.add_symlink("l", "")
    archive.close()
    assert stat.S_IMODE(by_name(read_newc(buffer.getvalue()))["a"].mode) == 0o600


def test_close_is_idempotent_and_final() -> None:
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    archive.add_file("x", b"1")
    archive.close()
    size = len(buffer.getvalue())
    archive.close()
    assert len(buffer.getvalue()) == size
    assert archive.closed
    with pytest.raises(ValueError, match="closed"):
        archive.add_file("y", b"")
    # The stream belongs to the caller and stays open.
    assert not buffer.closed


def test_context_manager_skips_trailer_on_error() -> None:
    buffer = io.BytesIO()
    with pytest.raises(RuntimeError), CpioWriter(buffer) as archive:
        archive.add_file("x", b"1")
        raise RuntimeError("boom")
    assert b"TRAILER!!!" not in buffer.getvalue()


def test_empty_archive_is_just_a_trailer() -> None:
    buffer = io.BytesIO()
    CpioWriter(buffer).close()
    assert [e.name for e in read_newc(buffer.getvalue())] == ["TRAILER!!!"]


# -- interoperability with GNU cpio ---------------------------------------------

needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")


@needs_cpio
def test_gnu_cpio_lists_the_archive() -> None:
    # mtime 0 is shown as "Jan  1  1970" in UTC, which separates the name.
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
    result = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"], input=build(), capture_output=True, check=True, env=env
    )
    listing = {}
    for line in result.stdout.decode().splitlines():
        name = line.split(" 1970 ", 1)[1].split(" -> ")[0]
        listing[name] = line
    assert listing["dev/console"].startswith("crw-------")
    assert re.search(r" 5, +1 ", listing["dev/console"])
    assert listing["bin/busybox"].startswith("-rwxr-xr-x")
    assert listing["bin/sh"].startswith("lrwxrwxrwx") and listing["bin/sh"].endswith("-> busybox")
    assert listing["tmp"].startswith("drwxrwxrwt")
    assert "lib/modules/virtio_net.ko" in listing
    assert result.stderr == b""


@needs_cpio
def test_gnu_cpio_extracts_the_archive(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with CpioWriter(buffer) as archive:
        archive.add_file("bin/busybox", b"\x7fELF-busybox", mode=0o755)
        archive.add_symlink("bin/sh", "busybox")
        archive.add_file("lib/modules/virtio_net.ko", b"k" * 4097)
        archive.add_file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mode=0o600)
        for size in range(6):
            archive.add_file(f"sizes/{size}", bytes(range(size)))
    subprocess.run(
        ["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames"],
        input=buffer.getvalue(),
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "bin/busybox").read_bytes() == b"\x7fELF-busybox"
    assert stat.S_IMODE((tmp_path / "bin/busybox").stat().st_mode) == 0o755
    assert os.readlink(tmp_path / "bin/sh") == "busybox"
    assert (tmp_path / "lib/modules/virtio_net.ko").read_bytes() == b"k" * 4097
    assert stat.S_IMODE((tmp_path / "etc/passwd").stat().st_mode) == 0o600
    for size in range(6):
        assert (tmp_path / f"sizes/{size}").read_bytes() == bytes(range(size))
