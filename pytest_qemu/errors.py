"""Exceptions raised by pytest-qemu.

Every error carries enough context to act on without reading our source: the
offending value, the QEMU command line, or what to install.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from pytest_qemu.channels.base import CommandResult

P = ParamSpec("P")
R = TypeVar("R")


#: Where the troubleshooting page is, for error messages: it is read in a checkout.
TROUBLESHOOTING = "docs/troubleshooting.md"


def troubleshooting(section: str) -> str:
    """A pointer to *section* (its anchor) of the troubleshooting page, for a message."""
    return f"see {TROUBLESHOOTING}#{section}"


class QemuError(Exception):
    """Base class of every error pytest-qemu raises on purpose."""


class ConfigurationError(QemuError, ValueError):
    """A device, option or argument was given a value that cannot work."""


class SetupError(QemuError):
    """Something the plugin needs on the host is missing (QEMU, a kernel, busybox)."""


class CacheFull(SetupError):
    """The file system holding pytest-qemu's cache is full: the message names the
    directory. VMs boot without a template where they can."""


class VMError(QemuError):
    """A virtual machine failed; the message includes its command line and last output."""


class BootTimeout(VMError):
    """The guest did not answer its command agent within the boot timeout."""


class VMExited(VMError):
    """QEMU exited while the test still needed the virtual machine."""


class CommandTimeout(VMError):
    """A guest command ran longer than its timeout; the guest killed it and everything
    it started. The VM is still usable. ``result`` holds the output up to the kill."""

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        #: The :class:`~pytest_qemu.CommandResult` with the output the command wrote.
        self.result = result


class GuestUnresponsive(VMError):
    """The guest stopped answering (no reply well past a command's timeout): the VM was
    killed. Unlike :class:`CommandTimeout`, the VM cannot be used any more."""


class AgentDied(VMError):
    """The guest side of the VM's command channel went away while it ran a command: the
    agent died (an OOM kill, ``kill -9 -1``), or the guest ended the SSH session. The VM
    can run the next command: an agent restarts by itself, the SSH channel logs in again."""


class GuestKernelTrouble(VMError):
    """The guest's kernel logged a warning, a BUG or an oops while the test ran.

    Turn the check off for a test with ``@pytest.mark.qemu(kernel_warnings=False)``,
    or for the run with ``--qemu-kernel-warnings=ignore``.
    """


class GuestSetupError(VMError):
    """The guest could not apply the VM's settings (a mount or an address failed)."""


class ConsoleTimeout(VMError):
    """A pattern did not appear on the console in time."""


class KernelError(SetupError):
    """A kernel image cannot be used."""


class KernelNotFoundError(KernelError):
    """No usable host kernel was found."""


class ModuleError(SetupError):
    """A kernel module cannot be found, indexed or read."""


class AllocationError(QemuError):
    """A port, VM number or network id could not be leased, or the lease state is unusable.

    The message names the offending value (range, path, lock) and what to do about it.
    Invalid arguments raise :class:`ConfigurationError` instead, which is also a
    :class:`ValueError`.
    """


class CommandRefused(QemuError):
    """The guest's command channel could not run a command as asked (the QEMU guest
    agent's 16 MiB output cap, say); the message says why and what to do instead."""


class TransferFailed(QemuError):
    """A file could not be copied to or from the guest (a missing file, a full disk)."""


class CommandFailed(QemuError):
    """A guest command run through ``vm.check`` exited with a non-zero status."""

    def __init__(self, command: str, returncode: int, stdout: str, stderr: str) -> None:
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"guest command exited with status {returncode}: {command!r}\n"
            f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        )


class QemuWarning(UserWarning):
    """Base class of every warning pytest-qemu issues."""


class CacheWarning(QemuWarning):
    """The cache could not hold a build product (its file system is full): the VM
    started a slower way (a plain boot, the compressed kernel); the message says which
    directory to free."""


class SnapshotWarning(QemuWarning):
    """A snapshot could not be saved or restored; the VM booted instead."""


def concise_traceback(function: Callable[P, R]) -> Callable[P, R]:
    """Make our errors from *function* show the caller's line, not our internals.

    pytest hides frames marked ``__tracebackhide__``; re-raising with the
    traceback cut drops the frames below. The exception itself, and its type,
    are unchanged, so ``pytest.raises(BootTimeout)`` still works.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        try:
            return function(*args, **kwargs)
        except QemuError as error:
            raise error.with_traceback(None) from None

    return wrapper
