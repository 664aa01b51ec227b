"""The reference parts of the documentation match the code: the option table, the
fixture list, the error tree and the documented settings fields.

They are read from the pages and compared with what pytest and the package say, so a
new option, fixture or error that is not documented (or a documented one that went
away) fails CI.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import pytest_qemu
from pytest_qemu import QemuError, QemuSettings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts with *header_start*."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def _help(pytester: pytest.Pytester, *args: str) -> str:
    result = pytester.runpytest(*args)
    return "\n".join(result.outlines)


def test_the_option_table_lists_every_option_with_its_ini_key_and_default(
    pytester: pytest.Pytester,
) -> None:
    options = sorted(set(re.findall(r"--qemu-([a-z-]+)", _help(pytester, "--help"))))
    rows = _table_rows((DOCS / "installation.md").read_text(), "| command line | ini key |")
    documented = {row[0].strip("`").removeprefix("--qemu-"): row for row in rows}
    assert sorted(documented) == options, "docs/installation.md's option table"
    config = pytester.parseconfig()
    for name, (_, ini, default, _meaning) in documented.items():
        key = f"qemu_{name.replace('-', '_')}"
        assert ini == f"`{key}`", f"--qemu-{name}: the ini key column"
        value = str(config.getini(key))
        if value:
            assert f"`{value}`" in default, f"--qemu-{name}: the default is {value!r}"


def test_the_fixture_table_lists_the_plugins_fixtures_with_their_scopes(
    pytester: pytest.Pytester,
) -> None:
    output = _help(pytester, "--fixtures")
    section = output.split("fixtures defined from pytest_qemu.plugin.fixtures", 1)[1]
    section = section.split("fixtures defined from", 1)[0]
    fixtures = {
        match[1]: match[2] or "function"
        for match in re.finditer(r"^(\w+)(?: \[(\w+) scope\])? -- ", section, re.MULTILINE)
    }
    rows = _table_rows((DOCS / "fixtures.md").read_text(), "| fixture | scope |")
    documented = {row[0].strip("`"): row[1] for row in rows}
    assert documented == fixtures, "docs/fixtures.md's fixture table (name: scope)"
    readme = (DOCS.parent / "README.md").read_text()
    listed = re.search(r"\*\*Fixtures\*\*:(.*?)\n- \*\*", readme, re.DOTALL)
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed[1])) <= set(fixtures), "README.md's fixture list"


def _documented_error_tree() -> dict[str, str]:
    """``{error: parent}`` from the tree in docs/fixtures.md."""
    text = (DOCS / "fixtures.md").read_text()
    tree = text.split("```text\nQemuError", 1)[1].split("```", 1)[0]
    parents: dict[str, str] = {}
    stack = ["QemuError"]
    for line in tree.splitlines()[1:]:
        match = re.match(r"^([│ ]*)[├└]── (\w+)", line)
        assert match, line
        depth = len(match[1]) // 4
        del stack[depth + 1 :]
        parents[match[2]] = stack[-1]
        stack.append(match[2])
    return parents


def test_the_error_tree_is_the_class_hierarchy_of_the_exported_errors() -> None:
    documented = _documented_error_tree()
    exported = {
        name: getattr(pytest_qemu, name)
        for name in pytest_qemu.__all__
        if isinstance(getattr(pytest_qemu, name), type)
        and issubclass(getattr(pytest_qemu, name), QemuError)
        and name != "QemuError"
    }
    assert sorted(documented) == sorted(exported), "docs/fixtures.md's error tree"
    for name, error in exported.items():
        parent = next(base for base in error.__mro__[1:] if issubclass(base, QemuError))
        assert documented[name] == parent.__name__, f"{name}'s parent"


def test_the_documented_settings_fields_are_the_dataclass_fields() -> None:
    text = (DOCS / "fixtures.md").read_text()
    section = text.split("`qemu_settings` is a frozen `QemuSettings` with these fields:", 1)[1]
    bullets = section.split("\n\n", 2)[1]
    values = {"auto", "kvm", "tcg", "None", "bool"}
    documented = set(re.findall(r"`(\w+)`", bullets)) - values
    fields = {field.name for field in dataclasses.fields(QemuSettings)}
    assert documented == fields, "docs/fixtures.md's QemuSettings fields"
