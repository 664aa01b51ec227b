"""The :class:`Allocator`: unique ports, VM numbers and network ids across processes."""

from __future__ import annotations

import random
import secrets
from pathlib import Path

from pytest_qemu.allocation.errors import AllocationError
from pytest_qemu.allocation.lease import Lease, LeaseKind, LeaseRecord
from pytest_qemu.allocation.owner import Owner
from pytest_qemu.allocation.ports import PROTOCOLS, Protocol, port_is_free
from pytest_qemu.allocation.statedir import default_state_dir, prepare_state_dir
from pytest_qemu.allocation.store import LeaseStore, State
from pytest_qemu.errors import ConfigurationError

VM_NUMBER_RANGE = (1, 2**24 - 1)
NETWORK_ID_RANGE = (1, 2**16 - 1)
DEFAULT_PORT_RANGE = (20000, 32767)

# SystemRandom: each forked worker must not start its port search at the same place.
_random = random.SystemRandom()


class Allocator:
    """Hands out values no other process sharing *state_dir* holds.

    All pytest-xdist workers and all concurrent pytest runs of a user share the
    default state directory, so they never get the same port, VM number or
    network id. A lease lasts until released, or until its owner process is
    found dead (killed processes leak nothing for longer than the next
    allocator call). Safe to share between threads.

    ``port_range`` is inclusive; the default stays below Linux's ephemeral
    ports (32768 and up) so outgoing connections do not take leased ports.
    ``lock_timeout`` bounds the wait for the state lock, in seconds.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        lock_timeout: float = 30.0,
    ) -> None:
        self.port_range = _check_port_range(port_range)
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)):
            raise ConfigurationError(f"lock_timeout {lock_timeout!r} is not a number of seconds")
        if not lock_timeout >= 0:
            raise ConfigurationError(f"lock_timeout {lock_timeout!r} must be >= 0 seconds")
        self.lock_timeout = float(lock_timeout)
        if state_dir is None:
            self.state_dir = default_state_dir()
        else:
            self.state_dir = prepare_state_dir(Path(state_dir))
        self._store = LeaseStore(self.state_dir, self.lock_timeout)

    def lease_port(self, protocol: Protocol, purpose: str = "") -> Lease:
        """Lease a port of ``port_range`` that is free on this host for *protocol*.

        A port is chosen only if it is not leased (for either protocol) and a
        probe can bind it on ``127.0.0.1`` and ``0.0.0.0``. The lease, not a
        socket, reserves it: bind it soon, as other programs on the host do not
        know about leases.
        """
        if protocol not in PROTOCOLS:
            raise ConfigurationError(f"protocol {protocol!r} is not one of {list(PROTOCOLS)}")
        _check_purpose(purpose)
        low, high = self.port_range
        size = high - low + 1
        start = _random.randrange(size)
        with self._store.transaction() as state:
            leased = _values(state, LeaseKind.PORT)
            busy = 0
            for offset in range(size):
                port = low + (start + offset) % size
                if port in leased:
                    continue
                if port_is_free(port, protocol):
                    return self._add(state, LeaseKind.PORT, port, purpose)
                busy += 1
            leased_in_range = sum(1 for value in leased if low <= value <= high)
        raise AllocationError(
            f"no free {protocol} port in port_range {low}-{high} ({size} ports; leased by "
            f"pytest-qemu: {leased_in_range}; in use by other programs on this host: {busy}). "
            "Release leases, or pass a larger port_range"
        )

    def lease_vm_number(self, purpose: str = "") -> Lease:
        """Lease the smallest free VM number (1 to 2**24-1), e.g. to derive a unique MAC."""
        return self._lease_smallest(LeaseKind.VM_NUMBER, VM_NUMBER_RANGE, purpose)

    def lease_network_id(self, purpose: str = "") -> Lease:
        """Lease the smallest free network id (1 to 2**16-1), e.g. to derive a unique subnet."""
        return self._lease_smallest(LeaseKind.NETWORK_ID, NETWORK_ID_RANGE, purpose)

    def release(self, lease: Lease) -> None:
        """Give *lease* back. Idempotent.

        Only the record with the lease's kind, value and owner (and token, see
        :class:`Lease`) is removed, so a stale :class:`Lease` object never
        frees a value that has since been leased again. Leases of other
        processes can be released this way too, e.g. ones from :meth:`leases`.
        """
        with self._store.transaction() as state:
            for index, held in enumerate(state.leases):
                if held.matches(lease):
                    del state.leases[index]
                    state.dirty = True
                    break

    def leases(self) -> list[Lease]:
        """Every current lease of the state directory, of every process, sorted."""
        with self._store.transaction() as state:
            return self._attach(state.leases)

    def reclaim_dead(self) -> list[Lease]:
        """Drop the leases whose owner process is dead, and return them.

        Every allocator call already does this; call it to learn what was reclaimed.
        """
        with self._store.transaction() as state:
            return self._attach(state.reclaimed)

    def __repr__(self) -> str:
        low, high = self.port_range
        return f"Allocator(state_dir={str(self.state_dir)!r}, port_range=({low}, {high}))"

    def _lease_smallest(self, kind: LeaseKind, bounds: tuple[int, int], purpose: str) -> Lease:
        _check_purpose(purpose)
        low, high = bounds
        with self._store.transaction() as state:
            leased = _values(state, kind)
            value = low
            while value in leased:
                value += 1
            if value <= high:
                return self._add(state, kind, value, purpose)
        raise AllocationError(
            f"all {kind.name.lower().replace('_', ' ')}s {low}-{high} are leased "
            f"({len(leased)} leases in {self.state_dir}): release some"
        )

    def _add(self, state: State, kind: LeaseKind, value: int, purpose: str) -> Lease:
        owner, token = Owner.current(), secrets.token_hex(8)
        state.leases.append(LeaseRecord(kind, value, owner, purpose, token=token))
        state.dirty = True
        return Lease(kind, value, owner, purpose, allocator=self, token=token)

    def _attach(self, records: list[LeaseRecord]) -> list[Lease]:
        ordered = sorted(records, key=lambda record: (record.kind.value, record.value))
        return [
            Lease(
                record.kind,
                record.value,
                record.owner,
                record.purpose,
                token=record.token,
                allocator=self,
            )
            for record in ordered
        ]


def _values(state: State, kind: LeaseKind) -> set[int]:
    return {lease.value for lease in state.leases if lease.kind is kind}


def _check_purpose(purpose: str) -> None:
    if not isinstance(purpose, str):
        raise ConfigurationError(f"purpose {purpose!r} is not a string")


def _check_port_range(port_range: tuple[int, int]) -> tuple[int, int]:
    try:
        low, high = port_range
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"port_range {port_range!r} is not a (lowest, highest) pair of port numbers"
        ) from None
    for port in (low, high):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigurationError(
                f"port_range {port_range!r}: {port!r} is not a port number (1-65535)"
            )
    if low > high:
        raise ConfigurationError(
            f"port_range {port_range!r} is empty: its lowest port {low} is above its highest {high}"
        )
    return (low, high)
