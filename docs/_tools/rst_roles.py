"""A Griffe extension that lets mkdocstrings render pytest-qemu's reStructuredText docstrings.

pytest-qemu's docstrings are written for ``pytest --fixtures``, ``help()`` and
Sphinx-minded readers: they use roles such as :class:`~pytest_qemu.VM` and
:meth:`start`, ``::`` literal blocks, and ``#:`` comments above attributes.
mkdocstrings renders docstrings as Markdown, where a role would show up as
``:class:`` followed by code. Before anything is rendered, this extension:

- turns each role into a cross-reference to the object it names, resolved in the
  scope of the docstring (``:meth:`close``` in a class means that class's ``close``),
  marked optional so that a name the site does not document (``ValueError``,
  a private helper) is shown as plain code instead of failing ``--strict``;
- turns a paragraph ending in ``::`` and the indented block after it into a fenced
  code block (Python when it parses as Python);
- gives an attribute without a docstring the ``#:`` comment lines just above it
  (Sphinx autodoc's convention).

mkdocs.yml loads it through mkdocstrings' ``extensions:`` option. It is part of the
documentation build only; nothing in the package imports it.
"""

from __future__ import annotations

import ast
import functools
import html
import re
import textwrap
from typing import Any

from griffe import Alias, Attribute, Docstring, Extension, Module, Object

# :class:`Name`, :py:meth:`~pkg.Cls.method`, :attr:`title <target>`.
_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|exc|meth|func|attr|data|const|obj|mod):"
    r"`(?P<body>[^`]+)`"
)
_EXPLICIT_TITLE = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_CALLABLE_ROLES = {"meth", "func"}

# A paragraph ending in "::", a blank line, then an indented block.
_LITERAL_BLOCK = re.compile(
    r"(?P<lead>[^\n]*?)(?P<colons>\s?::)\n(?P<blank>[ \t]*\n)+"
    r"(?P<block>(?:(?:[ \t]+[^\n]*)?\n)*(?:[ \t]+[^\n]*))",
)


class RstRoles(Extension):
    """Rewrite the reStructuredText markup of every docstring of a loaded package."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if isinstance(obj, Attribute) and obj.docstring is None:
                _docstring_from_comments(obj)
            if obj.docstring is not None:
                text = _literal_blocks(obj.docstring.value)
                obj.docstring.value = _ROLE.sub(functools.partial(_reference, obj), text)


def _walk(obj: Object) -> list[Object]:
    found = [obj]
    for member in obj.members.values():
        if isinstance(member, Alias):
            continue  # documented where it is defined
        found.extend(_walk(member))
    return found


def _docstring_from_comments(attr: Attribute) -> None:
    """Use the ``#:`` comment lines right above the attribute as its docstring."""
    if attr.lineno is None or attr.filepath is None:
        return
    try:
        lines = attr.lines_collection[attr.filepath]
    except KeyError:
        return
    comment: list[str] = []
    index = attr.lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        comment.insert(0, lines[index].lstrip()[2:].removeprefix(" "))
        index -= 1
    if comment:
        attr.docstring = Docstring(
            "\n".join(comment), lineno=index + 2, endlineno=attr.lineno - 1, parent=attr
        )


def _literal_blocks(text: str) -> str:
    def fence(match: re.Match[str]) -> str:
        code = textwrap.dedent(match["block"]).strip("\n")
        try:
            ast.parse(code)
            language = "python"
        except SyntaxError:
            language = "text"
        lead = match["lead"]
        if match["colons"].startswith(" ") or not lead.strip():
            lead = lead.rstrip()  # "text ::" and a lone "::" keep no colon
        else:
            lead += ":"
        return f"{lead}\n\n```{language}\n{code}\n```\n"

    if not text.endswith("\n"):
        text += "\n"
    return _LITERAL_BLOCK.sub(fence, text).rstrip("\n")


def _reference(obj: Object, match: re.Match[str]) -> str:
    role, body = match["role"], match["body"].strip()
    explicit = _EXPLICIT_TITLE.match(body)
    if explicit:
        title, target = explicit["title"], explicit["target"].strip()
    else:
        target = body
        short = target.startswith("~")
        target = target.lstrip("~.")
        title = target.rsplit(".", 1)[-1] if short else target
        if role in _CALLABLE_ROLES:
            title += "()"
    identifier = _resolve(obj, target.lstrip("~."))
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _resolve(obj: Object, target: str) -> str:
    """The full path of *target* as Python would find it from *obj*'s scope, if known."""
    first, dot, rest = target.partition(".")
    try:
        return obj.resolve(first) + dot + rest
    except Exception:  # not in scope: an absolute path, or a built-in
        return target
