"""The project's own test set-up, shared by ``tests/`` and ``examples/``."""

from __future__ import annotations

# tests.markdown_examples: the Python examples of README.md and docs/ run as tests.
pytest_plugins = ["pytester", "tests.markdown_examples"]
