"""The exception raised when a lease cannot be handed out or the lease state cannot be used."""

from __future__ import annotations

from pytest_qemu.errors import QemuError


class AllocationError(QemuError):
    """A port, VM number or network id could not be leased, or the lease state is unusable.

    The message names the offending value (range, path, lock) and what to do about it.
    Invalid arguments raise :class:`pytest_qemu.errors.ConfigurationError` instead,
    which is also a :class:`ValueError`.
    """
