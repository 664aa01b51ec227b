"""The :class:`CommandChannel` interface: how the host runs commands in a guest.

A channel owns the QEMU arguments of its transport (a virtio-serial port, the
console...), connects to it, notices when the guest side is ready, and runs
commands and moves files. It knows nothing of the QEMU process: the VM tells
it what QEMU reports (a guest opening or closing a serial port) and turns its
:class:`ChannelError` subclasses into the errors users see.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pytest_qemu.channels.output import CommandOutput

#: How long a request may go unanswered past its own timeout before the guest counts as hung.
REPLY_GRACE = 10.0


class ChannelError(Exception):
    """Root of the errors a channel raises; the VM turns each into a user-facing error."""


class ChannelClosed(ChannelError):
    """The connection to QEMU closed: QEMU has exited."""


class AgentGone(ChannelError):
    """The guest side of the channel died or went away in the middle of a request."""


class NoReply(ChannelError):
    """Nothing answered by the deadline; the guest may be hung."""


class RequestRefused(ChannelError):
    """The guest side could not carry out a request (a file it cannot open, say)."""


@dataclass(frozen=True)
class CommandResult:
    """What a guest command returned.

    ``stdout``/``stderr`` are text; ``stdout_bytes``/``stderr_bytes`` the raw
    bytes. Output of any size is kept: beyond a limit (16 MiB per stream by
    default) it lives in a temporary file, read back when asked for; use
    :meth:`open_stdout` to stream it instead. ``returncode`` is negative when
    a signal ended the command (``-9`` for SIGKILL), as with :mod:`subprocess`.
    """

    command: str
    returncode: int
    stdout_output: CommandOutput = field(repr=False)
    stderr_output: CommandOutput = field(repr=False)
    #: Seconds from sending the command to its exit status arriving.
    duration: float = 0.0

    @property
    def stdout_bytes(self) -> bytes:
        return self.stdout_output.read_bytes()

    @property
    def stderr_bytes(self) -> bytes:
        return self.stderr_output.read_bytes()

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self, size: int = 4096) -> tuple[str, str]:
        """The start of stdout and stderr as text, whatever their size (for transcripts)."""
        return tuple(  # type: ignore[return-value]
            output.head(size).decode("utf-8", errors="replace")
            for output in (self.stdout_output, self.stderr_output)
        )

    def open_stdout(self) -> IO[bytes]:
        """The command's stdout as a binary file, for output too large to hold in memory."""
        return self.stdout_output.open()

    def open_stderr(self) -> IO[bytes]:
        """The command's stderr as a binary file."""
        return self.stderr_output.open()


@dataclass(frozen=True)
class CommandRequest:
    """One command to run: what, with which input and environment, for how long."""

    command: str
    stdin: bytes = b""
    timeout: float | None = 60.0
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = ""
    #: A directory of the guest to chroot into first ("": none).
    root: str = ""
    #: Where output beyond the memory limit is written.
    spill_dir: Path | None = None
    memory_limit: int | None = None


class CommandChannel(abc.ABC):
    """How the host reaches a guest to run commands and move files.

    A VM uses one channel. The VM adds :meth:`qemu_args` to QEMU's command
    line, calls :meth:`connect` once QEMU runs, then :meth:`wait_ready`, and
    forwards QEMU's ``VSERPORT_CHANGE`` events for :attr:`serial_port_id`.
    Methods other than :meth:`guest_port_changed` are called from one thread
    at a time.
    """

    #: The QEMU id of a virtio-serial port whose guest side the VM should watch.
    serial_port_id: str | None = None
    #: Whether :meth:`wait_ready` with ``resumed=True`` sets the guest's clock to the
    #: host's and adds entropy, so that personalising a restored guest need not.
    personalises_on_resume: bool = False

    @abc.abstractmethod
    def qemu_args(self) -> list[str]:
        """The QEMU arguments that create this channel's transport."""

    @abc.abstractmethod
    def connect(self, deadline: float, qemu_running: Callable[[], bool]) -> None:
        """Connect to QEMU's end of the transport, retrying until *deadline*."""

    @abc.abstractmethod
    def wait_ready(self, deadline: float, resumed: bool = False) -> str:
        """Block until the guest side answers, or raise :class:`NoReply` at *deadline*.

        *resumed*: the VM was restored from a saved state, so the guest side
        is already running and will not announce itself. Returns what the
        guest reports about its boot-time setup (``"0"`` for success, ``"-"``
        if there was none).
        """

    @abc.abstractmethod
    def run(self, request: CommandRequest) -> CommandResult:
        """Run *request* and return its result once it exits.

        A command that outlives its timeout is killed with everything it
        started, and the result's ``timed_out`` is reported by raising
        :class:`CommandTimedOut`.
        """

    @abc.abstractmethod
    def put(self, source: Path, guest_path: str, mode: int, timeout: float | None) -> None:
        """Copy the host file *source* to *guest_path*, with permission bits *mode*."""

    @abc.abstractmethod
    def get(self, guest_path: str, destination: Path, timeout: float | None) -> int:
        """Copy the guest file *guest_path* to *destination*; return its permission bits."""

    def settle(self, deadline: float) -> None:  # noqa: B027 - optional hook
        """Wait until what the guest side starts after announcing itself has started
        (called before a VM is saved as a template)."""

    def loss_message(self, action: str, why: str) -> str:
        """What a user reads when the guest side went away under *action* (the
        :class:`AgentGone` that said *why*) and the VM still runs: what died, and what
        the next request finds."""
        return (
            f"the guest's command agent died while trying to {action} ({why}); it restarts "
            "by itself, so the VM can run the next command. The console shows why (an "
            "out-of-memory kill, a signal)"
        )

    def kernel_log(self, timeout: float | None) -> str | None:
        """The guest kernel's log as ``dmesg`` prints it, read without starting a
        process in the guest; None if this channel cannot (callers run ``dmesg``)."""
        return None

    def guest_port_changed(self, is_open: bool) -> None:  # noqa: B027 - optional hook
        """QEMU reported the guest opening or closing :attr:`serial_port_id` (any thread)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Drop the connection. Idempotent."""


class CommandTimedOut(ChannelError):
    """The command ran past its timeout and the guest killed it; the guest is still usable."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(f"{result.command!r} timed out")
        self.result = result
