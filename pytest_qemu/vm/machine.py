"""A virtual machine's lifecycle: start, shutdown, kill, its state. The work is done around
it: launch plan (:mod:`.plan`), start strategies (:mod:`.start`), QEMU launches
(:mod:`.launcher`, :mod:`.process`, :mod:`.readiness`), QMP and guest commands
(:mod:`.commands`, whose :class:`~pytest_qemu.vm.commands.CommandMethods` gives the VM
``qmp``, ``run``, ``check``, ``put``, ``get`` and ``kernel_log``)."""

from __future__ import annotations

import atexit
import shlex
import threading
import time
import weakref
from pathlib import Path

from pytest_qemu.errors import VMError, concise_traceback
from pytest_qemu.guests.base import Guest
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.commands import CommandMethods, GuestCommands, first_line
from pytest_qemu.vm.launcher import Launcher
from pytest_qemu.vm.plan import LaunchPlan
from pytest_qemu.vm.snapshot import SnapshotStore
from pytest_qemu.vm.start import StartStrategy, strategy_for

_live_vms: weakref.WeakSet[VM] = weakref.WeakSet()


class VM(CommandMethods):
    """A live QEMU process you can run commands in, read the console of and talk QMP to.

    Create it with a :class:`MachineSpec` and call :meth:`start` (or use it as
    a context manager); the fixtures do both for you. :meth:`shutdown` or
    :meth:`kill` ends it; so does the death of the Python process.

    *guest* is the kind of guest (default: one that boots the spec's kernel and
    initramfs and runs pytest-qemu's agent). With a :class:`SnapshotStore`, the
    VM is cloned from a template of a VM with the same hardware when there is
    one (and builds one when there is not), then given its own settings.
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
        if guest is None:
            from pytest_qemu.guests.agent import AgentGuest

            guest = AgentGuest(spec.platform)
        self.spec = spec
        self.boot_timeout = boot_timeout
        #: The kind of guest: it provides the command channel and the personalisation.
        self.guest = guest
        try:
            launcher = Launcher.create(
                spec, guest, log_dir, boot_timeout, snapshots, gdb, kill=self.kill
            )
        except BaseException:
            # No VM will exist to free these at teardown.
            for device in spec.devices:
                device.release()
            raise
        self._launcher = launcher
        #: Its run directory and logs; what happened to it, in order (also in
        #: ``transcript.log`` beside the console); its serial console.
        self.files, self.transcript, self.console = (
            launcher.files,
            launcher.transcript,
            launcher.console,
        )
        #: The guest's commands (:meth:`run`, :meth:`check`...), through its channel.
        self.commands: GuestCommands = launcher.commands
        #: QEMU's command line (a clone's, once started) and the kernel's.
        self.argv, self.kernel_args = list(self.plan.boot.argv), self.plan.boot.kernel_args
        #: Why it booted instead of being cloned (None if cloned); the template it was
        #: cloned from (None if it booted); whether its start built that template;
        #: whether it was started ahead, while an earlier test ran.
        self.boot_reason: str | None = self.plan.boot_reason
        self.restored_from: Path | None = None
        self.built_template = self.prepared_ahead = False
        #: Seconds from :meth:`start` until the VM was ready for commands.
        self.boot_seconds: float | None = None
        self._lifecycle_lock = threading.Lock()
        self._started = self._stopped = False

    @property
    def plan(self) -> LaunchPlan:
        """How it is launched: command line, template (``plan.snapshot``), why it boots."""
        return self._launcher.plan

    @concise_traceback
    def start(self, strategy: StartStrategy | None = None) -> VM:
        """Start QEMU and wait until the guest's command channel answers; *strategy* is
        how (by default the plan's: clone its template, or boot)."""
        if self._started:
            raise VMError("this VM was already started; create a new VM to start another")
        self._started = True
        started = time.monotonic()
        _live_vms.add(self)
        try:
            strategy = strategy or strategy_for(self.plan)
            outcome = strategy.start(self._launcher, started)
        except BaseException as error:
            self.transcript.add(
                f"start failed after {time.monotonic() - started:.3f} s: "
                f"{type(error).__name__}: {first_line(error)}"
            )
            self.kill()
            raise
        self.argv, self.restored_from = outcome.argv, outcome.restored_from
        self.built_template, self.boot_reason = outcome.built_template, outcome.boot_reason
        self.prepared_ahead = outcome.prepared_ahead
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

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the VM: QMP ``quit``, then kill it if that fails within *timeout*.

        A guest ``sync`` runs first only when a device keeps what the guest
        writes (a persistent :class:`Disk`): nothing else waits on the guest.
        """
        process = self._launcher.process
        if process is not None and process.is_running():
            if any(device.keeps_guest_writes for device in self.spec.devices):
                self._launcher.commands.sync(min(timeout, 5.0))
            process.stop(timeout)
        self.kill()

    def kill(self) -> None:
        """End QEMU at once with SIGKILL and free everything the VM held. Idempotent."""
        with self._lifecycle_lock:
            if self._stopped:
                return
            self._stopped = True
        self._launcher.stop_process()
        self._post_shutdown()

    def _post_shutdown(self) -> None:
        """Once QEMU is gone: close the connections, free the devices' leases and files."""
        self._launcher.close()
        for device in self.spec.devices:
            device.release()
        _live_vms.discard(self)

    def release_qmp(self) -> None:
        """Close this VM's QMP session, so that someone else can connect (keep-failed).
        The VM is then ended with SIGKILL instead of QMP ``quit``."""
        if self._launcher.process is not None:
            self._launcher.process.qmp.close()

    def __enter__(self) -> VM:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        """QEMU's process id, once started."""
        process = self._launcher.process
        return process.pid if process is not None else None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has exited, else None."""
        process = self._launcher.process
        return process.returncode if process is not None else None

    def is_running(self) -> bool:
        """Whether the QEMU process is alive."""
        return self._launcher.is_running()

    @property
    def log_dir(self) -> Path:
        """Where this VM's logs are: console, QEMU's stderr, transcript."""
        return self.files.log_dir

    @property
    def stderr_log(self) -> Path:
        """The file QEMU's stderr goes to."""
        return self.files.stderr_log

    @property
    def console_log(self) -> Path:
        """The file the serial console is logged to, from the first byte of boot."""
        return self.files.paths.console_log

    @property
    def qmp_socket(self) -> Path:
        """QEMU's QMP socket (already in use by this VM; see :meth:`qmp`)."""
        return self.files.paths.qmp_socket

    @property
    def gdb_socket(self) -> Path | None:
        """The gdb stub's UNIX socket (``--qemu-gdb``), or None."""
        return self.files.paths.gdb_socket

    def gdb_command(self) -> str | None:
        """The command that attaches gdb to this VM's stub, or None without one.

        It names the kernel image for symbols: Debian's ``vmlinux`` with debug
        information when ``linux-image-*-dbg`` is installed, else the booted image.
        """
        if self.gdb_socket is None:
            return None
        symbols = self.guest.debug_symbols or self.spec.kernel
        return shlex.join(self.spec.platform.gdb_command(self.gdb_socket, symbols))

    def stderr_tail(self) -> str:
        """The end of what QEMU wrote to its stderr (its error messages)."""
        return self._launcher.stderr_tail()

    def failure_report(self, headline: str, argv: list[str] | None = None) -> str:
        """*headline* followed by what is needed to debug it: command line, stderr, console."""
        return self._launcher.failure_report(headline, argv or self.argv)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<VM pid={self.pid} {state} devices={list(self.spec.devices)!r}>"


def kill_all_vms() -> None:
    """Kill every VM this process started that is still running (last-resort cleanup)."""
    for vm in list(_live_vms):
        vm.kill()


atexit.register(kill_all_vms)
