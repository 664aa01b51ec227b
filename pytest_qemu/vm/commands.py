"""Commands: ``run``, ``check``, ``put``, ``get``, the kernel log and QMP, with their
argument checks, their transcript lines, and the channel's errors turned into the errors
users see."""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pytest_qemu.channels.base import (
    AgentGone,
    ChannelClosed,
    ChannelError,
    CommandRequest,
    CommandResult,
    CommandTimedOut,
    NoReply,
    RequestRefused,
)
from pytest_qemu.errors import (
    AgentDied,
    CommandFailed,
    CommandRefused,
    CommandTimeout,
    ConfigurationError,
    GuestSetupError,
    GuestUnresponsive,
    QemuError,
    TransferFailed,
    VMExited,
    concise_traceback,
)

if TYPE_CHECKING:
    from pytest_qemu.channels.base import CommandChannel
    from pytest_qemu.guests.base import Guest
    from pytest_qemu.vm.process import QemuProcess
    from pytest_qemu.vm.rundir import RunFiles
    from pytest_qemu.vm.transcript import Transcript

T = TypeVar("T")


class Target(Protocol):
    """What commands need of a VM's launcher (:class:`~pytest_qemu.vm.launcher.Launcher`)."""

    guest: Guest
    files: RunFiles
    transcript: Transcript
    channel: CommandChannel
    process: QemuProcess | None

    def is_running(self) -> bool:
        """Whether QEMU is alive."""

    def has_exited(self) -> bool:
        """Whether QEMU has exited (allowing a moment for an exit under way)."""

    def failure_report(self, headline: str, argv: list[str] | None = None) -> str:
        """*headline* and what is needed to debug it."""


_EXCERPT_LIMIT = 10_000
#: How long an agent that died may take to come back before the VM is judged by QEMU's
#: state alone (a guest powering off closes the agent's port before QEMU exits).
_AGENT_RETURN_WAIT = 10.0


class GuestCommands:
    """The commands of one VM, sent one at a time through its launcher's channel.

    *launcher* is the VM's launcher (its channel, process and reports); *kill*
    ends the VM: a guest that stops answering, or a QEMU that exited, leaves
    nothing to keep.
    """

    def __init__(self, launcher: Target, kill: Callable[[], None]) -> None:
        self._launcher = launcher
        self._kill = kill
        self._lock = threading.Lock()

    def run(
        self,
        command: str,
        timeout: float | None,
        input: bytes | str,
        env: dict[str, str] | None,
        cwd: str | None,
    ) -> CommandResult:
        """See :meth:`VM.run <pytest_qemu.vm.machine.VM.run>`."""
        check_command_arguments(command, timeout, env, cwd, input)
        launcher = self._launcher
        transcript = launcher.transcript
        request = CommandRequest(
            command,
            stdin=input.encode() if isinstance(input, str) else bytes(input),
            timeout=timeout,
            env=dict(env or {}),
            cwd=cwd or launcher.guest.default_cwd,
            spill_dir=launcher.files.log_dir,
        )
        try:
            result = self.call(f"run {command!r}", lambda: launcher.channel.run(request), timeout)
        except CommandTimedOut as timed_out:
            result = timed_out.result
            transcript.command(
                command, f"killed after its timeout of {timeout:g} s", *result.summary()
            )
            stdout, stderr = result.summary(_EXCERPT_LIMIT)
            raise CommandTimeout(
                f"guest command {command!r} did not finish within {timeout:g} s: the guest "
                "killed it and every process it started (the VM is still usable)\n"
                f"--- stdout (start) ---\n{stdout}--- stderr (start) ---\n{stderr}",
                result,
            ) from None
        except RequestRefused as refused:
            transcript.command(command, f"refused: {refused}")
            raise CommandRefused(f"the guest could not run {command!r}: {refused}") from None
        except QemuError as error:
            transcript.command(command, f"{type(error).__name__}: {first_line(error)}")
            raise
        transcript.command(
            command,
            f"exit status {result.returncode} in {result.duration:.3f} s",
            *result.summary(),
        )
        return result

    def check(
        self,
        command: str,
        timeout: float | None,
        input: bytes | str,
        env: dict[str, str] | None,
        cwd: str | None,
    ) -> str:
        """See :meth:`VM.check <pytest_qemu.vm.machine.VM.check>`."""
        result = self.run(command, timeout, input, env, cwd)
        if result.returncode != 0:
            raise CommandFailed(
                command, result.returncode, excerpt(result.stdout), excerpt(result.stderr)
            )
        return result.stdout

    def put(
        self,
        host_path: str | os.PathLike[str],
        guest_path: str,
        mode: int | None,
        timeout: float | None,
    ) -> None:
        """See :meth:`VM.put <pytest_qemu.vm.machine.VM.put>`."""
        check_timeout(timeout)
        source = Path(host_path)
        if not source.is_file():
            raise ConfigurationError(f"cannot copy {str(host_path)!r} to the guest: not a file")
        check_guest_path(guest_path)
        bits = stat.S_IMODE(source.stat().st_mode) if mode is None else mode
        channel = self._launcher.channel
        self._transfer(
            f"copy {source} to {guest_path} in the guest",
            lambda: channel.put(source, guest_path, bits, timeout),
            timeout,
        )

    def get(
        self, guest_path: str, host_path: str | os.PathLike[str], timeout: float | None
    ) -> Path:
        """See :meth:`VM.get <pytest_qemu.vm.machine.VM.get>`."""
        check_timeout(timeout)
        check_guest_path(guest_path)
        destination = Path(host_path)
        if destination.is_dir():
            destination = destination / Path(guest_path).name
        if not destination.parent.is_dir():
            raise ConfigurationError(
                f"cannot copy {guest_path} from the guest to {str(host_path)!r}: "
                f"{destination.parent} is not a directory"
            )
        channel = self._launcher.channel
        self._transfer(
            f"copy {guest_path} from the guest to {destination}",
            lambda: channel.get(guest_path, destination, timeout),
            timeout,
        )
        return destination

    def kernel_log(self, timeout: float | None) -> str:
        """See :meth:`VM.kernel_log <pytest_qemu.vm.machine.VM.kernel_log>`."""
        action = "read the guest kernel's log"
        channel = self._launcher.channel
        try:
            log = self.call(action, lambda: channel.kernel_log(timeout), timeout)
        except RequestRefused as refused:
            raise TransferFailed(f"cannot {action}: {refused}") from None
        if log is None:
            return self.check("dmesg", timeout, b"", None, None)
        return log

    def run_setup(self, command: str, stdin: bytes = b"", timeout: float = 60) -> None:
        """Run a set-up *command* in the guest's own root (not a userland it chroots into)."""
        request = CommandRequest(command, stdin=stdin, timeout=timeout, root="/")
        channel = self._launcher.channel
        result = self.call("set up the guest", lambda: channel.run(request), timeout)
        if result.returncode != 0:
            raise GuestSetupError(
                self._launcher.failure_report(f"guest setup failed:\n{result.stderr}")
            )

    def qmp(self, command: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        """See :meth:`VM.qmp <pytest_qemu.vm.machine.VM.qmp>`."""
        launcher = self._launcher
        require_running(launcher, f"send QMP {command!r}")
        assert launcher.process is not None
        try:
            answer = launcher.process.qmp.execute(command, arguments or None, timeout)
        except Exception as error:
            launcher.transcript.add(
                f"qmp {command} {arguments or ''}: {type(error).__name__}: {error}"
            )
            raise
        launcher.transcript.add(f"qmp {command} {arguments or ''}: ok")
        return answer

    def sync(self, timeout: float) -> None:
        """Flush the guest's caches to its disks, if the channel is free within *timeout*."""
        if self._lock.acquire(timeout=timeout):
            try:
                self._launcher.channel.run(CommandRequest("sync", timeout=timeout))
            except (ChannelError, OSError):
                pass
            finally:
                self._lock.release()

    def _transfer(self, action: str, transfer: Callable[[], object], timeout: float | None) -> None:
        transcript = self._launcher.transcript
        try:
            self.call(action, transfer, timeout)
        except RequestRefused as refused:
            transcript.add(f"{action}: failed: {refused}")
            raise TransferFailed(f"cannot {action}: {refused}") from None
        except QemuError as error:
            transcript.add(f"{action}: {type(error).__name__}: {first_line(error)}")
            raise
        transcript.add(f"{action}: done")

    def call(self, action: str, call: Callable[[], T], timeout: float | None) -> T:
        """Run a channel request; turn channel errors into the errors users see.

        :class:`RequestRefused` and :class:`CommandTimedOut` pass through for
        the caller to word.
        """
        launcher = self._launcher
        require_running(launcher, action)
        with self._lock:
            try:
                return call()
            except (CommandTimedOut, RequestRefused):
                raise
            except AgentGone as error:
                if not self._agent_back_or_vm_gone():
                    self._kill()
                    raise VMExited(
                        launcher.failure_report(
                            f"QEMU exited while trying to {action}: {self._exit_reason()}"
                        )
                    ) from None
                raise AgentDied(
                    launcher.failure_report(launcher.channel.loss_message(action, str(error)))
                ) from None
            except ChannelClosed as error:
                launcher.has_exited()
                self._kill()
                raise VMExited(
                    launcher.failure_report(
                        f"QEMU exited while trying to {action}: {self._exit_reason()} ({error})"
                    )
                ) from None
            except NoReply:
                self._kill()
                limit = "" if timeout is None else f" within {timeout:g} s (plus a grace period)"
                raise GuestUnresponsive(
                    launcher.failure_report(
                        f"the guest did not answer{limit} while trying to {action}: "
                        "it is hung, and the VM was killed"
                    )
                ) from None

    def _agent_back_or_vm_gone(self) -> bool:
        """After the agent's port closed: True once the agent answers again, False if
        QEMU is gone or going.

        A guest that powers off (``poweroff -f``, ``reboot -f`` under ``-no-reboot``)
        closes the port first and QEMU exits a moment later, a long moment on a busy
        host: wait for one or the other instead of guessing.
        """
        launcher = self._launcher
        try:
            launcher.channel.settle(time.monotonic() + _AGENT_RETURN_WAIT)
        except ChannelError:
            pass  # closed (QEMU gone) or no answer: QEMU's state decides
        process = launcher.process
        gone = process is not None and process.shutdown_reason is not None
        return not gone and not launcher.has_exited()

    def _exit_reason(self) -> str:
        process = self._launcher.process
        return process.exit_reason() if process is not None else "QEMU never started"


class CommandMethods:
    """The VM's public command methods, each a thin call of its :class:`GuestCommands`."""

    commands: GuestCommands

    @concise_traceback
    def qmp(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
        **keyword_arguments: Any,
    ) -> Any:
        """Run a QMP command and return its result; ``qemu.qmp.ExecuteError`` if QEMU refuses.

        Arguments go as keywords (``vm.qmp("qom-list", path="/machine")``), or
        as a dict for names that clash with this method's own.
        """
        return self.commands.qmp(command, {**(arguments or {}), **keyword_arguments}, timeout)

    @concise_traceback
    def run(
        self,
        command: str,
        timeout: float | None = 60.0,
        input: bytes | str = b"",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run the shell command *command* in the guest and return its status and output.

        The command runs in *cwd* (default ``/root``) with *input* as its
        standard input and *env* added to the guest's environment, in a session
        and process group of its own. Past *timeout* seconds (``None``: no
        limit) the guest kills it and everything it started, and
        :class:`CommandTimeout` is raised; the VM stays usable. If the guest's
        agent dies meanwhile, :class:`AgentDied` is raised within a second; if
        the guest stops answering altogether the VM is killed and
        :class:`GuestUnresponsive` is raised. Output of any size is kept (see
        :class:`CommandResult`).
        """
        return self.commands.run(command, timeout, input, env, cwd)

    @concise_traceback
    def check(
        self,
        command: str,
        timeout: float | None = 60.0,
        input: bytes | str = b"",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> str:
        """Run *command*; return its stdout, or raise :class:`CommandFailed` if it fails."""
        return self.commands.check(command, timeout, input, env, cwd)

    @concise_traceback
    def put(
        self,
        host_path: str | os.PathLike[str],
        guest_path: str,
        mode: int | None = None,
        timeout: float | None = 300.0,
    ) -> None:
        """Copy the host file *host_path* to *guest_path* in the guest, any size.

        The file keeps its permission bits unless *mode* is given. The guest
        file is written under a temporary name and renamed, so it is never
        seen half-written.
        """
        self.commands.put(host_path, guest_path, mode, timeout)

    @concise_traceback
    def get(
        self, guest_path: str, host_path: str | os.PathLike[str], timeout: float | None = 300.0
    ) -> Path:
        """Copy the guest file *guest_path* to *host_path*, keeping its permission bits.

        Returns the host path. *host_path* may be an existing directory.
        """
        return self.commands.get(guest_path, host_path, timeout)

    @concise_traceback
    def kernel_log(self, timeout: float | None = 30.0) -> str:
        """The guest kernel's log, as ``dmesg`` prints it.

        The default guest's agent reads it without starting a process in the
        guest; other channels run ``dmesg``.
        """
        return self.commands.kernel_log(timeout)


def require_running(launcher: Target, action: str) -> None:
    """Raise :class:`VMExited` if the VM is not running, to *action*."""
    if not launcher.is_running():
        raise VMExited(launcher.failure_report(f"cannot {action}: the VM is not running"))


def first_line(error: BaseException) -> str:
    """The first line of *error*'s message ("" if it has none)."""
    text = str(error)
    return text.splitlines()[0] if text else ""


def excerpt(text: str) -> str:
    """*text*, or its start and end if it is too long to put in an error message."""
    if len(text) <= _EXCERPT_LIMIT:
        return text
    half = _EXCERPT_LIMIT // 2
    return f"{text[:half]}\n[... {len(text) - _EXCERPT_LIMIT} characters ...]\n{text[-half:]}"


def check_command_arguments(
    command: object, timeout: object, env: object, cwd: object, stdin: object = b""
) -> None:
    """Refuse a command, timeout, input, environment or directory that cannot work,
    naming it."""
    if not isinstance(command, str):
        raise ConfigurationError(f"a guest command must be a string, not {command!r}")
    if "\0" in command:
        raise ConfigurationError(f"guest command {command!r} contains a NUL character")
    check_timeout(timeout)
    if not isinstance(stdin, (bytes, bytearray, memoryview, str)):
        raise ConfigurationError(
            f"input {stdin!r} is not valid: give bytes or str (b'' for no input)"
        )
    if env is not None:
        if not isinstance(env, dict):
            raise ConfigurationError(f"env must be a dict of strings, not {env!r}")
        for name, value in env.items():
            if (
                not isinstance(name, str)
                or not isinstance(value, str)
                or not name
                or "=" in name
                or "\0" in name + value
            ):
                raise ConfigurationError(
                    f"environment variable {name!r}={value!r} is not valid: names and values "
                    "are strings, names non-empty without '=', neither with a NUL character"
                )
    if cwd is not None and (not isinstance(cwd, str) or "\0" in cwd):
        raise ConfigurationError(f"cwd {cwd!r} is not a valid guest directory")


def check_timeout(timeout: object) -> None:
    """Refuse a timeout that is not a finite number of seconds above 0 (or None)."""
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf  # also refuses NaN
    ):
        raise ConfigurationError(
            f"timeout {timeout!r} is not valid: give a finite number of seconds above 0, "
            "or None for no limit"
        )


def check_guest_path(path: object) -> None:
    """Refuse a guest path that is not absolute."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ConfigurationError(f"guest path {path!r} is not valid: give an absolute path")
