"""A VM's transcript: what happened to it, in order, for the report of a failed test."""

from __future__ import annotations

import threading
import time
from pathlib import Path

#: Lines of a command's output the transcript keeps (the rest is in the result).
_OUTPUT_LINES = 5
_LINE_WIDTH = 200


class Transcript:
    """Entries stamped with the seconds since the VM was created, kept in memory and
    appended to *path* as they happen (so that a killed run leaves them too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self.entries: list[str] = []

    def add(self, text: str) -> None:
        """Record *text* (one entry; it may span lines)."""
        stamp = f"[{time.monotonic() - self._started:8.3f}] "
        entry = stamp + text.replace("\n", "\n" + " " * len(stamp))
        with self._lock:
            self.entries.append(entry)
            try:
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(entry + "\n")
            except OSError:
                pass  # the transcript in memory still serves the report

    def adopt(self, other: Transcript) -> None:
        """Continue *other*, the transcript of the same VM begun elsewhere (whose file is
        now this one's): its entries come first, and its clock is kept."""
        with self._lock:
            self.entries[:0] = other.entries
            self._started = other._started

    def command(self, command: str, outcome: str, stdout: str = "", stderr: str = "") -> None:
        """Record a guest command, its outcome and the first lines of its output."""
        lines = [f"$ {_shorten(command)}", f"  -> {outcome}"]
        for name, text in (("stdout", stdout), ("stderr", stderr)):
            if text:
                shown = text.splitlines()
                lines += [f"  {name}: {_shorten(line)}" for line in shown[:_OUTPUT_LINES]]
                if len(shown) > _OUTPUT_LINES:
                    lines.append(f"  {name}: [... {len(shown) - _OUTPUT_LINES} more lines]")
        self.add("\n".join(lines))

    def text(self) -> str:
        """The whole transcript."""
        with self._lock:
            return "\n".join(self.entries)


def _shorten(text: str) -> str:
    one_line = " \\n ".join(text.strip().splitlines()) if "\n" in text.strip() else text
    return one_line if len(one_line) <= _LINE_WIDTH else one_line[: _LINE_WIDTH - 3] + "..."
