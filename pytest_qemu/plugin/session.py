"""Run-wide plugin state: the default guest, the accelerator decision, each test's VMs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_qemu.errors import QemuError
from pytest_qemu.guest.cache import BuildCache, default_cache_dir
from pytest_qemu.guest.default import DefaultGuest
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.vm.accel import AcceleratorChoice, choose_accelerator
from pytest_qemu.vm.snapshot import SnapshotStore

if TYPE_CHECKING:
    from pytest_qemu.plugin.factory import VMFactory

settings_key = pytest.StashKey[QemuSettings]()
guest_key = pytest.StashKey[DefaultGuest]()
accelerator_key = pytest.StashKey[AcceleratorChoice]()
factories_key = pytest.StashKey[list["VMFactory"]]()


def settings(config: pytest.Config) -> QemuSettings:
    if settings_key not in config.stash:
        config.stash[settings_key] = QemuSettings.from_config(config)
    return config.stash[settings_key]


def cache_dir(config: pytest.Config) -> Path:
    return settings(config).cache_dir or default_cache_dir()


def default_guest(config: pytest.Config) -> DefaultGuest:
    if guest_key not in config.stash:
        config.stash[guest_key] = DefaultGuest(BuildCache(cache_dir(config)))
    return config.stash[guest_key]


def accelerator_choice(config: pytest.Config) -> AcceleratorChoice:
    """The accelerator for this run, probed once (and cached on disk until the host reboots)."""
    if accelerator_key not in config.stash:
        run_settings = settings(config)
        kernel = run_settings.kernel
        if kernel is None:
            try:
                kernel = default_guest(config).kernel_image()
            except QemuError:
                kernel = None  # the boot-sector probe needs no kernel
        config.stash[accelerator_key] = choose_accelerator(
            run_settings.accel, run_settings.binary, cache_dir(config), kernel
        )
    return config.stash[accelerator_key]


def snapshot_store(request: pytest.FixtureRequest) -> SnapshotStore | None:
    """Where the test's VMs keep snapshots; None when ``--qemu-snapshots=off`` or
    the test is marked ``@pytest.mark.qemu(snapshot=False)``."""
    marker = request.node.get_closest_marker("qemu")
    if marker is not None and marker.kwargs.get("snapshot") is False:
        return None
    if not settings(request.config).snapshots:
        return None
    return SnapshotStore(cache_dir(request.config) / "snapshots")
