"""A running virtual machine: a QEMU process, its QMP monitor, console and command agent."""

from __future__ import annotations

import atexit
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_qemu.errors import (
    BootTimeout,
    CommandFailed,
    CommandTimeout,
    SetupError,
    VMError,
    VMExited,
    concise_traceback,
)
from pytest_qemu.vm.agent import AgentChannel, AgentUnavailable
from pytest_qemu.vm.argv import MachineSpec, RuntimePaths, build_command_line
from pytest_qemu.vm.console import Console
from pytest_qemu.vm.process import spawn
from pytest_qemu.vm.qmp import QMPConnection

_SOCKET_WAIT = 10.0
_live_vms: weakref.WeakSet[VM] = weakref.WeakSet()


@dataclass(frozen=True)
class CommandResult:
    """What a guest command returned. ``stdout``/``stderr`` are text; the bytes are kept too."""

    command: str
    returncode: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class VM:
    """A live QEMU process you can run commands in, read the console of and talk QMP to.

    Create it with a :class:`MachineSpec` and call :meth:`start` (or use it as
    a context manager); the fixtures do both for you. :meth:`shutdown` or
    :meth:`kill` ends it; so does the death of the Python process.
    """

    def __init__(
        self, spec: MachineSpec, log_dir: Path | None = None, boot_timeout: float = 120.0
    ) -> None:
        self.spec = spec
        self.boot_timeout = boot_timeout
        # UNIX socket paths are limited to 108 bytes: keep them out of deep tmp_path trees.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="pytest-qemu-"))
        self.log_dir = log_dir if log_dir is not None else self._socket_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._paths = RuntimePaths.in_directory(self._socket_dir, self.log_dir)
        built = build_command_line(spec, self._paths)
        self.argv: list[str] = built.argv
        self.kernel_args: list[str] = built.kernel_args
        self.stderr_log = self.log_dir / "qemu-stderr.log"
        self.console = Console(self._paths.console_log, self._paths.console_socket, self.is_running)
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: QMPConnection | None = None
        self._agent = AgentChannel(self._paths.agent_socket)
        self._lifecycle_lock = threading.Lock()
        self._stopped = False
        self.boot_seconds: float | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @concise_traceback
    def start(self) -> VM:
        """Start QEMU and wait until the guest's command agent answers."""
        if self._process is not None:
            raise VMError("this VM was already started; create a new VM to start another")
        started = time.monotonic()
        with self.stderr_log.open("wb") as stderr:
            try:
                self._process = spawn(self.argv, stderr=stderr)
            except FileNotFoundError as error:
                self._cleanup_files()
                raise SetupError(
                    f"QEMU binary {self.argv[0]!r} was not found: install it with "
                    "`apt-get install qemu-system-x86` or pass --qemu-binary"
                ) from error
        _live_vms.add(self)
        try:
            self._qmp = QMPConnection(str(self._paths.qmp_socket), f"vm-{self.pid}")
            self._wait_for_socket(self._paths.qmp_socket)
            self._qmp.connect(timeout=_SOCKET_WAIT)
            self._wait_for_socket(self._paths.agent_socket)
            self._agent.connect()
            remaining = self.boot_timeout - (time.monotonic() - started)
            self._agent.wait_ready(max(remaining, 0.1), self.is_running)
        except (AgentUnavailable, OSError, TimeoutError, VMError) as error:
            exited = self._has_exited()
            self.kill()
            if exited:
                raise VMExited(
                    self.failure_report(f"QEMU exited while the VM was starting ({error})")
                ) from None
            raise BootTimeout(
                self.failure_report(
                    f"the guest did not come up within the boot timeout of {self.boot_timeout:g} s"
                )
            ) from None
        except BaseException:
            self.kill()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def _has_exited(self) -> bool:
        """Whether QEMU has exited, allowing a moment for an exit already under way."""
        if self._process is None:
            return False
        try:
            self._process.wait(1.0)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _wait_for_socket(self, path: Path) -> None:
        deadline = time.monotonic() + _SOCKET_WAIT
        while not path.exists():
            if not self.is_running():
                raise VMExited("QEMU exited before it opened its sockets")
            if time.monotonic() > deadline:
                raise VMError(f"QEMU did not create {path} within {_SOCKET_WAIT:g} s")
            time.sleep(0.005)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the VM gracefully (guest ``sync``, QMP ``quit``); kill it if that fails."""
        if self.is_running():
            try:
                self._agent.run("sync", b"", min(timeout, 5.0), self.is_running)
            except (AgentUnavailable, ValueError):
                pass
            try:
                if self._qmp is not None:
                    self._qmp.execute("quit", None, timeout=min(timeout, 5.0))
            except Exception:
                pass
            assert self._process is not None
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """End QEMU at once with SIGKILL and free everything the VM held. Idempotent."""
        with self._lifecycle_lock:
            if self._stopped:
                return
            self._stopped = True
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._agent.close()
        self.console.close()
        if self._qmp is not None:
            self._qmp.close()
        for device in self.spec.devices:
            device.release()
        self._cleanup_files()
        _live_vms.discard(self)

    def _cleanup_files(self) -> None:
        for path in (self._paths.qmp_socket, self._paths.console_socket, self._paths.agent_socket):
            path.unlink(missing_ok=True)
        # Without a log directory of its own, the console log lives here: keep it.
        if self.log_dir != self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> VM:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # -- state --------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def console_log(self) -> Path:
        """The file the serial console is logged to, from the first byte of boot."""
        return self._paths.console_log

    @property
    def qmp_socket(self) -> Path:
        return self._paths.qmp_socket

    # -- guest commands -----------------------------------------------------------------------

    @concise_traceback
    def run(
        self, command: str, timeout: float | None = 60.0, input: bytes | str = b""
    ) -> CommandResult:
        """Run *command* with ``sh`` in the guest and return its status and output.

        The command runs in ``/root`` with *input* as its standard input. If it
        runs longer than *timeout* seconds the guest kills it and
        :class:`CommandTimeout` is raised; the VM stays usable. If the guest
        does not answer at all, the VM is killed and the error says so.
        """
        self._require_running(f"run {command!r}")
        stdin = input.encode() if isinstance(input, str) else input
        started = time.monotonic()
        try:
            status, stdout, stderr = self._agent.run(command, stdin, timeout, self.is_running)
        except AgentUnavailable as error:
            exited = self._has_exited()
            self.kill()
            what = "QEMU exited" if exited else "the guest stopped answering and the VM was killed"
            error_type = VMExited if exited else CommandTimeout
            raise error_type(
                self.failure_report(f"{what} while running {command!r} ({error})")
            ) from None
        elapsed = time.monotonic() - started
        result = CommandResult(command, status, stdout, stderr)
        # The guest's `timeout -s KILL` makes the command exit with 128 + SIGKILL.
        if timeout is not None and status == 137 and elapsed >= timeout:
            raise CommandTimeout(
                f"guest command {command!r} did not finish within {timeout:g} s and was killed "
                "(the VM is still usable)\n"
                f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
            )
        return result

    @concise_traceback
    def check(self, command: str, timeout: float | None = 60.0, input: bytes | str = b"") -> str:
        """Run *command*; return its stdout, or raise :class:`CommandFailed` if it fails."""
        result = self.run(command, timeout=timeout, input=input)
        if result.returncode != 0:
            raise CommandFailed(command, result.returncode, result.stdout, result.stderr)
        return result.stdout

    # -- QMP ----------------------------------------------------------------------------------

    @concise_traceback
    def qmp(self, command: str, timeout: float | None = 30.0, **arguments: Any) -> Any:
        """Run a QMP command and return its result; ``qemu.qmp.ExecuteError`` if QEMU refuses."""
        self._require_running(f"send QMP {command!r}")
        assert self._qmp is not None
        return self._qmp.execute(command, arguments or None, timeout)

    # -- reporting ----------------------------------------------------------------------------

    def _require_running(self, action: str) -> None:
        if not self.is_running():
            raise VMExited(self.failure_report(f"cannot {action}: the VM is not running"))

    def failure_report(self, headline: str) -> str:
        """*headline* followed by what is needed to debug it: command line, stderr, console."""
        try:
            stderr = self.stderr_log.read_text(errors="replace").strip()[-3000:]
        except OSError:
            stderr = ""
        status = self.returncode
        lines = [
            headline,
            f"QEMU exit status: {status}" if status is not None else "QEMU was running",
            f"command line: {shlex.join(self.argv)}",
            f"QEMU stderr ({self.stderr_log}):\n{stderr or '(empty)'}",
            f"last console lines ({self.console_log}):\n{self.console.tail(30) or '(empty)'}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<VM pid={self.pid} {state} devices={list(self.spec.devices)!r}>"


def kill_all_vms() -> None:
    """Kill every VM this process started that is still running (last-resort cleanup)."""
    for vm in list(_live_vms):
        vm.kill()


atexit.register(kill_all_vms)
