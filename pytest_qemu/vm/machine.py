"""A running virtual machine: a QEMU process, its QMP monitor, console and command channel."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
import re
import shlex
import shutil
import stat
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_qemu.channels.agent import AgentChannel
from pytest_qemu.channels.base import (
    AgentGone,
    ChannelClosed,
    ChannelError,
    CommandChannel,
    CommandRequest,
    CommandResult,
    CommandTimedOut,
    NoReply,
    RequestRefused,
)
from pytest_qemu.devices.base import DeviceContext
from pytest_qemu.errors import (
    AgentDied,
    BootTimeout,
    CommandFailed,
    CommandRefused,
    CommandTimeout,
    ConfigurationError,
    GuestUnresponsive,
    QemuError,
    SetupError,
    TransferFailed,
    VMError,
    VMExited,
    concise_traceback,
    troubleshooting,
)
from pytest_qemu.guests.base import Guest, personalise_command
from pytest_qemu.sockets import connect_unix
from pytest_qemu.vm.argv import MachineSpec, RuntimePaths, build_command_line, device_layout
from pytest_qemu.vm.console import Console
from pytest_qemu.vm.diagnose import user_error
from pytest_qemu.vm.process import spawn
from pytest_qemu.vm.qmp import EventCallback, QMPConnection
from pytest_qemu.vm.rundir import make_run_directory
from pytest_qemu.vm.snapshot import Snapshot, SnapshotStore, snapshot_key
from pytest_qemu.vm.snapshotting import start_from_snapshot
from pytest_qemu.vm.transcript import Transcript

_SOCKET_WAIT = 10.0
#: How long an agent that died may take to come back before the VM is judged by QEMU's
#: state alone (a guest powering off closes the agent's port before QEMU exits).
_AGENT_RETURN_WAIT = 10.0
_live_vms: weakref.WeakSet[VM] = weakref.WeakSet()


class GuestSetupError(VMError):
    """The guest could not apply the VM's settings (a mount or an address failed)."""


def _which(qemu: str) -> Path:
    return Path(shutil.which(qemu) or qemu)


@dataclass
class _Launch:
    """One QEMU process of this VM (a VM whose restore failed launches a second one)."""

    process: subprocess.Popen[bytes]
    qmp: QMPConnection


class VM:
    """A live QEMU process you can run commands in, read the console of and talk QMP to.

    Create it with a :class:`MachineSpec` and call :meth:`start` (or use it as
    a context manager); the fixtures do both for you. :meth:`shutdown` or
    :meth:`kill` ends it; so does the death of the Python process.

    With a :class:`SnapshotStore`, the VM is restored from a saved boot of a
    VM with the same hardware when there is one (and saves one when there is
    not), then given its own settings through its command channel.
    """

    def __init__(
        self,
        spec: MachineSpec,
        log_dir: Path | None = None,
        boot_timeout: float = 120.0,
        snapshots: SnapshotStore | None = None,
        guest: Guest | None = None,
        gdb: bool = False,
    ) -> None:
        self.spec = spec
        self.boot_timeout = boot_timeout
        #: The kind of guest: it provides the command channel and the personalisation.
        self.guest = guest
        self._socket_dir = make_run_directory()
        self.log_dir = log_dir if log_dir is not None else self._socket_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._paths = RuntimePaths.in_directory(self._socket_dir, self.log_dir, gdb=gdb)
        self._channel = self._new_channel()
        self._setup_at_boot = guest is None or guest.reads_setup_from_kernel_command_line
        self._snapshot: Snapshot | None = None
        try:
            layout = device_layout(spec.devices) if snapshots is not None else None
            built = build_command_line(
                spec,
                self._paths,
                channel_args=self._channel.qemu_args(),
                # Settings go on the kernel command line unless the VM is personalised later.
                setup_on_kernel_command_line=layout is None and self._setup_at_boot,
            )
            if snapshots is not None and layout is not None:
                key = snapshot_key(
                    spec,
                    _which(spec.qemu_binary),
                    [*built.kernel_args, *(guest.snapshot_key_parts if guest else ())],
                    layout,
                )
                self._snapshot = snapshots.get(key)
            #: Why this VM boots instead of being cloned from a template (None if cloned).
            self.boot_reason: str | None = None
            if snapshots is None:
                self.boot_reason = "snapshots are off for this VM"
            elif layout is None:
                blocker = next(
                    d for d in spec.devices if d.snapshot_layout(DeviceContext()) is None
                )
                self.boot_reason = (
                    f"{blocker!r} cannot be carried into a clone (its guest-visible state is "
                    "not known before the VM starts)"
                )
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
        #: What happened to this VM, in order (also in ``transcript.log`` beside the console).
        self.transcript = Transcript(self.log_dir / "transcript.log")
        self.console = Console(self._paths.console_log, self._paths.console_socket, self.is_running)
        self._launched: _Launch | None = None
        #: The reason of QEMU's SHUTDOWN event ("guest-shutdown"...), once it came.
        self._shutdown_reason: str | None = None
        self._lifecycle_lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._started = False
        self._stopped = False
        #: Seconds from :meth:`start` until the VM was ready for commands.
        self.boot_seconds: float | None = None
        self._boot_setup_status = "-"
        #: The snapshot this VM was restored from, or None if it booted.
        self.restored_from: Path | None = None
        #: Whether this VM's start built the template it was cloned from.
        self.built_template = False

    # -- lifecycle --------------------------------------------------------------------------

    @concise_traceback
    def start(self) -> VM:
        """Start QEMU and wait until the guest's command channel answers."""
        if self._started:
            raise VMError("this VM was already started; create a new VM to start another")
        self._started = True
        started = time.monotonic()
        _live_vms.add(self)
        try:
            if self._snapshot is None:
                self._boot(started)
                if self._setup_at_boot:
                    self._check_boot_setup()
                else:
                    self._personalise()
            else:
                start_from_snapshot(self, self._snapshot, started)
        except BaseException as error:
            self.transcript.add(
                f"start failed after {time.monotonic() - started:.3f} s: "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            )
            self.kill()
            raise
        self.boot_seconds = time.monotonic() - started
        how = (
            f"cloned from template {self.restored_from.name}"
            if self.restored_from is not None
            else f"booted ({self.boot_reason})"
        )
        self.transcript.add(f"started: {how}, ready after {self.boot_seconds:.3f} s")
        if (command := self.gdb_command()) is not None:
            self.transcript.add(f"gdb stub: {command}")
        return self

    def _boot(self, started: float) -> None:
        """Launch QEMU on :attr:`argv` and wait for the channel, within the boot timeout."""
        self._launch(self.argv, console_prefix=None)
        self._wait_until_ready(started + self.boot_timeout, resumed=False)

    def _new_channel(self) -> CommandChannel:
        if self.guest is not None:
            return self.guest.channel(self._socket_dir)
        return AgentChannel(self._socket_dir)

    def _launch(
        self,
        argv: list[str],
        console_prefix: Path | None,
        pass_fds: tuple[int, ...] = (),
        events: Mapping[str, EventCallback] | None = None,
    ) -> None:
        """Start QEMU on *argv*: the lifecycle's three steps, each a hook of its own.

        *pass_fds* are inherited by QEMU; *events* are QMP events to listen for
        from the first moment of the QMP session.
        """
        environment = self._pre_launch(console_prefix)
        with self.stderr_log.open("wb") as stderr:
            try:
                process = spawn(argv, stderr=stderr, env=environment, pass_fds=pass_fds)
            except FileNotFoundError:
                raise SetupError(
                    f"QEMU binary {argv[0]!r} was not found: install it with "
                    f"`apt-get install {self.spec.platform.qemu_package}` or pass --qemu-binary"
                ) from None
        self._post_launch(process, events or {})

    def _pre_launch(self, console_prefix: Path | None) -> dict[str, str]:
        """Before QEMU starts: a fresh console log (a clone's starts with its template's
        boot); returns QEMU's environment."""
        with self._paths.console_log.open("wb") as console:
            if console_prefix is not None:
                with contextlib.suppress(OSError):
                    console.write(console_prefix.read_bytes())
                console.write(b"\n[pytest-qemu: restored from a snapshot]\n")
        # QEMU puts the throwaway overlays of disks (snapshot=on) in TMPDIR: keep them
        # with the VM's sockets, removed at teardown.
        return {**os.environ, "TMPDIR": str(self._socket_dir)}

    def _post_launch(
        self, process: subprocess.Popen[bytes], events: Mapping[str, EventCallback]
    ) -> None:
        """Once QEMU runs: its QMP session, listening for the channel's port events."""
        qmp = QMPConnection(f"vm-{process.pid}")
        self._shutdown_reason = None
        if self._channel.serial_port_id is not None:
            qmp.on_events(["VSERPORT_CHANGE"], self._on_serial_port_event)
        qmp.on_events(["SHUTDOWN"], self._on_shutdown_event)
        for name, callback in events.items():
            qmp.on_events([name], callback)
        self._launched = _Launch(process, qmp)
        wait = self._socket_wait()
        try:
            connection = connect_unix(
                self._paths.qmp_socket, time.monotonic() + wait, self.is_running
            )
            qmp.connect(connection, wait)
        except Exception as error:  # qemu.qmp raises AssertionError if QEMU hangs up early
            raise self._start_failure(
                f"cannot connect to QEMU's QMP socket within {wait:g} s ({_describe(error)})"
            ) from None

    def _socket_wait(self) -> float:
        """How long QEMU may take to answer on its sockets after it starts.

        Dozens of QEMUs starting at once on a few busy cores took longer than
        ``_SOCKET_WAIT`` to greet on QMP (16 tests at ``-n 16``, 3 VMs each): allow
        the boot timeout. A QEMU that exits ends the wait at once.
        """
        return max(_SOCKET_WAIT, self.boot_timeout)

    def _on_serial_port_event(self, name: str, data: dict[str, Any]) -> None:
        if data.get("id") == self._channel.serial_port_id:
            self._channel.guest_port_changed(bool(data.get("open")))

    def _wait_until_ready(self, deadline: float, resumed: bool) -> None:
        """Connect QMP and the channel and wait for the guest; a clear error if it fails.

        *resumed*: the guest was restored (it will not announce itself).
        """
        try:
            self._channel.connect(time.monotonic() + self._socket_wait(), self.is_running)
        except OSError as error:
            raise self._start_failure(
                f"cannot connect to the command channel's socket ({_describe(error)})"
            ) from None
        try:
            self._boot_setup_status = self._channel.wait_ready(deadline, resumed=resumed)
        except ChannelClosed as error:
            self._has_exited()  # so that the report shows QEMU's exit status
            raise VMExited(
                self.failure_report(f"QEMU exited while the VM was starting ({error})")
            ) from None
        except ChannelError as error:
            if self._has_exited():
                raise VMExited(
                    self.failure_report(f"QEMU exited while the VM was starting ({error})")
                ) from None
            raise BootTimeout(
                self.failure_report(
                    f"the guest did not come up within the boot timeout of {self.boot_timeout:g} s"
                    f" ({error})"
                    + (f"\n{self.guest.boot_timeout_hint}" if self.guest is not None else "")
                    + f"\n({troubleshooting('boot-timeout')})"
                )
            ) from None

    def _start_failure(self, headline: str) -> VMExited:
        if self._has_exited():
            headline = f"QEMU exited while the VM was starting: {headline}"
        return VMExited(self.failure_report(headline))

    def _personalise(self) -> None:
        """Give a restored (or snapshot-booted) guest its own clock, entropy and settings."""
        with_devices = bool(self.spec.devices)
        # The channel may have set the clock and added entropy while it waited for the guest.
        clock = not (self.restored_from is not None and self._channel.personalises_on_resume)
        if self.guest is not None:
            command = self.guest.personalise_command(self._setup_args, with_devices, clock)
        else:
            command = personalise_command(self._setup_args, with_devices, clock)
        if command:
            self._run_setup(command, stdin=os.urandom(64))

    def _run_setup(self, command: str, stdin: bytes = b"") -> None:
        """Run a set-up *command* in the guest's own root (not a userland it chroots into)."""
        request = CommandRequest(command, stdin=stdin, timeout=60, root="/")
        result: CommandResult = self._call(
            "set up the guest", lambda: self._channel.run(request), 60
        )
        if result.returncode != 0:
            raise GuestSetupError(self.failure_report(f"guest setup failed:\n{result.stderr}"))

    def _check_boot_setup(self) -> None:
        """Fail the start if the guest's init could not apply the VM's settings at boot."""
        if self._boot_setup_status in ("0", "-"):
            return
        self._run_setup(
            # A guest of the user's own may have no setup status to report.
            "[ -e /run/pytest-qemu/setup.status ] || exit 0; "
            "cat /run/pytest-qemu/setup.err >&2; exit $(cat /run/pytest-qemu/setup.status)"
        )

    def _has_exited(self) -> bool:
        """Whether QEMU has exited, allowing a moment for an exit already under way."""
        if self._launched is None:
            return False
        try:
            self._launched.process.wait(1.0)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _agent_back_or_vm_gone(self) -> bool:
        """After the agent's port closed: True once the agent answers again, False if
        QEMU is gone or going.

        A guest that powers off (``poweroff -f``, ``reboot -f`` under ``-no-reboot``)
        closes the port first and QEMU exits a moment later, a long moment on a busy
        host: wait for one or the other instead of guessing.
        """
        try:
            self._channel.settle(time.monotonic() + _AGENT_RETURN_WAIT)
        except ChannelError:
            pass  # closed (QEMU gone) or no answer: QEMU's state decides
        return self._shutdown_reason is None and not self._has_exited()

    def _on_shutdown_event(self, _name: str, data: dict[str, Any]) -> None:
        self._shutdown_reason = str(data.get("reason", "unknown"))

    def _exit_reason(self) -> str:
        """Why QEMU exited, in words: the guest's own power-off or reset, a signal..."""
        reason = self._shutdown_reason
        if reason == "guest-shutdown":
            return "the guest powered off (QEMU reported SHUTDOWN, reason guest-shutdown)"
        if reason == "guest-reset":
            return (
                "the guest rebooted (QEMU reported SHUTDOWN, reason guest-reset; VMs run with "
                "-no-reboot, so a reboot ends QEMU)"
            )
        if reason == "guest-panic":
            return "the guest kernel panicked (QEMU reported SHUTDOWN, reason guest-panic)"
        if reason is not None:
            return f"QEMU reported SHUTDOWN, reason {reason}"
        status = self.returncode
        if status is not None and status < 0:
            return f"QEMU was killed by signal {-status}"
        return f"QEMU exited with status {status}"

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the VM: QMP ``quit``, then kill it if that fails within *timeout*.

        A guest ``sync`` runs first only when a device keeps what the guest
        writes (a persistent :class:`Disk`): nothing else waits on the guest.
        """
        if self.is_running():
            assert self._launched is not None
            keeps_writes = any(device.keeps_guest_writes for device in self.spec.devices)
            if keeps_writes and self._command_lock.acquire(timeout=min(timeout, 5.0)):
                try:
                    self._channel.run(CommandRequest("sync", timeout=min(timeout, 5.0)))
                except (ChannelError, OSError):
                    pass
                finally:
                    self._command_lock.release()
            try:
                self._launched.qmp.execute("quit", None, timeout=min(timeout, 5.0))
            except Exception:
                pass
            try:
                self._launched.process.wait(timeout)
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
        self._post_shutdown()

    def _post_shutdown(self) -> None:
        """After QEMU is gone for good: close the connections, give back what the devices
        leased, remove the VM's private directory."""
        self._channel.close()
        self.console.close()
        for device in self.spec.devices:
            device.release()
        self._cleanup_files()
        _live_vms.discard(self)

    def _stop_process(self) -> None:
        launched = self._launched
        if launched is not None:
            if launched.process.poll() is None:
                launched.process.kill()
                launched.process.wait()
            launched.qmp.close()
        self._channel.close()
        # A fresh channel for a second launch (a restore that fell back to a boot).
        self._channel = self._new_channel()
        for path in self._socket_dir.glob("*.sock"):
            path.unlink(missing_ok=True)

    def _cleanup_files(self) -> None:
        # Without a log directory of its own, the console log lives here: keep it.
        if self.log_dir != self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def move_logs(self, destination: Path) -> None:
        """Move this VM's log directory to *destination* (absent, or an empty directory,
        on the same file system), while QEMU keeps writing to its open files."""
        if self.log_dir == self._socket_dir:
            raise VMError("this VM keeps its logs with its sockets: they cannot be moved")
        os.replace(self.log_dir, destination)
        self.log_dir = destination
        self._paths = dataclasses.replace(
            self._paths, console_log=destination / self._paths.console_log.name
        )
        self.stderr_log = destination / self.stderr_log.name
        self.transcript.path = destination / self.transcript.path.name
        self.console.log_path = self._paths.console_log

    def __enter__(self) -> VM:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # -- state --------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """QEMU's process id, once started."""
        return self._launched.process.pid if self._launched is not None else None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has exited, else None."""
        return self._launched.process.poll() if self._launched is not None else None

    def is_running(self) -> bool:
        """Whether the QEMU process is alive."""
        return self._launched is not None and self._launched.process.poll() is None

    @property
    def console_log(self) -> Path:
        """The file the serial console is logged to, from the first byte of boot."""
        return self._paths.console_log

    @property
    def gdb_socket(self) -> Path | None:
        """The gdb stub's UNIX socket (``--qemu-gdb``), or None."""
        return self._paths.gdb_socket

    def _release_qmp(self) -> None:
        """Close this process's QMP session, so that someone else can connect (keep-failed).
        The VM is then ended with SIGKILL instead of QMP ``quit``."""
        if self._launched is not None:
            self._launched.qmp.close()

    def gdb_command(self) -> str | None:
        """The command that attaches gdb to this VM's stub, or None without one.

        It names the kernel image for symbols: Debian's ``vmlinux`` with debug
        information when ``linux-image-*-dbg`` is installed, else the booted image.
        """
        if self._paths.gdb_socket is None:
            return None
        symbols = (self.guest.debug_symbols if self.guest is not None else None) or self.spec.kernel
        target = f"target remote {self._paths.gdb_socket}"
        return shlex.join(["gdb", "-ex", target, *([str(symbols)] if symbols else [])])

    @property
    def qmp_socket(self) -> Path:
        """QEMU's QMP socket (already in use by this VM; see :meth:`qmp`)."""
        return self._paths.qmp_socket

    # -- guest commands -----------------------------------------------------------------------

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
        _check_command_arguments(command, timeout, env, cwd, input)
        request = CommandRequest(
            command,
            stdin=input.encode() if isinstance(input, str) else bytes(input),
            timeout=timeout,
            env=dict(env or {}),
            cwd=cwd or (self.guest.default_cwd if self.guest is not None else ""),
            spill_dir=self.log_dir,
        )
        try:
            result: CommandResult = self._call(
                f"run {command!r}", lambda: self._channel.run(request), timeout
            )
        except CommandTimedOut as timed_out:
            result = timed_out.result
            self.transcript.command(
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
            self.transcript.command(command, f"refused: {refused}")
            raise CommandRefused(f"the guest could not run {command!r}: {refused}") from None
        except QemuError as error:
            self.transcript.command(command, f"{type(error).__name__}: {_first_line(error)}")
            raise
        self.transcript.command(
            command,
            f"exit status {result.returncode} in {result.duration:.3f} s",
            *result.summary(),
        )
        return result

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
        result = self.run(command, timeout=timeout, input=input, env=env, cwd=cwd)
        if result.returncode != 0:
            raise CommandFailed(
                command, result.returncode, _excerpt(result.stdout), _excerpt(result.stderr)
            )
        return result.stdout

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
        _check_timeout(timeout)
        source = Path(host_path)
        if not source.is_file():
            raise ConfigurationError(f"cannot copy {str(host_path)!r} to the guest: not a file")
        _check_guest_path(guest_path)
        bits = stat.S_IMODE(source.stat().st_mode) if mode is None else mode
        self._transfer(
            f"copy {source} to {guest_path} in the guest",
            lambda: self._channel.put(source, guest_path, bits, timeout),
            timeout,
        )

    @concise_traceback
    def get(
        self,
        guest_path: str,
        host_path: str | os.PathLike[str],
        timeout: float | None = 300.0,
    ) -> Path:
        """Copy the guest file *guest_path* to *host_path*, keeping its permission bits.

        Returns the host path. *host_path* may be an existing directory.
        """
        _check_timeout(timeout)
        _check_guest_path(guest_path)
        destination = Path(host_path)
        if destination.is_dir():
            destination = destination / Path(guest_path).name
        if not destination.parent.is_dir():
            raise ConfigurationError(
                f"cannot copy {guest_path} from the guest to {str(host_path)!r}: "
                f"{destination.parent} is not a directory"
            )
        self._transfer(
            f"copy {guest_path} from the guest to {destination}",
            lambda: self._channel.get(guest_path, destination, timeout),
            timeout,
        )
        return destination

    @concise_traceback
    def kernel_log(self, timeout: float | None = 30.0) -> str:
        """The guest kernel's log, as ``dmesg`` prints it.

        The default guest's agent reads it without starting a process in the
        guest; other channels run ``dmesg``.
        """
        action = "read the guest kernel's log"
        try:
            log: str | None = self._call(action, lambda: self._channel.kernel_log(timeout), timeout)
        except RequestRefused as refused:
            raise TransferFailed(f"cannot {action}: {refused}") from None
        if log is None:
            return self.check("dmesg", timeout=timeout)
        return log

    def _transfer(self, action: str, transfer: Any, timeout: float | None) -> None:
        try:
            self._call(action, transfer, timeout)
        except RequestRefused as refused:
            self.transcript.add(f"{action}: failed: {refused}")
            raise TransferFailed(f"cannot {action}: {refused}") from None
        except QemuError as error:
            self.transcript.add(f"{action}: {type(error).__name__}: {_first_line(error)}")
            raise
        self.transcript.add(f"{action}: done")

    def _call(self, action: str, call: Any, timeout: float | None) -> Any:
        """Run a channel request; turn channel errors into the errors users see.

        :class:`RequestRefused` and :class:`CommandTimedOut` pass through for
        the caller to word.
        """
        self._require_running(action)
        with self._command_lock:
            try:
                return call()
            except (CommandTimedOut, RequestRefused):
                raise
            except AgentGone as error:
                if not self._agent_back_or_vm_gone():
                    self.kill()
                    raise VMExited(
                        self.failure_report(
                            f"QEMU exited while trying to {action}: {self._exit_reason()}"
                        )
                    ) from None
                raise AgentDied(
                    self.failure_report(
                        f"the guest's command agent died while trying to {action} ({error}); "
                        "it restarts by itself, so the VM can run the next command. The console "
                        "shows why (an out-of-memory kill, a signal)"
                    )
                ) from None
            except ChannelClosed as error:
                self._has_exited()
                self.kill()
                raise VMExited(
                    self.failure_report(
                        f"QEMU exited while trying to {action}: {self._exit_reason()} ({error})"
                    )
                ) from None
            except NoReply:
                self.kill()
                limit = "" if timeout is None else f" within {timeout:g} s (plus a grace period)"
                raise GuestUnresponsive(
                    self.failure_report(
                        f"the guest did not answer{limit} while trying to {action}: "
                        "it is hung, and the VM was killed"
                    )
                ) from None

    # -- QMP ----------------------------------------------------------------------------------

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
        self._require_running(f"send QMP {command!r}")
        assert self._launched is not None
        merged = {**(arguments or {}), **keyword_arguments}
        try:
            answer = self._launched.qmp.execute(command, merged or None, timeout)
        except Exception as error:
            self.transcript.add(f"qmp {command} {merged or ''}: {type(error).__name__}: {error}")
            raise
        self.transcript.add(f"qmp {command} {merged or ''}: ok")
        return answer

    # -- reporting ----------------------------------------------------------------------------

    def _require_running(self, action: str) -> None:
        if not self.is_running():
            raise VMExited(self.failure_report(f"cannot {action}: the VM is not running"))

    def stderr_tail(self) -> str:
        """The end of what QEMU wrote to its stderr (its error messages)."""
        try:
            return self.stderr_log.read_text(errors="replace").strip()[-3000:]
        except OSError:
            return ""

    def failure_report(self, headline: str, argv: list[str] | None = None) -> str:
        """*headline* followed by what is needed to debug it: command line, stderr, console."""
        stderr = self.stderr_tail()
        status = self.returncode
        if stderr and (explanation := user_error(stderr)) is not None:
            headline += f"\nlikely cause: {explanation}"
        console_tail = self.console.tail(30)
        if panic := _PANIC.search(console_tail):
            headline += f"\nthe guest kernel panicked: {panic.group(0).strip()}"
        lines = [
            headline,
            f"QEMU exit status: {status}" if status is not None else "QEMU was running",
            f"command line: {shlex.join(argv or self.argv)}",
            f"QEMU stderr ({self.stderr_log}):\n{stderr or '(empty)'}",
            f"last console lines ({self.console_log}):\n{console_tail or '(empty)'}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<VM pid={self.pid} {state} devices={list(self.spec.devices)!r}>"


def _describe(error: BaseException) -> str:
    """*error* in words, even when its message is empty (a bare ``TimeoutError()``)."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


_EXCERPT_LIMIT = 10_000
_PANIC = re.compile(r"Kernel panic - not syncing:[^\n]*")


def _excerpt(text: str) -> str:
    """*text*, or its start and end if it is too long to put in an error message."""
    if len(text) <= _EXCERPT_LIMIT:
        return text
    half = _EXCERPT_LIMIT // 2
    return f"{text[:half]}\n[... {len(text) - _EXCERPT_LIMIT} characters ...]\n{text[-half:]}"


def _check_command_arguments(
    command: object, timeout: object, env: object, cwd: object, stdin: object = b""
) -> None:
    if not isinstance(command, str):
        raise ConfigurationError(f"a guest command must be a string, not {command!r}")
    if "\0" in command:
        raise ConfigurationError(f"guest command {command!r} contains a NUL character")
    _check_timeout(timeout)
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


def _check_timeout(timeout: object) -> None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf  # also refuses NaN
    ):
        raise ConfigurationError(
            f"timeout {timeout!r} is not valid: give a finite number of seconds above 0, "
            "or None for no limit"
        )


def _check_guest_path(path: object) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ConfigurationError(f"guest path {path!r} is not valid: give an absolute path")


def kill_all_vms() -> None:
    """Kill every VM this process started that is still running (last-resort cleanup)."""
    for vm in list(_live_vms):
        vm.kill()


atexit.register(kill_all_vms)
