"""What the cache holds, and pruning it: ``python -m pytest_qemu cache list|prune``."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.images.debian_root import MANIFEST, userlands_dir


@dataclass(frozen=True)
class CachedUserland:
    """One built userland in the cache."""

    path: Path
    #: "debian <suite> <Debian architecture>: <packages>" in words.
    description: str
    size: int
    #: Seconds since it was last used (the directory's modification time).
    idle_seconds: float


def tree_size(path: Path) -> int:
    """Bytes of the files under *path* (blocks actually used: disk images are sparse)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(directory) / name).lstat().st_blocks * 512
            except OSError:
                continue
    return total


def cache_parts(cache_dir: Path) -> list[tuple[str, int]]:
    """The cache's top-level parts (kernels, initramfs, snapshots, userlands...) and sizes."""
    if not cache_dir.is_dir():
        return []
    return [(entry.name, tree_size(entry)) for entry in sorted(cache_dir.iterdir())]


def cached_userlands(cache_dir: Path) -> list[CachedUserland]:
    """Every built userland, oldest use first."""
    directory = userlands_dir(cache_dir)
    found = []
    now = time.time()
    for entry in sorted(directory.glob("*/" + MANIFEST)) if directory.is_dir() else []:
        manifest = json.loads(entry.read_text())
        packages = ", ".join(manifest.get("packages", [])) or "the essential set only"
        found.append(
            CachedUserland(
                entry.parent,
                f"debian {manifest['suite']} {manifest['architecture']}: {packages}",
                tree_size(entry.parent),
                now - entry.parent.stat().st_mtime,
            )
        )
    return sorted(found, key=lambda userland: -userland.idle_seconds)


def prune_userlands(cache_dir: Path, idle_days: float) -> list[CachedUserland]:
    """Remove the userlands unused for *idle_days* days (0: all), and what failed builds
    left behind; return the removed ones. VMs running on one keep their open files."""
    removed = [
        userland
        for userland in cached_userlands(cache_dir)
        if userland.idle_seconds >= idle_days * 86400
    ]
    for userland in removed:
        shutil.rmtree(userland.path, ignore_errors=True)
    directory = userlands_dir(cache_dir)
    for leftover in directory.glob(".debian-*") if directory.is_dir() else []:
        # A build in progress holds its lock: only a day-old half-build is abandoned.
        if time.time() - leftover.stat().st_mtime > 86400:
            shutil.rmtree(leftover, ignore_errors=True)
    return removed
