"""Run-wide plugin state: settings, guests per architecture, accelerators, each test's VMs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.errors import QemuError
from pytest_qemu.guests.default import DefaultGuest
from pytest_qemu.platforms import Platform, get_platform
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.summary import RunStats
from pytest_qemu.vm.accel import AcceleratorChoice, choose_accelerator
from pytest_qemu.vm.snapshot import SnapshotStore

if TYPE_CHECKING:
    from pytest_qemu.plugin.factory import VMFactory

session_key = pytest.StashKey["QemuSession"]()
factories_key = pytest.StashKey[list["VMFactory"]]()
#: A test's reports so far, by phase ("setup", "call", "teardown").
reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()


class QemuSession:
    """What every VM of a pytest run shares: its settings, the build cache, one
    default guest per architecture, and the accelerator decided for each."""

    def __init__(self, settings: QemuSettings) -> None:
        self.settings = settings
        self.cache_dir = settings.cache_dir or default_cache_dir()
        self._cache = BuildCache(self.cache_dir)
        self._lock = threading.Lock()
        self._guests: dict[str, DefaultGuest] = {}
        #: How this process's VMs started (the controller's holds every worker's).
        self.stats = RunStats()
        self._accelerators: dict[str, AcceleratorChoice] = {}

    @classmethod
    def of(cls, config: pytest.Config) -> QemuSession:
        """The session of *config*'s run (made on first use)."""
        if session_key not in config.stash:
            config.stash[session_key] = cls(QemuSettings.from_config(config))
        return config.stash[session_key]

    def platform(self, arch: str | None = None) -> Platform:
        """The platform for *arch*, else the run's ``--qemu-arch``, else the host's."""
        return get_platform(arch or self.settings.arch)

    def default_guest(self, platform: Platform | None = None) -> DefaultGuest:
        """The default guest of *platform* (the run's default architecture if None)."""
        platform = platform or self.platform()
        with self._lock:
            if platform.name not in self._guests:
                self._guests[platform.name] = DefaultGuest(self._cache, platform=platform)
            return self._guests[platform.name]

    def accelerator(self, platform: Platform | None = None) -> AcceleratorChoice:
        """The accelerator for *platform*'s VMs: probed once per run and host boot."""
        platform = platform or self.platform()
        with self._lock:
            if platform.name in self._accelerators:
                return self._accelerators[platform.name]
        if not platform.can_use_kvm:
            choice = AcceleratorChoice("tcg", f"accelerator: tcg ({platform.name} is emulated)")
        else:
            kernel = self.settings.kernel
            if kernel is None:
                try:
                    kernel = self.default_guest(platform).kernel_image()
                except QemuError:
                    kernel = None  # the boot-sector probe needs no kernel
            choice = choose_accelerator(
                self.settings.accel,
                self.settings.resolved_binary(platform),
                self.cache_dir,
                kernel,
            )
        with self._lock:
            self._accelerators[platform.name] = choice
        return choice

    def snapshot_store(self) -> SnapshotStore | None:
        """Where snapshots are kept; None when ``--qemu-snapshots=off``."""
        return SnapshotStore(self.cache_dir / "snapshots") if self.settings.snapshots else None


def settings(config: pytest.Config) -> QemuSettings:
    """The run's settings."""
    return QemuSession.of(config).settings


def snapshots_wanted(request: pytest.FixtureRequest) -> bool:
    """False when the test is marked ``@pytest.mark.qemu(snapshot=False)``."""
    marker = request.node.get_closest_marker("qemu")
    return not (marker is not None and marker.kwargs.get("snapshot") is False)


def marker_options(request: pytest.FixtureRequest) -> dict[str, object]:
    """The VM options a test's ``qemu`` marker sets (``arch``, ``userland``...)."""
    marker = request.node.get_closest_marker("qemu")
    if marker is None:
        return {}
    return {
        name: value
        for name, value in marker.kwargs.items()
        if name not in ("snapshot", "kernel_warnings")
    }


def log_root_for(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Path:
    """A fresh directory for the logs of the VMs of *request*'s test or fixture."""
    import re

    name = re.sub(r"[^\w.-]", "_", request.node.name)[:30]
    return factory.mktemp(f"qemu-{name}", numbered=True)
