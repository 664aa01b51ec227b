"""The :class:`StartStrategy` interface: one way a VM's guest comes up.

A strategy gets the VM's :class:`~pytest_qemu.vm.launcher.Launcher` (which
launches QEMU and gets the guest ready) and returns a :class:`StartOutcome`:
what happened. Each strategy is a module beside this one, like pytest-xdist's
schedulers.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_qemu.vm.launcher import Launcher


@dataclass(frozen=True)
class StartOutcome:
    """What a start did."""

    #: QEMU's command line.
    argv: list[str]
    #: The template the VM was cloned from (None: it booted).
    restored_from: Path | None = None
    #: Whether this start built the template it was cloned from.
    built_template: bool = False
    #: Why the VM booted instead of being cloned (None: it was cloned).
    boot_reason: str | None = None
    #: Whether the VM was started ahead, while an earlier test ran.
    prepared_ahead: bool = False


class StartStrategy(abc.ABC):
    """How a VM's guest comes up: launch QEMU and get the guest ready for commands."""

    #: The strategy's name, as transcripts and reports show it.
    name: str

    @abc.abstractmethod
    def start(self, launcher: Launcher, started: float) -> StartOutcome:
        """Start the VM of *launcher*; *started* is when the start began (its boot timeout
        runs from there). On failure, raise the error users see: the VM is then killed."""
