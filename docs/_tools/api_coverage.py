"""An MkDocs hook: the API reference must document every public name.

``api.md`` lists the objects one by one (``::: pytest_qemu.VM``), grouped by topic.
This hook compares that list with ``__all__`` of ``pytest_qemu`` (and the plugin's
fixtures with ``__all__`` of ``pytest_qemu.plugin``) and logs a warning for each name
that is missing or no longer exists, so that ``mkdocs build --strict`` fails until
``docs/api.md`` is updated. It reads the sources with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.api_coverage")

_ROOT = Path(__file__).resolve().parents[2]
_API_PAGE = "api.md"
_OBJECT = re.compile(r"^:::\s+pytest_qemu\.(\w+)\s*$", re.MULTILINE)
_FIXTURES_BLOCK = re.compile(r"^:::\s+pytest_qemu\.plugin\.fixtures\s*\n((?:[ \t]+.*\n?)*)", re.M)
_LISTED_MEMBER = re.compile(r"^[ \t]+-\s+(\w+)\s*$", re.MULTILINE)


def _all_of(relative_path: str) -> set[str]:
    tree = ast.parse((_ROOT / relative_path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def _compare(what: str, documented: set[str], public: set[str]) -> None:
    for name in sorted(public - documented):
        log.warning("%s: %s is public (in __all__) but not documented", _API_PAGE, f"{what}{name}")
    for name in sorted(documented - public):
        log.warning("%s: %s is documented but not in __all__", _API_PAGE, f"{what}{name}")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != _API_PAGE:
        return markdown
    _compare(
        "pytest_qemu.",
        set(_OBJECT.findall(markdown)) - {"plugin"},
        _all_of("pytest_qemu/__init__.py"),
    )
    block = _FIXTURES_BLOCK.search(markdown)
    fixtures = set(_LISTED_MEMBER.findall(block.group(1))) if block else set()
    _compare("fixture ", fixtures, _all_of("pytest_qemu/plugin/__init__.py"))
    return markdown
