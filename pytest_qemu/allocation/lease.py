"""What the allocator hands out: a value of some kind, held by one process.

The store keeps plain :class:`LeaseRecord` values; only the allocator turns
them into :class:`Lease` handles that can release themselves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from pytest_qemu.allocation.errors import AllocationError
from pytest_qemu.allocation.owner import Owner


class LeaseKind(str, enum.Enum):
    """The independent value spaces; a value is unique within its kind.

    TCP and UDP ports share ``PORT``: a port leased for one protocol is not
    handed out for the other either.
    """

    PORT = "port"
    VM_NUMBER = "vm"
    NETWORK_ID = "network"


@dataclass(frozen=True)
class LeaseRecord:
    """One grant as the state file keeps it: a value of a kind, its owner and purpose.

    ``token`` tells this grant apart from a later grant of the same value to
    the same process; an empty token matches any grant. It takes no part in
    equality, hashing or repr.
    """

    kind: LeaseKind
    value: int
    owner: Owner
    purpose: str
    token: str = field(default="", compare=False, repr=False, kw_only=True)

    def matches(self, other: LeaseRecord) -> bool:
        """Whether both describe the same grant: same kind, value, owner and token."""
        return (self.kind, self.value, self.owner) == (other.kind, other.value, other.owner) and (
            not self.token or not other.token or self.token == other.token
        )


class Releaser(Protocol):
    """What a :class:`Lease` releases itself through (an :class:`Allocator`)."""

    def release(self, lease: Lease) -> None:
        """Give *lease* back."""


@dataclass(frozen=True)
class Lease(LeaseRecord):
    """One value held by one process until released or until that process dies.

    Use it as a context manager to release it on exit. ``allocator`` is the
    :class:`Allocator` that :meth:`release` goes through; it takes no part in
    equality, hashing or repr.
    """

    allocator: Releaser | None = field(default=None, compare=False, repr=False, kw_only=True)

    def release(self) -> None:
        """Give the value back. Idempotent: releasing twice is harmless."""
        if self.allocator is None:
            raise AllocationError(
                f"{self!r} is not attached to an Allocator: call Allocator.release(lease) "
                "on the allocator of its state directory"
            )
        self.allocator.release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
