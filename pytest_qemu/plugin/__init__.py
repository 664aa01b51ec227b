"""The pytest plugin (entry point ``pytest11: qemu``): options, hooks and fixtures."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_qemu.errors import QemuError
from pytest_qemu.plugin.fixtures import (
    fat_dir,
    p9_dir,
    qemu_arch,
    qemu_devices,
    qemu_guest,
    qemu_network,
    qemu_session_vm_factory,
    qemu_settings,
    qemu_vm,
    qemu_vm_factory,
)
from pytest_qemu.plugin.options import add_options
from pytest_qemu.plugin.session import QemuSession, factories_key
from pytest_qemu.vm.machine import kill_all_vms

__all__ = [
    "fat_dir",
    "p9_dir",
    "qemu_arch",
    "qemu_devices",
    "qemu_guest",
    "qemu_network",
    "qemu_session_vm_factory",
    "qemu_settings",
    "qemu_vm",
    "qemu_vm_factory",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "qemu(snapshot=True, arch=None, userland=None): options for the test's VMs: "
        "snapshot=False boots them instead of restoring a saved boot; arch='aarch64' "
        "emulates another architecture; userland='host' runs commands in the host's root",
    )
    try:
        QemuSession.of(config)
    except QemuError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say once, at the top of the run, which accelerator VMs use and why."""
    session = QemuSession.of(config)
    if session.settings.accel == "tcg" and not config.getoption("verbose"):
        return None
    return f"pytest-qemu: {session.accelerator().notice}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the console of every VM a failed test started to its report."""
    report = yield
    if report.failed:
        for factory in item.stash.get(factories_key, []):
            for index, vm in enumerate(factory.vms):
                report.sections.append(
                    (f"qemu vm{index} console ({vm.console_log})", vm.console.tail(40))
                )
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    kill_all_vms()
