"""The build cache: each file built once, whoever asks at the same time, and no lock left."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from pytest_qemu.cache import BuildCache


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
    assert sorted(path.name for path in (tmp_path / "kind").iterdir()) == ["k.bin"]


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
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == ["k.bin"]
