"""The project's own test set-up, shared by ``tests/`` and ``examples/``."""

from __future__ import annotations

pytest_plugins = ["pytester"]
