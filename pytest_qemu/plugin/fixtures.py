"""The fixtures pytest-qemu gives tests."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pytest_qemu.devices.base import Device
from pytest_qemu.devices.directories import P9Directory, ReadOnlyDirectory
from pytest_qemu.devices.network import Network
from pytest_qemu.errors import QemuError
from pytest_qemu.guest.default import DefaultGuest
from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import (
    accelerator_choice,
    default_guest,
    factories_key,
    settings,
    snapshot_store,
)
from pytest_qemu.vm.machine import VM


@pytest.fixture(scope="session")
def qemu_settings(pytestconfig: pytest.Config) -> QemuSettings:
    """The run's QEMU settings, from ``--qemu-*`` options and ``qemu_*`` ini values."""
    return settings(pytestconfig)


@pytest.fixture(scope="session")
def qemu_guest(pytestconfig: pytest.Config) -> DefaultGuest:
    """The default guest: the host's kernel plus an initramfs built from busybox-static.

    Built once and cached on disk (``--qemu-cache-dir``); each VM gets an
    initramfs with just the kernel modules its devices need.
    """
    return default_guest(pytestconfig)


@pytest.fixture
def qemu_devices() -> Sequence[Device]:
    """The devices ``qemu_vm`` is started with: none by default.

    Override it in a conftest or parametrize it for a device matrix::

        @pytest.mark.parametrize("qemu_devices", [[VirtioRandom()], []])
        def test_boot(qemu_vm): ...
    """
    return []


@pytest.fixture
def qemu_vm_factory(
    request: pytest.FixtureRequest,
    qemu_settings: QemuSettings,
    qemu_guest: DefaultGuest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VMFactory]:
    """Start VMs: ``qemu_vm_factory(devices=[...], memory=..., kernel=..., initramfs=...,
    kernel_args=[...], qemu_args=[...])`` returns a running :class:`~pytest_qemu.VM`.

    Every VM it started is shut down when the test ends, whatever its outcome.
    Console logs and QEMU's stderr are kept under the test's temporary directory.
    """
    try:
        qemu = qemu_settings.resolved_binary()
        accelerator = accelerator_choice(request.config).accelerator
    except QemuError as error:
        pytest.fail(str(error), pytrace=False)
    factory = VMFactory(
        guest=qemu_guest,
        qemu=qemu,
        accelerator=accelerator,
        log_root=tmp_path_factory.mktemp(
            "qemu-" + re.sub(r"[^\w.-]", "_", request.node.name)[:30], numbered=True
        ),
        memory_mb=qemu_settings.memory_mb,
        boot_timeout=qemu_settings.boot_timeout,
        kernel=qemu_settings.kernel,
        initramfs=qemu_settings.initramfs,
        kernel_args=qemu_settings.kernel_args,
        snapshots=snapshot_store(request),
    )
    request.node.stash.setdefault(factories_key, []).append(factory)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def qemu_vm(qemu_vm_factory: VMFactory, qemu_devices: Sequence[Device]) -> VM:
    """A running VM on the default guest, with the devices of the ``qemu_devices`` fixture.

    ``qemu_vm.run(cmd)``, ``qemu_vm.check(cmd)``, ``qemu_vm.console``,
    ``qemu_vm.qmp(...)``. It is shut down at the end of the test.
    """
    try:
        return qemu_vm_factory(devices=qemu_devices)
    except QemuError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def p9_dir(tmp_path: Path) -> P9Directory:
    """A :class:`~pytest_qemu.P9Directory` over a fresh, empty ``tmp_path / "p9"``.

    The default guest mounts it read-write at ``p9_dir.guest_path``.
    """
    directory = tmp_path / "p9"
    directory.mkdir()
    return P9Directory(directory)


@pytest.fixture
def fat_dir(tmp_path: Path) -> ReadOnlyDirectory:
    """A :class:`~pytest_qemu.ReadOnlyDirectory` over a fresh, empty ``tmp_path / "fat"``.

    Put files in ``fat_dir.directory`` before starting the VM; the default guest
    mounts it read-only at ``fat_dir.guest_path``.
    """
    directory = tmp_path / "fat"
    directory.mkdir()
    return ReadOnlyDirectory(directory)


@pytest.fixture
def qemu_network(request: pytest.FixtureRequest) -> Iterator[Network]:
    """A fresh :class:`~pytest_qemu.Network`: call ``qemu_network.new_vm()`` once per VM.

    Its port and MACs are leased for the test and released at its end.
    """
    network = Network()
    try:
        yield network
    finally:
        # Fixtures end in reverse order of setup, so this may run before qemu_vm_factory's
        # teardown: stop the VMs first, or their MACs and port are freed while still in use.
        for factory in request.node.stash.get(factories_key, []):
            factory.close()
        network.close()
