"""Tables of named implementations (architectures, guest kinds, channels), each owned by
its package: a new one is a module and a line in its package's table.

An entry names its implementation as ``module:attribute``, imported on first
use, with the help line users see, the keyword options it takes and what to
check when a guest behind it does not come up.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pytest_qemu.errors import ConfigurationError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One named implementation."""

    name: str
    #: ``module:attribute`` of the implementation.
    target: str
    #: One line for option help and error messages.
    help: str
    #: The keyword options it takes beyond the common ones.
    options: tuple[str, ...] = ()
    #: What to check when a guest reached through it does not come up in time.
    boot_timeout_hint: str = ""

    def load(self) -> Any:
        """The implementation (its module imported now if it was not)."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


class Registry(Generic[T]):
    """The entries of one kind of thing (*what*: ``"architecture"``, ``"channel"``...)."""

    def __init__(
        self,
        what: str,
        entries: Iterable[Entry],
        refusal: str = "{what} {name!r} is not one of {names}: {help}",
    ) -> None:
        self.what = what
        self._entries = {entry.name: entry for entry in entries}
        #: The error for an unknown name, formatted with *what*, *name*, *names*, *help*.
        self._refusal = refusal

    def names(self) -> list[str]:
        """Every name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        """The entry called *name*; a :class:`ConfigurationError` listing the names if none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def load(self, name: str) -> T:
        """The implementation called *name*."""
        loaded: T = self.entry(name).load()
        return loaded

    def unknown(self, name: object, what: str | None = None) -> ConfigurationError:
        """The error for a name that is not in the table (given as *what*, if not as
        the registry's own kind of thing: an option's name, say)."""
        return ConfigurationError(
            self._refusal.format(
                what=what or self.what, name=name, names=", ".join(self.names()), help=self.help()
            )
        )

    def help(self) -> str:
        """``name (help), ...``: every entry, for an option's help text."""
        return ", ".join(f"{entry.name} ({entry.help})" for entry in self._entries.values())
