"""The pytest plugin (entry point ``pytest11: qemu``): options, hooks and fixtures."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Generator
from typing import Any

import pytest

from pytest_qemu.errors import QemuError
from pytest_qemu.plugin.fixtures import (
    fat_dir,
    p9_dir,
    qemu_arch,
    qemu_devices,
    qemu_guest,
    qemu_marker_kwargs,
    qemu_network,
    qemu_session_vm_factory,
    qemu_settings,
    qemu_vm,
    qemu_vm_factory,
)
from pytest_qemu.plugin.options import add_options
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.plugin.stash import factories_key, next_item_key, reports_key

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
        "qemu(snapshot=True, arch=None, userland=None, cpus=1, kernel_warnings=True): "
        "options for the test's VMs: snapshot=False boots them instead of cloning a template; "
        "arch='<name>' emulates another architecture (those of --qemu-arch); "
        "userland='host' runs commands in the host's root; cpus=2 gives them two vCPUs; "
        "kernel_warnings=False lets the guest kernel warn without failing",
    )
    try:
        QemuSession.of(config)
    except QemuError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Say once, at the top of the run, which accelerator VMs use and why, and whether
    the first VMs will be building the guest and templates."""
    session = QemuSession.of(config)
    lines = []
    built = False
    with contextlib.suppress(OSError):
        built = any((session.cache_dir / "snapshots").glob("*.state"))
    if not built:
        # Say so up front: the first VMs take seconds each, not tens of milliseconds.
        lines.append(
            f"pytest-qemu: nothing built yet in {session.cache_dir}: the first VMs build the "
            "guest (kernel extraction, agent, initramfs: a few seconds, once per machine) and "
            "a VM template per hardware layout (a boot each); later runs reuse them"
        )
    if session.settings.accel != "tcg" or config.getoption("verbose"):
        try:
            lines.append(f"pytest-qemu: {session.accelerator().notice}")
        except QemuError as error:
            # QEMU missing, say: each test that starts a VM fails with this, as a test error.
            lines.append(f"pytest-qemu: VMs cannot start: {error}")
    return lines or None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach what every VM of a failed test did to its report: its transcript, the
    console's last lines, QEMU's command line and stderr (also as pytest-html extras and
    Allure attachments, when those reports are written)."""
    report = yield
    item.stash.setdefault(reports_key, {})[report.when] = report
    if report.failed and item.stash.get(factories_key, []):
        from pytest_qemu.plugin.report_extras import add_report_extras
        from pytest_qemu.plugin.reports import gather_logs, render_parts, vm_report_parts

        log_dir = QemuSession.of(item.config).settings.log_dir
        for factory in item.stash.get(factories_key, []):
            for index, vm in enumerate(factory.vms):
                parts = vm_report_parts(vm)
                report.sections.append((f"qemu vm{index} ({vm.log_dir})", render_parts(parts)))
                kept = vm.log_dir
                if log_dir is not None:
                    destination = log_dir / _safe_name(item.nodeid) / f"vm{index}"
                    try:
                        kept = gather_logs(vm, destination)
                    except OSError as error:
                        # The test's own result matters more than the copy of its logs.
                        report.sections.append(
                            (
                                f"qemu vm{index} logs",
                                f"could not copy the logs to {destination} ({error}); "
                                f"they are in {vm.log_dir}",
                            )
                        )
                # The HTML and Allure reports, if written; links to the logs kept for good.
                add_report_extras(
                    item.config, report, f"vm{index}", parts, kept if log_dir else None
                )
                # JUnit XML carries these as <property> elements of the test case; it
                # reads them from the teardown report, which copies the item's.
                prop = (f"qemu_vm{index}_logs", str(kept))
                if prop not in item.user_properties:
                    item.user_properties.append(prop)
                    report.user_properties.append(prop)
    return report


def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^\w.-]+", "_", nodeid).strip("_")[:150]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``qemu`` marker with an unknown keyword or a wrong value fails the test's setup,
    naming it, before any VM starts."""
    from pytest_qemu.plugin.keywords import check_marker

    failure = None
    for marker in item.iter_markers("qemu"):
        try:
            check_marker(marker.args, marker.kwargs)
        except QemuError as error:
            failure = str(error)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After a test body passes, fail it if a guest kernel of its VMs logged trouble."""
    __tracebackhide__ = True  # the report shows the trouble, not this hook's frames
    result = yield
    marked = qemu_marker_kwargs(item)
    wanted = QemuSession.of(item.config).settings.kernel_warnings == "fail"
    if "kernel_warnings" in marked:
        wanted = bool(marked["kernel_warnings"])
    if wanted and item.stash.get(factories_key, []):
        from pytest_qemu.errors import GuestKernelTrouble
        from pytest_qemu.plugin.kernel_log import check_kernel_log

        for factory in item.stash.get(factories_key, []):
            for vm in factory.vms:
                try:
                    check_kernel_log(vm)
                except GuestKernelTrouble as error:
                    raise error.with_traceback(None) from None
    return result


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: add a finished worker's VM figures to the run's; after a
    worker crashed, remove the run directories it could not."""
    data = getattr(node, "workeroutput", {}).get("pytest_qemu_stats")
    if data:
        QemuSession.of(node.config).stats.merge(data)
    if error is not None:
        _sweep_run_directories()


def pytest_unconfigure(config: pytest.Config) -> None:
    """xdist controller, once its workers are gone (a killed one is reaped only now):
    remove the run directories of workers that died without their teardown."""
    if config.pluginmanager.has_plugin("dsession"):
        _sweep_run_directories()


def _sweep_run_directories() -> None:
    from pytest_qemu.vm.rundir import remove_orphaned_run_directories

    remove_orphaned_run_directories()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how the run's VMs started, and how fast."""
    lines = QemuSession.of(terminalreporter.config).stats.lines()
    if lines:
        terminalreporter.write_sep("-", "pytest-qemu")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """Remember which test follows (``--qemu-prepare-ahead`` prepares its VM)."""
    item.stash[next_item_key] = nextitem
    try:
        return (yield)
    finally:
        del item.stash[next_item_key]


def pytest_sessionfinish(session: pytest.Session) -> None:
    # First: a VM being prepared ahead (even a template's boot, after Ctrl-C) ends at once.
    if "pytest_qemu.vm.machine" in sys.modules:  # else no VM was ever started
        from pytest_qemu.vm.machine import kill_all_vms

        kill_all_vms()
    QemuSession.of(session.config).close()
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output["pytest_qemu_stats"] = QemuSession.of(session.config).stats.as_data()
