"""Run-wide plugin state: settings, guests per architecture, accelerators, each test's VMs."""

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
    from pytest_qemu.plugin.factory import VMFactory
    from pytest_qemu.vm.pool import VMPool
    from pytest_qemu.vm.snapshot import SnapshotStore

session_key = pytest.StashKey["QemuSession"]()
factories_key = pytest.StashKey[list["VMFactory"]]()
#: A test's reports so far, by phase ("setup", "call", "teardown").
reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()
#: The test pytest runs after this one in this process (None for the last).
next_item_key = pytest.StashKey["pytest.Item | None"]()


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
        self._pool: VMPool | None = None
        self._pool_decided = False

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
                from pytest_qemu.guests.default import DefaultGuest

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
                _verdict_directory(self.cache_dir),
                kernel,
            )
        with self._lock:
            self._accelerators[platform.name] = choice
        return choice

    def pool(self, config: pytest.Config) -> VMPool | None:
        """Where VMs are prepared ahead of the tests that take them; None when
        ``--qemu-prepare-ahead`` is off, or auto and no CPU would be free for it."""
        with self._lock:
            if not self._pool_decided:
                self._pool_decided = True
                depth = _prepare_ahead_depth(self.settings.prepare_ahead, config)
                temporary = getattr(config, "_tmp_path_factory", None)
                if depth > 0 and temporary is not None:
                    from pytest_qemu.vm.pool import VMPool

                    # Beside the tests' own directories: a VM's logs move there when taken.
                    self._pool = VMPool(temporary.getbasetemp() / "qemu-prepared", depth)
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


def settings(config: pytest.Config) -> QemuSettings:
    """The run's settings."""
    return QemuSession.of(config).settings


def snapshots_wanted(request: pytest.FixtureRequest) -> bool:
    """False when the test is marked ``@pytest.mark.qemu(snapshot=False)``."""
    return qemu_marker_kwargs(request.node).get("snapshot") is not False


def qemu_marker_kwargs(node: pytest.Item) -> dict[str, object]:
    """The options of every ``qemu`` marker on *node*, the closest winning each option.

    A test's ``@pytest.mark.qemu(cpus=2)`` in a module marked ``qemu(userland="host")``
    adds to the module's options instead of dropping them.
    """
    merged: dict[str, object] = {}
    for marker in node.iter_markers("qemu"):  # closest first
        merged = {**marker.kwargs, **merged}
    return merged


def marker_options(request: pytest.FixtureRequest) -> dict[str, object]:
    """The VM options a test's ``qemu`` markers set (``arch``, ``userland``...); the
    markers were checked before the test's setup (``plugin/keywords.py``)."""
    marked = qemu_marker_kwargs(request.node)
    return {
        name: value for name, value in marked.items() if name not in ("snapshot", "kernel_warnings")
    }


def next_test_wants_the_same_vm(request: pytest.FixtureRequest) -> bool:
    """Whether the test after *request*'s (in this process) asks for ``qemu_vm`` too, with
    the same ``qemu`` marker and architecture: its VM is then worth preparing ahead."""
    item = request.node
    following = item.stash.get(next_item_key, None)
    if following is None or "qemu_vm" not in getattr(following, "fixturenames", ()):
        return False

    def settings_of(node: pytest.Item) -> tuple[object, object]:
        callspec = getattr(node, "callspec", None)
        params = callspec.params if callspec is not None else {}
        return (
            qemu_marker_kwargs(node),
            (params.get("qemu_arch"), repr(params.get("qemu_devices"))),
        )

    return settings_of(item) == settings_of(following)


def log_root_for(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Path:
    """A fresh directory for the logs of the VMs of *request*'s test or fixture."""
    import re

    name = re.sub(r"[^\w.-]", "_", request.node.name)[:30]
    return factory.mktemp(f"qemu-{name}", numbered=True)


def _verdict_directory(cache_dir: Path) -> Path:
    """Where accelerator probe verdicts are kept: the user's state directory (one per
    host, as the verdict is about the host), else the cache directory."""
    from pytest_qemu.allocation import AllocationError
    from pytest_qemu.allocation.statedir import default_state_dir

    try:
        return default_state_dir() / "accelerator"
    except AllocationError:
        return cache_dir / "accelerator"
