"""The exception raised when a lease cannot be handed out (defined with the others in
:mod:`pytest_qemu.errors`)."""

from __future__ import annotations

from pytest_qemu.errors import AllocationError

__all__ = ["AllocationError"]
