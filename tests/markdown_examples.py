"""Runs the Python examples of README.md and docs/*.md as tests.

Every ```python block of those pages is one of three kinds, told by its first line:

- ``# Fragment...``: a piece of a test, shown for its shape (``vm`` stands for a VM a
  test got). It must compile; it is not run.
- ``# Signature``: the call signature of an exported class, e.g. ``Disk(image,
  format="raw")``. It must match the class's signature in the code.
- anything else: a complete test module. It is collected as a test file would be (its
  imports, fixtures, ``parametrize`` and marks work as in a user's file), so a newcomer
  who copies it into ``test_x.py`` gets the test CI ran.

Why not a plugin from PyPI: pytest-markdown-docs, pytest-codeblocks, phmdoctest and
sybil run a block's statements as the body of one test. Our examples *define* tests
that take fixtures (``qemu_vm``, ``p9_dir``) and override them (``qemu_devices``); only
collecting a block as a module gives those tests the fixtures a user's file gets.
"""

from __future__ import annotations

import ast
import inspect
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The opening fence of a code block, its language and the rest of the info string.
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>```+)(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced code block of a Markdown file."""

    language: str
    #: The 1-based line number of the block's first code line in the file.
    first_line: int
    source: str

    @property
    def kind(self) -> str:
        """``fragment``, ``signature`` or ``module`` (see the module docstring)."""
        first = self.source.lstrip().split("\n", 1)[0]
        if first.startswith("# Fragment"):
            return "fragment"
        if first.startswith("# Signature"):
            return "signature"
        return "module"


def code_blocks(text: str) -> Iterator[CodeBlock]:
    """The fenced code blocks of Markdown *text*, in order."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["ticks"]
        indent = len(opening["indent"])
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = "\n".join(line[indent:] for line in lines[index + 1 : end])
        yield CodeBlock(opening["lang"], index + 2, body + "\n")
        index = end + 1


def python_blocks(path: Path) -> list[CodeBlock]:
    """The ```python blocks of the Markdown file *path*."""
    return [b for b in code_blocks(path.read_text()) if b.language in ("python", "py")]


def _compile(block: CodeBlock, path: Path) -> types.CodeType:
    """*block* compiled so that tracebacks name the Markdown file's own line numbers."""
    padded = "\n" * (block.first_line - 1) + block.source
    return compile(padded, str(path), "exec", dont_inherit=True)


class ExampleModule(pytest.Module):
    """A complete example, collected as a test module."""

    block: CodeBlock

    def _getobj(self) -> types.ModuleType:
        module = types.ModuleType(f"doc_example_{self.path.stem}_{self.block.first_line}")
        module.__file__ = str(self.path)
        exec(_compile(self.block, self.path), module.__dict__)
        return module


class FragmentItem(pytest.Item):
    """A fragment: it must at least be valid Python."""

    block: CodeBlock

    def runtest(self) -> None:
        """Compiles the fragment."""
        _compile(self.block, self.path)

    def reportinfo(self) -> tuple[Path, int, str]:
        """Points at the fragment's line in the Markdown file."""
        return self.path, self.block.first_line - 1, self.name


class SignatureItem(FragmentItem):
    """A documented signature, checked against the code."""

    def runtest(self) -> None:
        """Compares ``Name(params)`` in the page with ``inspect.signature(Name)``."""
        import pytest_qemu

        text = self.block.source.split("\n", 1)[1].strip()
        call = ast.parse(text, mode="eval").body
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), text
        signature = inspect.signature(getattr(pytest_qemu, call.func.id))
        parameters = []
        for parameter in signature.parameters.values():
            if parameter.default is inspect.Parameter.empty:
                parameters.append(parameter.name)
            else:
                parameters.append(f"{parameter.name}={parameter.default!r}")
        actual = f"{call.func.id}({', '.join(parameters)})"
        where = f"{self.path.name} line {self.block.first_line}"
        assert text == actual, f"{where}: the code has {actual}"


class MarkdownFile(pytest.File):
    """A page of the documentation: one collector per ```python block."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        """Yields a module, a fragment or a signature check per block."""
        for block in python_blocks(self.path):
            name = f"line{block.first_line}"
            node: pytest.Item | pytest.Collector
            if block.kind == "fragment":
                node = FragmentItem.from_parent(self, name=name)
            elif block.kind == "signature":
                node = SignatureItem.from_parent(self, name=name)
            else:
                # Its own node id: fixtures a block defines stay in that block, as in a file.
                node = ExampleModule.from_parent(
                    self, path=self.path, name=name, nodeid=f"{self.nodeid}::{name}"
                )
            node.block = block  # type: ignore[attr-defined]
            yield node


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> MarkdownFile | None:
    """Collects README.md and docs/*.md of this repository."""
    root = parent.config.rootpath
    if file_path.suffix != ".md":
        return None
    if file_path == root / "README.md" or file_path.parent == root / "docs":
        return MarkdownFile.from_parent(parent, path=file_path)
    return None
