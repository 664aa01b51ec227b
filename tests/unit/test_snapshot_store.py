"""The snapshot store's housekeeping: empty states, lock files, half-written saves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_qemu.cache import CACHEDIR_TAG
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.vm.snapshot import SnapshotStore


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_an_empty_state_does_not_count_and_is_removed(tmp_path: Path) -> None:
    snapshot = SnapshotStore(tmp_path).get("k")
    snapshot.state.write_bytes(b"")
    snapshot.console.write_text("boot")
    snapshot.ram.write_bytes(b"ram")
    assert not snapshot.exists()
    assert not any(path.exists() for path in (snapshot.state, snapshot.console, snapshot.ram))


def test_a_state_without_its_template_ram_does_not_count(tmp_path: Path) -> None:
    snapshot = SnapshotStore(tmp_path).get("k")
    snapshot.state.write_bytes(b"state")
    assert not snapshot.exists()
    assert not snapshot.state.exists()


def test_the_lock_file_goes_once_the_snapshot_is_built(tmp_path: Path) -> None:
    snapshot = SnapshotStore(tmp_path).get("k")
    with snapshot.building():
        assert snapshot.lock_path.exists()
        snapshot.ram.write_bytes(b"ram")
        snapshot.state.write_bytes(b"state")
    assert not snapshot.lock_path.exists()
    with snapshot.building():
        pass  # a failed build keeps nothing either way, but must not break the next
    assert snapshot.exists()


def test_half_written_states_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / f".k.state.{dead_pid()}.partial"
    dead.write_bytes(b"half")
    alive = tmp_path / f".k.state.{os.getpid()}.partial"
    alive.write_bytes(b"being written")
    SnapshotStore(tmp_path).get("other")
    assert not dead.exists()
    assert alive.exists()


def test_pruning_keeps_the_most_recently_used(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    for index, key in enumerate("abc"):
        state = tmp_path / f"{key}.state"
        state.write_bytes(b"x")
        os.utime(state, (index, index))
    store.get("d")
    assert sorted(path.name for path in tmp_path.glob("*.state")) == ["b.state", "c.state"]


def test_a_template_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    store = SnapshotStore(blocker / "snapshots")
    with pytest.raises(ConfigurationError, match=r"cannot keep VM templates in .*cache/snapshots"):
        store.get("0123")


def test_the_store_is_tagged_as_a_cache_and_pruning_leaves_the_tag(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots", keep=1)
    for key in ("a", "b"):
        snapshot = store.get(key)
        snapshot.state.write_bytes(b"state")
        snapshot.ram.write_bytes(b"ram")
    store.get("c")
    assert (tmp_path / "snapshots" / "CACHEDIR.TAG").read_bytes() == CACHEDIR_TAG
    assert not [path for path in (tmp_path / "snapshots").iterdir() if ".CACHEDIR" in path.name]
