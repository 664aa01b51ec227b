"""A running virtual machine: a QEMU process, its QMP monitor, console and command agent."""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError

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
from pytest_qemu.vm.snapshot import Snapshot, SnapshotStore, snapshot_key

_SOCKET_WAIT = 10.0
#: A restore answers in well under a second; past this, boot instead.
_RESTORE_TIMEOUT = 30.0
_SAVE_TIMEOUT = 60.0
_live_vms: weakref.WeakSet[VM] = weakref.WeakSet()


class SnapshotWarning(UserWarning):
    """A snapshot could not be saved or restored; the VM booted instead."""


class GuestSetupError(VMError):
    """The guest could not apply the VM's settings (a mount or an address failed)."""


_SOCKET_DIR_PREFIX = "pytest-qemu-vm-"
_swept = False


def _sweep_orphan_socket_dirs() -> None:
    """Remove socket directories left by processes that were killed (once per process)."""
    global _swept
    if _swept:
        return
    _swept = True
    for directory in Path(tempfile.gettempdir()).glob(f"{_SOCKET_DIR_PREFIX}*-*"):
        owner = directory.name[len(_SOCKET_DIR_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(directory, ignore_errors=True)


def _which(qemu: str) -> Path:
    return Path(shutil.which(qemu) or qemu)


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

    With a :class:`SnapshotStore`, the VM is restored from a saved boot of a
    VM with the same hardware when there is one (and saves one when there is
    not), then given its own settings through the agent.
    """

    def __init__(
        self,
        spec: MachineSpec,
        log_dir: Path | None = None,
        boot_timeout: float = 120.0,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.spec = spec
        self.boot_timeout = boot_timeout
        # UNIX socket paths are limited to 108 bytes: keep them out of deep tmp_path trees.
        _sweep_orphan_socket_dirs()
        self._socket_dir = Path(tempfile.mkdtemp(prefix=f"{_SOCKET_DIR_PREFIX}{os.getpid()}-"))
        self.log_dir = log_dir if log_dir is not None else self._socket_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._paths = RuntimePaths.in_directory(self._socket_dir, self.log_dir)
        self._snapshot: Snapshot | None = None
        try:
            built = build_command_line(spec, self._paths, setup_on_kernel_command_line=False)
            if snapshots is not None and built.device_layout is not None:
                key = snapshot_key(spec, _which(spec.qemu), built.kernel_args, built.device_layout)
                self._snapshot = snapshots.get(key)
            else:
                built = build_command_line(spec, self._paths, setup_on_kernel_command_line=True)
        except BaseException:
            # No VM will exist to free these at teardown.
            for device in spec.devices:
                device.release()
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            raise
        self.argv: list[str] = built.argv
        self.kernel_args: list[str] = built.kernel_args
        self._setup_args = built.setup_args
        self.stderr_log = self.log_dir / "qemu-stderr.log"
        self.console = Console(self._paths.console_log, self._paths.console_socket, self.is_running)
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: QMPConnection | None = None
        self._agent = AgentChannel(self._paths.agent_socket)
        self._lifecycle_lock = threading.Lock()
        self._started = False
        self._stopped = False
        self.boot_seconds: float | None = None
        self._boot_setup_status = "-"
        #: The snapshot this VM was restored from, or None if it booted.
        self.restored_from: Path | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @concise_traceback
    def start(self) -> VM:
        """Start QEMU and wait until the guest's command agent answers."""
        if self._started:
            raise VMError("this VM was already started; create a new VM to start another")
        self._started = True
        started = time.monotonic()
        _live_vms.add(self)
        try:
            if self._snapshot is None:
                self._boot(started)
                self._check_boot_setup()
            else:
                self._start_from_snapshot(self._snapshot, started)
        except BaseException:
            self.kill()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def _start_from_snapshot(self, snapshot: Snapshot, started: float) -> None:
        if snapshot.exists() and self._restore(snapshot):
            return
        # One process boots and saves; the others wait here, then restore what it saved.
        with snapshot.building():
            built_here = not snapshot.exists()
            if built_here:
                self._boot(started)
                self._save(snapshot)
        if built_here:
            self._personalise()
        elif not self._restore(snapshot):
            # Waiting for the builder may have taken a while: give the boot its full time.
            self._boot(time.monotonic())
            self._personalise()

    def _boot(self, started: float) -> None:
        """Launch QEMU on :attr:`argv` and wait for the agent, within the boot timeout."""
        self._launch(self.argv, console_prefix=None)
        self._wait_until_ready(started + self.boot_timeout)

    def _restore(self, snapshot: Snapshot) -> bool:
        """Restore *snapshot* and personalise it; on failure warn, clean up and return False."""
        argv = build_command_line(
            self.spec, self._paths, setup_on_kernel_command_line=False, incoming=snapshot.state
        ).argv
        try:
            self._launch(argv, console_prefix=snapshot.console)
            deadline = time.monotonic() + min(self.boot_timeout, _RESTORE_TIMEOUT)
            self._wait_until_ready(deadline, after_incoming=True)
        except (VMError, OSError) as error:
            details = self._stderr_tail()
            self._stop_process()
            snapshot.discard()
            warnings.warn(
                SnapshotWarning(
                    f"restoring snapshot {snapshot.state} failed, booting instead: {error}"
                    + (f"\nQEMU stderr:\n{details}" if details else "")
                ),
                stacklevel=4,
            )
            return False
        self.argv = argv
        self.restored_from = snapshot.state
        snapshot.mark_used()
        self._personalise()
        return True

    def _launch(self, argv: list[str], console_prefix: Path | None) -> None:
        with self._paths.console_log.open("wb") as console:
            if console_prefix is not None:
                with contextlib.suppress(OSError):
                    console.write(console_prefix.read_bytes())
                console.write(b"\n[pytest-qemu: restored from a snapshot]\n")
        with self.stderr_log.open("wb") as stderr:
            try:
                self._process = spawn(argv, stderr=stderr)
            except FileNotFoundError:
                raise SetupError(
                    f"QEMU binary {argv[0]!r} was not found: install it with "
                    "`apt-get install qemu-system-x86` or pass --qemu-binary"
                ) from None
        self._qmp = QMPConnection(str(self._paths.qmp_socket), f"vm-{self.pid}")
        self._agent = AgentChannel(self._paths.agent_socket)

    def _wait_until_ready(self, deadline: float, after_incoming: bool = False) -> None:
        """Connect QMP and the agent, and wait for the agent's answer; a clear error if not.

        *after_incoming*: wait for the restored guest to run before the first
        ping, which would otherwise be lost and answered only at the next one.
        """
        qmp = self._qmp
        assert qmp is not None
        try:
            self._connect(lambda: qmp.connect(timeout=_SOCKET_WAIT))
            while after_incoming and qmp.execute("query-status", None, 10)["status"] != "running":
                if time.monotonic() > deadline:
                    raise AgentUnavailable("the snapshot was not restored in time")
                time.sleep(0.01)
            self._connect(self._agent.connect)
        except (OSError, TimeoutError, VMError, QMPError) as error:
            headline = f"cannot connect to QEMU's sockets in {self._socket_dir} ({error})"
            if self._has_exited():
                headline = f"QEMU exited while the VM was starting ({error})"
            raise VMExited(self.failure_report(headline)) from None
        try:
            self._boot_setup_status = self._agent.wait_ready(
                max(deadline - time.monotonic(), 0.1), self.is_running
            )
        except AgentUnavailable as error:
            if self._has_exited():
                raise VMExited(
                    self.failure_report(f"QEMU exited while the VM was starting ({error})")
                ) from None
            raise BootTimeout(
                self.failure_report(
                    f"the guest did not come up within the boot timeout of {self.boot_timeout:g} s"
                    f" ({error})"
                )
            ) from None

    def _connect(self, connect: Callable[[], None]) -> None:
        """Call *connect* until QEMU accepts: its socket file appears before it listens."""
        deadline = time.monotonic() + _SOCKET_WAIT
        while True:
            try:
                connect()
                return
            except (OSError, QMPError):
                if not self.is_running() or time.monotonic() > deadline:
                    raise
            time.sleep(0.005)

    def _save(self, snapshot: Snapshot) -> None:
        """Save this just-booted VM as *snapshot*, then let it run on."""
        assert self._qmp is not None
        partial = snapshot.partial_path()
        status = "not started"
        try:
            self._qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(partial))}"}, 30)
            deadline = time.monotonic() + _SAVE_TIMEOUT
            while (status := self._qmp.execute("query-migrate", None, 30).get("status")) not in (
                "completed",
                "failed",
                "cancelled",
            ):
                if time.monotonic() > deadline:
                    self._qmp.execute("migrate_cancel", None, 30)
                    status = "timed out"
                    break
                time.sleep(0.02)
        except QMPError as error:
            # e.g. a device from qemu_args that blocks migration: this VM simply runs on.
            status = str(error)
        finally:
            # After a migration the source VM is paused; this VM carries on as the test's VM.
            self._qmp.execute("cont", None, 30)
        if status == "completed":
            snapshot.publish(partial, self.console_log)
        else:
            partial.unlink(missing_ok=True)
            warnings.warn(SnapshotWarning(f"saving a snapshot failed ({status})"), stacklevel=5)

    def _personalise(self) -> None:
        """Give a restored (or snapshot-booted) guest its own clock, entropy and settings."""
        script = f"date -u -s @{int(time.time())} >/dev/null; head -c 64 >/dev/urandom"
        if self.spec.devices:
            # Disks were probed before the save: read them afresh. Then mount and address.
            setup = " ".join(shlex.quote(argument) for argument in self._setup_args)
            script += f"; echo 3 >/proc/sys/vm/drop_caches; /etc/pytest-qemu/setup {setup}"
        result = self.run(script, timeout=60, input=os.urandom(64))
        if result.returncode != 0:
            raise GuestSetupError(self.failure_report(f"guest setup failed:\n{result.stderr}"))

    def _check_boot_setup(self) -> None:
        """Fail the start if the guest's init could not apply the VM's settings at boot."""
        if self._boot_setup_status in ("0", "-"):
            return
        result = self.run(
            # A guest of the user's own may have no setup status to report.
            "[ -e /run/pytest-qemu/setup.status ] || exit 0; "
            "cat /run/pytest-qemu/setup.err >&2; exit $(cat /run/pytest-qemu/setup.status)",
            timeout=60,
        )
        if result.returncode != 0:
            raise GuestSetupError(self.failure_report(f"guest setup failed:\n{result.stderr}"))

    def _has_exited(self) -> bool:
        """Whether QEMU has exited, allowing a moment for an exit already under way."""
        if self._process is None:
            return False
        try:
            self._process.wait(1.0)
        except subprocess.TimeoutExpired:
            return False
        return True

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
        self._stop_process()
        self.console.close()
        for device in self.spec.devices:
            device.release()
        self._cleanup_files()
        _live_vms.discard(self)

    def _stop_process(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._agent.close()
        if self._qmp is not None:
            self._qmp.close()
        for path in (self._paths.qmp_socket, self._paths.console_socket, self._paths.agent_socket):
            path.unlink(missing_ok=True)

    def _cleanup_files(self) -> None:
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

    def _stderr_tail(self) -> str:
        try:
            return self.stderr_log.read_text(errors="replace").strip()[-3000:]
        except OSError:
            return ""

    def failure_report(self, headline: str) -> str:
        """*headline* followed by what is needed to debug it: command line, stderr, console."""
        stderr = self._stderr_tail()
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
