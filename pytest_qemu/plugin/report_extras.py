"""A failed VM test's logs in the HTML and Allure reports, when those plugins are in use.

pytest-html shows a report's ``extras``; allure-pytest takes attachments for
the test it is recording. Neither is a dependency: each is used only if its
plugin is active in the run (``--html``, ``--alluredir``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest


def add_html_extras(
    report: pytest.TestReport,
    vm_name: str,
    parts: Sequence[tuple[str, str]],
    logs: Sequence[Path],
) -> None:
    """Append *parts* to *report*'s pytest-html extras as texts, and *logs* as links."""
    from pytest_html import extras

    shown = list(getattr(report, "extras", []))
    shown += [extras.text(text, name=f"{vm_name}: {title}") for title, text in parts]
    shown += [extras.url(log.as_uri(), name=f"{vm_name}: {log.name}") for log in logs]
    report.extras = shown  # type: ignore[attr-defined]


def attach_to_allure(vm_name: str, parts: Sequence[tuple[str, str]], logs: Sequence[Path]) -> None:
    """Attach *parts* and the *logs* files to the test allure-pytest is recording."""
    import allure

    for title, text in parts:
        allure.attach(text, name=f"{vm_name}: {title}", attachment_type=allure.attachment_type.TEXT)
    for log in logs:
        allure.attach.file(  # type: ignore[no-untyped-call]
            str(log), name=f"{vm_name}: {log.name}", attachment_type=allure.attachment_type.TEXT
        )


def add_report_extras(
    config: pytest.Config,
    report: pytest.TestReport,
    vm_name: str,
    parts: Sequence[tuple[str, str]],
    kept: Path | None,
) -> None:
    """Give the HTML and Allure reports, whichever is being written, *parts* of a VM's
    report; with ``--qemu-log-dir`` (*kept*: the VM's directory there), its full logs too."""
    logs = sorted(path for path in kept.iterdir() if path.is_file()) if kept else []
    if config.pluginmanager.hasplugin("html") and getattr(config.option, "htmlpath", None):
        add_html_extras(report, vm_name, parts, logs)
    if config.pluginmanager.hasplugin("allure_listener"):
        attach_to_allure(vm_name, parts, logs)
