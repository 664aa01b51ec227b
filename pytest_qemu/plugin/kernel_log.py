"""Kernel trouble in a guest fails the test: warnings, BUGs and oopses in its kernel log.

The kernel log itself is read (:meth:`VM.kernel_log`, through the command
channel), not the console: with ``quiet``, a kernel warning never reaches the
console.
"""

from __future__ import annotations

import re

from pytest_qemu.errors import GuestKernelTrouble, QemuError
from pytest_qemu.vm.machine import VM

_TROUBLE = re.compile(
    r"^(?:\[\s*[\d.]+\]\s*)?(?:<\d>)?.*?\b(WARNING:|BUG:|Oops|Kernel panic|"
    r"general protection fault|UBSAN:|KASAN:|kernel BUG at)",
    re.M,
)
_TRACE_LINES = 40


def kernel_trouble(log: str, harmless: tuple[str, ...] = ()) -> str | None:
    """The first warning, BUG or oops in the kernel *log*, with the lines after it;
    lines holding one of *harmless* (a platform's normal boot messages) are not trouble."""
    for match in _TROUBLE.finditer(log):
        line = log[match.start() :].split("\n", 1)[0]
        if not any(text in line for text in harmless):
            break
    else:
        return None
    lines = log[match.start() :].splitlines()
    end = next(
        (index + 1 for index, line in enumerate(lines) if "---[ end trace" in line),
        _TRACE_LINES,
    )
    return "\n".join(lines[: min(end, _TRACE_LINES)])


def check_kernel_log(vm: VM) -> None:
    """Raise :class:`GuestKernelTrouble` if *vm*'s kernel logged trouble; a VM that is
    not running (or cannot be asked) is left alone: its own failure speaks for it."""
    if not vm.is_running():
        return
    try:
        log = vm.kernel_log(timeout=30)
    except QemuError:
        return
    trouble = kernel_trouble(log, vm.spec.platform.harmless_kernel_messages)
    if trouble is not None:
        raise GuestKernelTrouble(
            f"the guest kernel of {vm!r} logged trouble during the test:\n{trouble}\n"
            "(pytest-qemu fails a test whose guest kernel warns; mark it "
            "@pytest.mark.qemu(kernel_warnings=False) to allow it)"
        )
