"""The build cache: each file built once, whoever asks at the same time, and no lock left."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from pytest_qemu import cache as cache_module
from pytest_qemu.cache import BuildCache
from pytest_qemu.errors import CacheFull
from tests.helpers import small_tmpfs


def test_concurrent_callers_build_once_and_leave_no_lock(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    builds = []

    def build(out: BinaryIO) -> None:
        builds.append(threading.get_ident())
        time.sleep(0.2)  # the others arrive while this one builds
        out.write(b"built")

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("kind", "k", ".bin", build)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert {path.read_bytes() for path in results} == {b"built"}
    assert sorted(path.name for path in (tmp_path / "kind").iterdir()) == ["k.bin", "k.bin.sum"]


def test_the_cache_is_tagged_as_one_for_backup_tools(tmp_path: Path) -> None:
    root = tmp_path / "new" / "cache"
    BuildCache(root).get("kind", "k", ".bin", lambda out: out.write(b"built") and None)
    tag = (root / "CACHEDIR.TAG").read_bytes()
    # The specification's first line, exactly; and nothing half-written left beside it.
    assert tag.startswith(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    assert sorted(path.name for path in root.iterdir()) == ["CACHEDIR.TAG", "kind"]


def test_a_failed_build_leaves_nothing_and_the_next_caller_builds(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)

    def broken(out: BinaryIO) -> None:
        out.write(b"half")
        raise RuntimeError("the compiler failed")

    with pytest.raises(RuntimeError, match="compiler"):
        cache.get("kind", "k", ".bin", broken)
    # No result, no half-written file, no lock.
    assert list((tmp_path / "kind").iterdir()) == []
    path = cache.get("kind", "k", ".bin", lambda out: out.write(b"whole") and None)
    assert path.read_bytes() == b"whole"
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == ["k.bin", "k.bin.sum"]


def _writer(data: bytes, builds: list[bytes]) -> Callable[[BinaryIO], None]:
    def build(out: BinaryIO) -> None:
        builds.append(data)
        out.write(data)

    return build


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: os.truncate(path, 3),  # a truncated file (the "Bus error" agent)
        lambda path: path.write_bytes(b"X" * len(path.read_bytes())),  # same size, other bytes
        lambda path: path.with_name(path.name + ".sum").unlink(),  # no record: not trusted
    ],
    ids=["truncated", "overwritten", "unrecorded"],
)
def test_a_damaged_file_is_rebuilt_not_trusted(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    builds: list[bytes] = []
    path = BuildCache(tmp_path).get("kind", "k", ".bin", _writer(b"the agent binary", builds))
    damage(path)
    # A new process (a fresh BuildCache) checks the file before handing it out.
    again = BuildCache(tmp_path).get("kind", "k", ".bin", _writer(b"the agent binary", builds))
    assert again == path and path.read_bytes() == b"the agent binary"
    assert len(builds) == 2
    # Intact now: the next caller builds nothing.
    BuildCache(tmp_path).get("kind", "k", ".bin", _writer(b"the agent binary", builds))
    assert len(builds) == 2


def test_a_full_cache_says_so_names_the_directory_and_leaves_nothing(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "cache", size_kib=64) as cache_dir:
        cache = BuildCache(cache_dir)
        with pytest.raises(CacheFull) as full:
            cache.get("kernels", "k", ".vmlinux", _writer(b"x" * 1024 * 1024, []))
        message = str(full.value)
        assert "cache is full" in message and str(cache_dir / "kernels") in message
        assert "No space left on device" in message
        assert list((cache_dir / "kernels").iterdir()) == []


def test_a_cache_too_full_for_even_a_directory_says_so(tmp_path: Path) -> None:
    # No inode left: even the kind's directory cannot be made.
    with (
        small_tmpfs(tmp_path / "cache", size_kib=64, inodes=1) as cache_dir,
        pytest.raises(CacheFull, match=re.escape(str(cache_dir / "agents"))),
    ):
        BuildCache(cache_dir).get("agents", "k", "", _writer(b"x" * 8192, []))


def test_a_checked_file_is_trusted_by_its_identity_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[bytes] = []
    path = BuildCache(tmp_path).get("kind", "k", ".bin", _writer(b"a kernel", builds))
    record = path.with_name(path.name + ".sum")
    # Just built: too fresh for its identity to be recorded (a change in the same clock
    # tick could not be told apart), so the next process checks it in full.
    assert len(record.read_text().split()) == 2
    monkeypatch.setattr(cache_module, "_SETTLED", 0.0)
    hashed: list[Path] = []
    measure = cache_module._measure

    def counting_measure(file: Path) -> tuple[int, str]:
        hashed.append(file)
        return measure(file)

    monkeypatch.setattr(cache_module, "_measure", counting_measure)
    BuildCache(tmp_path).get("kind", "k", ".bin", _writer(b"a kernel", builds))
    assert hashed == [path] and len(record.read_text().split()) == 3
    # Another process trusts the file as it is: no hashing.
    BuildCache(tmp_path).get("kind", "k", ".bin", _writer(b"a kernel", builds))
    assert hashed == [path]
    # Overwritten with the same size and its modification time put back: its change time
    # moved, so it is checked in full and rebuilt.
    time.sleep(0.05)
    before = path.stat()
    path.write_bytes(b"X" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = BuildCache(tmp_path).get("kind", "k", ".bin", _writer(b"a kernel", builds))
    assert again.read_bytes() == b"a kernel" and len(builds) == 2
