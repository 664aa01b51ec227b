"""Cross-process leases of ports, VM numbers and network ids.

Every pytest-qemu process of a user, across pytest-xdist workers and
concurrent pytest runs, coordinates through one small state file guarded by a
file lock, so no two of them get the same value. Leases of processes that died
(even by SIGKILL) are reclaimed by the next allocator call anywhere.
"""

from __future__ import annotations

from pytest_qemu.allocation.allocator import Allocator
from pytest_qemu.allocation.errors import AllocationError
from pytest_qemu.allocation.lease import Lease, LeaseKind
from pytest_qemu.allocation.owner import Owner
from pytest_qemu.allocation.statedir import default_state_dir

__all__ = [
    "AllocationError",
    "Allocator",
    "Lease",
    "LeaseKind",
    "Owner",
    "default_state_dir",
]
