"""What a failed test's report shows of its VMs."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.vm.machine import VM

_CONSOLE_LINES = 40


def vm_report_parts(vm: VM) -> list[tuple[str, str]]:
    """What a failed test's report shows of *vm*, as (title, text) pairs: its transcript,
    its console's last lines, QEMU's command line and QEMU's stderr."""
    return [
        ("transcript", vm.transcript.text() or "(nothing happened)"),
        (
            f"console, last {_CONSOLE_LINES} lines ({vm.console_log})",
            vm.console.tail(_CONSOLE_LINES) or "(empty)",
        ),
        ("QEMU command line", shlex.join(vm.argv)),
        (f"QEMU stderr ({vm.stderr_log})", vm.stderr_tail() or "(empty)"),
    ]


def render_parts(parts: Sequence[tuple[str, str]]) -> str:
    """:func:`vm_report_parts` as one text, for the terminal's report section."""
    return "\n".join(f"--- {title} ---\n{text}" for title, text in parts)


def gather_logs(vm: VM, destination: Path) -> Path:
    """Copy *vm*'s logs (console, QEMU's stderr, transcript) into *destination*."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("console.log", "qemu-stderr.log", "transcript.log"):
        source = vm.log_dir / name
        if source.is_file():
            shutil.copyfile(source, destination / name)
    (destination / "command-line.txt").write_text(shlex.join(vm.argv) + "\n")
    return destination
