"""The keywords that configure a VM, checked in one place for the factory's arguments
and the ``qemu`` marker's keywords (pure: no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pytest_qemu.errors import ConfigurationError
from pytest_qemu.guests import GUEST_KINDS
from pytest_qemu.platforms import PLATFORMS
from pytest_qemu.vm.argv import check_cpus, check_memory


def _seconds(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _passes(check: Callable[[object], None]) -> Callable[[object], bool]:
    """A rule made of one of :class:`~pytest_qemu.vm.argv.MachineSpec`'s checks, so that
    the factory, the marker and the machine accept the same values."""

    def accepts(value: object) -> bool:
        try:
            check(value)
        except ConfigurationError:
            return False
        return True

    return accepts


def _optional(accepts: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or accepts(value)


@dataclass(frozen=True)
class Keyword:
    """One keyword: which values it accepts, and how to say so."""

    name: str
    accepts: Callable[[object], bool]
    #: What a valid value is, in words, for the error message.
    expected: str
    #: The unit shown after the value in the error message (" MiB").
    unit: str = ""

    def check(self, value: object) -> None:
        """Raise :class:`ConfigurationError` naming *value* if it is not valid."""
        if not self.accepts(value):
            raise ConfigurationError(
                f"{self.name} {value!r}{self.unit} is not valid: {self.expected}"
            )


KEYWORDS: Mapping[str, Keyword] = {
    keyword.name: keyword
    for keyword in (
        Keyword(
            "memory",
            _optional(_passes(check_memory)),
            "give a whole number of MiB, at most 1048576",
            unit=" MiB",
        ),
        Keyword("cpus", _optional(_passes(check_cpus)), "give a number from 1 to 255"),
        Keyword(
            "boot_timeout",
            _optional(_seconds),
            "give a number of seconds greater than 0, such as boot_timeout=60",
        ),
        Keyword(
            "snapshot",
            _optional(lambda value: isinstance(value, bool)),
            "give True or False (a string such as 'no' would read as on)",
        ),
        Keyword(
            "arch",
            _optional(lambda value: isinstance(value, str) and bool(value)),
            f"give an architecture name: {', '.join(PLATFORMS.names())}",
        ),
        Keyword(
            "userland",
            _optional(lambda value: isinstance(value, str) and value in GUEST_KINDS),
            f"use one of {', '.join(GUEST_KINDS.names())}",
        ),
        Keyword(
            "packages",
            _optional(
                lambda value: (
                    isinstance(value, (list, tuple))
                    and all(isinstance(name, str) and name for name in value)
                )
            ),
            "give a list of Debian package names, such as packages=['python3']",
        ),
        Keyword(
            "suite",
            _optional(lambda value: isinstance(value, str) and bool(value)),
            "give a Debian suite name, such as suite='bookworm'",
        ),
        Keyword(
            "kernel_warnings",
            lambda value: isinstance(value, bool),
            "give True (a guest kernel warning fails the test) or False",
        ),
    )
}

#: The keywords of ``@pytest.mark.qemu(...)``: the factory's defaults for a test's VMs,
#: and the test's own kernel-warning check.
MARKER_KEYWORDS = (
    "arch",
    "userland",
    "packages",
    "suite",
    "snapshot",
    "cpus",
    "kernel_warnings",
)


def check_keywords(values: Mapping[str, object]) -> None:
    """Check each of *values* by its keyword's rule (keywords without a rule pass)."""
    for name, value in values.items():
        if name in KEYWORDS:
            KEYWORDS[name].check(value)


def check_marker(args: Sequence[object], kwargs: Mapping[str, object]) -> None:
    """Check a ``qemu`` marker's arguments: keywords only, each known and valid."""
    known = ", ".join(MARKER_KEYWORDS)
    if args:
        raise ConfigurationError(
            f"@pytest.mark.qemu{tuple(args)!r} takes keywords only, not positional "
            f"arguments: use one of {known}, such as @pytest.mark.qemu(cpus=2)"
        )
    for name in kwargs:
        if name not in MARKER_KEYWORDS:
            raise ConfigurationError(
                f"@pytest.mark.qemu has no keyword {name!r}: the known keywords are {known}"
            )
    try:
        check_keywords(kwargs)
    except ConfigurationError as error:
        raise ConfigurationError(f"@pytest.mark.qemu: {error}") from None
