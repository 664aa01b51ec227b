"""Guest architectures: each is a :class:`Platform` in a module of its own."""

from __future__ import annotations

import importlib
import platform as host

from pytest_qemu.errors import ConfigurationError
from pytest_qemu.platforms.base import Platform

#: Module name per architecture; a new architecture is a new module and a line here.
_MODULES = {"x86_64": "x86_64", "aarch64": "aarch64"}
_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64"}


def names() -> list[str]:
    """Every supported architecture name."""
    return sorted(_MODULES)


def get_platform(name: str | None = None) -> Platform:
    """The platform called *name* (``None``: the host's architecture)."""
    wanted = host.machine() if name is None else _ALIASES.get(name, name)
    if wanted not in _MODULES:
        raise ConfigurationError(
            f"architecture {name or wanted!r} is not supported: use one of {names()}"
        )
    module = importlib.import_module(f"pytest_qemu.platforms.{_MODULES[wanted]}")
    platform: Platform = module.PLATFORM
    return platform


__all__ = ["Platform", "get_platform", "names"]
