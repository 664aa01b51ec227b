"""The fixtures pytest-qemu gives tests."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_qemu.errors import QemuError, SetupError
from pytest_qemu.plugin.options import optional_str
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.plugin.stash import factories_key, next_item_key, reports_key

# The rest is imported when a fixture runs: this module loads in every pytest run.
if TYPE_CHECKING:
    from pytest_qemu.devices.base import Device
    from pytest_qemu.devices.directories import P9Directory, ReadOnlyDirectory
    from pytest_qemu.devices.network import Network
    from pytest_qemu.guests.default import DefaultGuest
    from pytest_qemu.plugin.factory import VMFactory
    from pytest_qemu.plugin.options import QemuSettings
    from pytest_qemu.vm.machine import VM


@pytest.fixture(scope="session")
def qemu_settings(pytestconfig: pytest.Config) -> QemuSettings:
    """The run's QEMU settings, from ``--qemu-*`` options and ``qemu_*`` ini values."""
    return QemuSession.of(pytestconfig).settings


@pytest.fixture(scope="session")
def qemu_guest(pytestconfig: pytest.Config) -> DefaultGuest:
    """The default guest of the run's architecture: a Debian kernel plus an initramfs
    built from busybox-static.

    Built once and cached on disk (``--qemu-cache-dir``); each VM gets an
    initramfs with just the kernel modules its devices need.
    """
    return QemuSession.of(pytestconfig).default_guest()


@pytest.fixture
def qemu_devices() -> Sequence[Device]:
    """The devices ``qemu_vm`` is started with: none by default.

    Override it in a conftest or parametrize it for a device matrix::

        @pytest.mark.parametrize("qemu_devices", [[VirtioRandom()], []])
        def test_boot(qemu_vm): ...
    """
    return []


@pytest.fixture
def qemu_arch() -> str | None:
    """The architecture of the VMs a test starts: ``None`` for the test's ``qemu`` marker,
    else ``--qemu-arch``, else the host's.

    Parametrize it for an architecture matrix (the names of ``--qemu-arch``)::

        @pytest.mark.parametrize("qemu_arch", pytest_qemu.platforms.PLATFORMS.names())
        def test_boots(qemu_vm): ...

    or over every architecture with ``pytest_qemu.architectures()``.
    """
    return None


@pytest.fixture
def qemu_vm_factory(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    qemu_arch: str | None,
) -> Iterator[VMFactory]:
    """Start VMs: ``qemu_vm_factory(devices=[...], memory=..., arch=..., userland=...,
    kernel=..., initramfs=..., kernel_args=[...], qemu_args=[...])`` returns a running
    :class:`~pytest_qemu.VM`.

    The test's ``@pytest.mark.qemu(arch=..., userland=..., snapshot=False)``
    marker sets defaults for every VM it starts. Every VM it started is shut
    down when the test ends, whatever its outcome. Console logs and QEMU's
    stderr are kept under the test's temporary directory.
    """
    factory = _factory(request, tmp_path_factory, qemu_arch)
    request.node.stash.setdefault(factories_key, []).append(factory)
    try:
        yield factory
    finally:
        try:
            if QemuSession.of(request.config).settings.keep_failed and _failed(request.node):
                from pytest_qemu.plugin.keep import keep_alive

                keep_alive(request.config, factory.vms, request.node.nodeid)
        finally:
            factory.close()


def _failed(node: pytest.Item) -> bool:
    reports = node.stash.get(reports_key, {})
    return any(report.failed for report in reports.values())


@pytest.fixture(scope="session")
def qemu_session_vm_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VMFactory]:
    """A session-scoped :class:`~pytest_qemu.VMFactory`, for VMs that many tests share.

    Use it in module- or session-scoped fixtures; a VM is a context manager,
    shut down when the ``with`` block ends (at the fixture's scope end)::

        @pytest.fixture(scope="module")
        def server(qemu_session_vm_factory):
            with qemu_session_vm_factory(devices=[...]) as vm:
                yield vm

    Whatever is still running at the end of the session is shut down then.
    """
    factory = _factory(request, tmp_path_factory)
    try:
        yield factory
    finally:
        factory.close()


def _factory(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    arch: str | None = None,
) -> VMFactory:
    session = QemuSession.of(request.config)
    failure: str | None = None
    try:
        settings = session.settings
        options = marker_options(request)
        if arch is not None:
            options["arch"] = arch
        platform = session.platform(optional_str(options.get("arch")))
        settings.resolved_binary(platform)  # a missing QEMU fails the setup, named
        problem = session.accelerator(platform).problem  # a forced KVM that hangs, named
        if problem is not None:
            raise SetupError(problem)
    except QemuError as error:
        failure = str(error)
    if failure is not None:
        # Outside the except block: the report shows the message once, with no
        # "During handling of the above exception" and none of our frames.
        pytest.fail(failure, pytrace=False)
    from pytest_qemu.plugin.factory import VMFactory

    return VMFactory.from_config(
        request.config,
        log_root_for(request, tmp_path_factory),
        snapshots=snapshots_wanted(request),
        defaults=options,
        pool=session.pool(request.config),
    )


@pytest.fixture
def qemu_vm(
    request: pytest.FixtureRequest, qemu_vm_factory: VMFactory, qemu_devices: Sequence[Device]
) -> VM:
    """A running VM on the default guest, with the devices of the ``qemu_devices`` fixture.

    ``qemu_vm.run(cmd)``, ``qemu_vm.check(cmd)``, ``qemu_vm.put(...)``,
    ``qemu_vm.console``, ``qemu_vm.qmp(...)``. The test's ``qemu`` marker
    chooses its architecture and userland. It is shut down at the end of the test.
    """
    qemu_vm_factory.prepare_next = next_test_wants_the_same_vm(request)
    try:
        return qemu_vm_factory(devices=qemu_devices)
    except QemuError as error:
        failure = str(error)
    # Outside the except block, so that the message is shown once (see _factory).
    pytest.fail(failure, pytrace=False)


@pytest.fixture
def p9_dir(tmp_path: Path) -> P9Directory:
    """A :class:`~pytest_qemu.P9Directory` over a fresh, empty ``tmp_path / "p9"``.

    The default guest mounts it read-write at ``p9_dir.guest_path``.
    """
    directory = tmp_path / "p9"
    directory.mkdir()
    from pytest_qemu.devices.directories import P9Directory

    return P9Directory(directory)


@pytest.fixture
def fat_dir(tmp_path: Path) -> ReadOnlyDirectory:
    """A :class:`~pytest_qemu.ReadOnlyDirectory` over a fresh, empty ``tmp_path / "fat"``.

    Put files in ``fat_dir.directory`` before starting the VM; the default guest
    mounts it read-only at ``fat_dir.guest_path``.
    """
    directory = tmp_path / "fat"
    directory.mkdir()
    from pytest_qemu.devices.directories import ReadOnlyDirectory

    return ReadOnlyDirectory(directory)


@pytest.fixture
def qemu_network(request: pytest.FixtureRequest) -> Iterator[Network]:
    """A fresh :class:`~pytest_qemu.Network`: call ``qemu_network.new_vm()`` once per VM.

    Its port and MACs are leased for the test and released at its end.
    """
    from pytest_qemu.devices.network import Network

    network = Network()
    try:
        yield network
    finally:
        # Fixtures end in reverse order of setup, so this may run before qemu_vm_factory's
        # teardown: stop the VMs first, or their MACs and port are freed while still in use.
        for factory in request.node.stash.get(factories_key, []):
            factory.close()
        network.close()


# -- what the fixtures read of a test -------------------------------------------------------


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
    name = re.sub(r"[^\w.-]", "_", request.node.name)[:30]
    return factory.mktemp(f"qemu-{name}", numbered=True)
