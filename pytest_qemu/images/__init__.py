"""Operating system images built for tests: a small Debian system that runs the QEMU guest agent.

:func:`build_debian_image` builds one (once per machine, cached) and returns a
:class:`DebianImage`: the qcow2 disk, and the kernel and initramfs to boot it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_qemu.images.debian import DEFAULT_PACKAGES, DebianImage, build_debian_image

__all__ = ["DEFAULT_PACKAGES", "DebianImage", "build_debian_image"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `python -m pytest_qemu.images.debian` (the way to build
    # the image ahead of time) does not find its module imported already.
    if name in __all__:
        return getattr(importlib.import_module("pytest_qemu.images.debian"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
