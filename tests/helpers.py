"""Helpers shared by the test suites: what a run left behind on the host."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from pytest_qemu.plugin.options import QemuSettings


def running_qemu_pids(marker: bytes = b"") -> set[int]:
    """PIDs of the QEMU system emulators running on this host whose arguments hold *marker*."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                arguments = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            command = arguments.split(b"\0")[0]
            if os.path.basename(command).startswith(b"qemu-system") and marker in arguments:
                pids.add(int(entry.name))
    return pids


def recorded_leases(state_dir: Path) -> list[dict[str, object]]:
    """The leases written in *state_dir*'s state file, without reclaiming dead owners."""
    state_file = state_dir / "leases.json"
    if not state_file.exists():
        return []
    leases: list[dict[str, object]] = json.loads(state_file.read_text())["leases"]
    return leases


def make_settings(cache_dir: Path, **overrides: object) -> QemuSettings:
    """Run settings as the options' defaults give them, with *overrides*."""
    return QemuSettings.defaults(cache_dir=cache_dir, accel="tcg", snapshots=False, **overrides)


@contextlib.contextmanager
def small_tmpfs(
    directory: Path, size_kib: int, inodes: int | None = None, read_only: bool = False
) -> Iterator[Path]:
    """A tmpfs of *size_kib* KiB (and at most *inodes* files; *read_only*) mounted on
    *directory* (created), unmounted afterwards: a disk that fills up, or a read-only
    one. Needs root; skips otherwise."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    limit = ("" if inodes is None else f",nr_inodes={inodes}") + (",ro" if read_only else "")
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size_kib}k,mode=0755{limit}",
            "tmpfs",
            str(directory),
        ],
        check=True,
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
