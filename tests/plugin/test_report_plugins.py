"""A failed VM test's logs in the reports of pytest-html and allure-pytest (both optional)."""

from __future__ import annotations

import base64
import html
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

FAILING_TEST = """
def test_fails(qemu_vm):
    qemu_vm.check("echo visible-in-the-transcript; exit 5")
"""


def test_html_and_allure_reports_carry_the_vm_logs(
    pytester: pytest.Pytester, isolated_state: Path
) -> None:
    pytester.makepyfile(FAILING_TEST)
    logs = pytester.path / "ci-logs"
    report = pytester.path / "report.html"
    allure_dir = pytester.path / "allure"
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "--qemu-accel=tcg",
        f"--qemu-log-dir={logs}",
        f"--html={report}",
        "--self-contained-html",
        f"--alluredir={allure_dir}",
        f"--junitxml={junit}",
    )
    result.assert_outcomes(failed=1)
    kept = next(logs.iterdir()) / "vm0"

    # pytest-html: the texts as extras, the kept logs as links.
    page = html.unescape(report.read_text())
    texts = [
        base64.b64decode(encoded).decode()
        for encoded in _data_uris(page, "data:text/plain;charset=utf-8;base64,")
    ]
    assert any("visible-in-the-transcript" in text for text in texts), page[:2000]
    assert any(text.startswith("-machine") or " -machine " in text for text in texts)
    assert "vm0: transcript" in page and "vm0: QEMU command line" in page
    assert (kept / "console.log").as_uri() in page

    # allure-pytest: the same texts, and the kept logs, as attachments.
    (result_file,) = allure_dir.glob("*-result.json")
    attachments = {
        attachment["name"]: (allure_dir / attachment["source"]).read_text()
        for attachment in json.loads(result_file.read_text())["attachments"]
    }
    assert "visible-in-the-transcript" in attachments["vm0: transcript"]
    assert "-machine" in attachments["vm0: QEMU command line"]
    assert any(name.startswith("vm0: console, last") for name in attachments)
    assert attachments["vm0: console.log"] == (kept / "console.log").read_text()

    # JUnit: the property, as before.
    properties = {
        element.get("name"): element.get("value")
        for element in ElementTree.parse(junit).iter("property")
    }
    assert properties == {"qemu_vm0_logs": str(kept)}


def _data_uris(page: str, prefix: str) -> list[str]:
    found = []
    start = page.find(prefix)
    while start != -1:
        start += len(prefix)
        end = start
        while end < len(page) and page[end] not in "\"' ":
            end += 1
        found.append(page[start:end])
        start = page.find(prefix, end)
    return found
