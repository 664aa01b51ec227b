"""Run-wide plugin state: settings, guests per architecture, accelerators, the pool of VMs
prepared ahead."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.errors import QemuError
from pytest_qemu.guests.prebuilt import agent_mode
from pytest_qemu.platforms import Platform, get_platform
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.summary import RunStats
from pytest_qemu.vm.accel import AcceleratorChoice, choose_accelerator

if TYPE_CHECKING:
    from pytest_qemu.guests.default import DefaultGuest
    from pytest_qemu.vm.snapshot import SnapshotStore
    from pytest_qemu.vm.start.prepared import LaunchedAhead, VMPool


class QemuSession:
    """What every VM of a pytest run shares: its settings, the build cache, one
    default guest per architecture, and the accelerator decided for each."""

    def __init__(self, settings: QemuSettings) -> None:
        self.settings = settings
        agent_mode()  # $PYTEST_QEMU_AGENT: a bad value is a usage error at the start
        self.cache_dir = settings.cache_dir or default_cache_dir()
        self._cache = BuildCache(self.cache_dir)
        self._lock = threading.Lock()
        self._guests: dict[str, DefaultGuest] = {}
        #: How this process's VMs started (the controller's holds every worker's).
        self.stats = RunStats()
        self._accelerators: dict[str, AcceleratorChoice] = {}
        self._pool: VMPool[LaunchedAhead] | None = None
        self._pool_decided = False

    @classmethod
    def of(cls, config: pytest.Config) -> QemuSession:
        """The session of *config*'s run (made on first use, kept in its stash)."""
        if _session_key not in config.stash:
            config.stash[_session_key] = cls(QemuSettings.from_config(config))
        return config.stash[_session_key]

    def platform(self, arch: str | None = None) -> Platform:
        """The platform for *arch*, else the run's ``--qemu-arch``, else the host's."""
        return get_platform(arch or self.settings.arch)

    def default_guest(self, platform: Platform | None = None) -> DefaultGuest:
        """The default guest of *platform* (the run's default architecture if None)."""
        platform = platform or self.platform()
        with self._lock:
            if platform.name not in self._guests:
                from pytest_qemu.guests.default import DefaultGuest

                self._guests[platform.name] = DefaultGuest(
                    self._cache,
                    platform=platform,
                    system_root=dict(self.settings.arch_files).get(platform.name),
                )
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
                _verdict_directory(self.cache_dir),
                kernel,
            )
        with self._lock:
            self._accelerators[platform.name] = choice
        return choice

    def pool(self, config: pytest.Config) -> VMPool[LaunchedAhead] | None:
        """Where VMs are prepared ahead of the tests that take them; None when
        ``--qemu-prepare-ahead`` is off, or auto and no CPU would be free for it."""
        with self._lock:
            if not self._pool_decided:
                self._pool_decided = True
                depth = _prepare_ahead_depth(self.settings.prepare_ahead, config)
                basetemp = basetemp_of(config)
                if depth > 0 and basetemp is not None:
                    from pytest_qemu.vm.start.prepared import VMPool

                    # Beside the tests' own directories: a VM's logs move there when taken.
                    self._pool = VMPool(basetemp / "qemu-prepared", depth)
            return self._pool

    def close(self) -> None:
        """Stop the VMs prepared ahead that no test took."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def snapshot_store(self) -> SnapshotStore | None:
        """Where snapshots are kept; None when ``--qemu-snapshots=off``."""
        if not self.settings.snapshots:
            return None
        from pytest_qemu.vm.snapshot import SnapshotStore

        return SnapshotStore(self.cache_dir / "snapshots")


#: The run's session, in the config's stash.
_session_key = pytest.StashKey[QemuSession]()

#: What ``auto`` prepares at most per process: more only holds memory on a big machine.
_MOST_PREPARED_AHEAD = 4


def _prepare_ahead_depth(setting: str, config: pytest.Config) -> int:
    """How many VMs each pytest process prepares ahead."""
    if setting == "off":
        return 0
    if setting != "auto":
        return int(setting)
    # Prepared VMs start beside the tests' own, and only help on CPUs left free: with
    # -n 2 on two cores they did not help (6d); without xdist, two prepared at once kept
    # both cores busy while pytest waited (benchmarks/boot_times.py, step 6c).
    worker_input = getattr(config, "workerinput", None)
    processes = int(worker_input.get("workercount", 1)) if worker_input else 1
    cpus = len(os.sched_getaffinity(0))
    return min(_MOST_PREPARED_AHEAD, cpus // processes) if cpus > processes else 0


def basetemp_of(config: pytest.Config) -> Path | None:
    """pytest's base temporary directory (holding every ``tmp_path``), or None outside a
    run with its tmp_path plugin."""
    # pytest keeps its TempPathFactory on the config; TempPathFactory.from_config would
    # make a second one, with a base directory of its own.
    factory: pytest.TempPathFactory | None = getattr(config, "_tmp_path_factory", None)
    return factory.getbasetemp() if factory is not None else None


def _verdict_directory(cache_dir: Path) -> Path:
    """Where accelerator probe verdicts are kept: the user's state directory (one per
    host, as the verdict is about the host), else the cache directory."""
    from pytest_qemu.allocation import AllocationError
    from pytest_qemu.allocation.statedir import default_state_dir

    try:
        return default_state_dir() / "accelerator"
    except AllocationError:
        return cache_dir / "accelerator"
