"""What a start strategy drives: one VM's QEMU launches (the guest is then made ready by
:mod:`~pytest_qemu.vm.readiness`).

Modelled on QEMU's own ``QEMUMachine``: :meth:`Launcher.launch` runs the
override points :meth:`~Launcher._pre_launch` (a fresh console log, QEMU's
environment) and :meth:`~Launcher._post_launch` (the QMP session, listening for
the channel's port events) around the spawn. Each launch gets a fresh command
channel, since a restore that fails falls back to a boot in a second process.
A launcher can also :meth:`~Launcher.adopt` a QEMU that another launcher of the
same VM started ahead (the :mod:`prepared <pytest_qemu.vm.start.prepared>` start).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_qemu.channels.base import CommandChannel
from pytest_qemu.errors import SetupError, VMExited
from pytest_qemu.guests.base import Guest
from pytest_qemu.vm import process as qemu_process
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.commands import GuestCommands
from pytest_qemu.vm.console import Console
from pytest_qemu.vm.diagnose import describe, failure_report
from pytest_qemu.vm.plan import LaunchPlan, plan_launch
from pytest_qemu.vm.process import QemuProcess
from pytest_qemu.vm.qmp import EventCallback
from pytest_qemu.vm.rundir import RunFiles
from pytest_qemu.vm.snapshot import SnapshotStore
from pytest_qemu.vm.transcript import Transcript


class Launcher:
    """Launches QEMU for one VM and gets its guest ready (see the module's docstring).

    It holds the VM's files, console and transcript, its current
    :class:`QemuProcess` and command channel. Make one with :meth:`create`.
    """

    def __init__(
        self,
        guest: Guest,
        plan: LaunchPlan,
        files: RunFiles,
        channel: CommandChannel,
        boot_timeout: float,
        kill: Callable[[], None] | None = None,
    ) -> None:
        self.guest = guest
        self.plan = plan
        self.files = files
        self.boot_timeout = boot_timeout
        #: The serial console, logged from the first byte of each launch.
        self.console = Console(files.paths.console_log, files.paths.console_socket, self.is_running)
        #: What happened to the VM, in order.
        self.transcript = Transcript(files.transcript_log)
        #: The channel of the current launch.
        self.channel = channel
        #: The current QEMU process (None before the first launch).
        self.process: QemuProcess | None = None
        #: The command line of the current launch.
        self.argv: list[str] = list(plan.boot.argv)
        #: The guest's commands, through :attr:`channel`; *kill* ends the VM (by default,
        #: the current QEMU process).
        self.commands = GuestCommands(self, kill or self.stop_process)

    @classmethod
    def create(
        cls,
        spec: MachineSpec,
        guest: Guest,
        log_dir: Path | None,
        boot_timeout: float,
        snapshots: SnapshotStore | None = None,
        gdb: bool = False,
        kill: Callable[[], None] | None = None,
    ) -> Launcher:
        """The launcher of a new VM of *spec*: its run directory, channel and launch plan
        (cloned from *snapshots* when it can be), logging to *log_dir*."""
        files = RunFiles.create(log_dir, gdb)
        try:
            channel = guest.channel(files.socket_dir)
            plan = plan_launch(spec, files.paths, channel.qemu_args(), guest, snapshots)
        except BaseException:
            files.remove()
            raise
        return cls(guest, plan, files, channel, boot_timeout, kill)

    def launch(
        self,
        argv: list[str],
        console_prefix: Path | None = None,
        pass_fds: Sequence[int] = (),
        events: Mapping[str, EventCallback] | None = None,
    ) -> QemuProcess:
        """Start QEMU on *argv* and connect to its QMP socket.

        *console_prefix* starts the console log (a clone's starts with its
        template's boot); *pass_fds* are inherited by QEMU; *events* are QMP
        events listened for from the first moment of the session.
        """
        self.argv = argv
        environment = self._pre_launch(console_prefix)
        with self.files.stderr_log.open("wb") as stderr:
            try:
                events = {**self._channel_events(), **(events or {})}
                self.process = QemuProcess.start(argv, stderr, environment, pass_fds, events)
            except FileNotFoundError:
                raise SetupError(
                    f"QEMU binary {argv[0]!r} was not found: install it with `apt-get install "
                    f"{self.plan.spec.platform.qemu_package}` or pass --qemu-binary"
                ) from None
        self._post_launch(self.process)
        return self.process

    def _pre_launch(self, console_prefix: Path | None) -> dict[str, str]:
        """Before QEMU starts: a fresh console log; returns QEMU's environment."""
        with self.files.paths.console_log.open("wb") as console:
            if console_prefix is not None:
                with contextlib.suppress(OSError):
                    console.write(console_prefix.read_bytes())
                console.write(b"\n[pytest-qemu: restored from a snapshot]\n")
        # QEMU puts the throwaway overlays of disks (snapshot=on) in TMPDIR: keep them
        # with the VM's sockets, removed at teardown.
        return {**os.environ, "TMPDIR": str(self.files.socket_dir)}

    def _post_launch(self, process: QemuProcess) -> None:
        """Once QEMU runs: its QMP session."""
        wait = self.socket_wait
        try:
            process.connect_qmp(self.files.paths.qmp_socket, wait)
        except Exception as error:  # qemu.qmp raises AssertionError if QEMU hangs up early
            raise self.start_failure(
                f"cannot connect to QEMU's QMP socket within {wait:g} s ({describe(error)})"
            ) from None

    @property
    def socket_wait(self) -> float:
        """How long QEMU may take to answer on its sockets after it starts.

        Dozens of QEMUs starting at once on a few busy cores took longer than
        ``SOCKET_WAIT`` to greet on QMP (16 tests at ``-n 16``, 3 VMs each): allow
        the boot timeout. A QEMU that exits ends the wait at once.
        """
        return max(qemu_process.SOCKET_WAIT, self.boot_timeout)

    def _channel_events(self) -> dict[str, EventCallback]:
        """The QMP events the channel hears of: its serial port opening and closing."""
        channel = self.channel
        if channel.serial_port_id is None:
            return {}

        def port_changed(_name: str, data: dict[str, Any]) -> None:
            if data.get("id") == channel.serial_port_id:
                channel.guest_port_changed(bool(data.get("open")))

        return {"VSERPORT_CHANGE": port_changed}

    def stop_process(self) -> None:
        """Kill the current QEMU and close its channel; the next launch gets a new channel."""
        if self.process is not None:
            self.process.kill()
        self.channel.close()
        # A fresh channel for a second launch (a restore that fell back to a boot).
        self.channel = self.guest.channel(self.files.socket_dir)
        self.files.remove_sockets()

    def adopt(self, ahead: Launcher) -> None:
        """Take over the QEMU that *ahead*, a launcher of the same VM, started (its logs
        already moved into this launcher's log directory): its process, channel, run
        directory and transcript; this launcher's own run directory is removed."""
        self.channel.close()
        self.files.adopt(ahead.files)
        self.console.socket_path = self.files.paths.console_socket
        self.transcript.adopt(ahead.transcript)
        self.plan, self.channel, self.process = ahead.plan, ahead.channel, ahead.process
        self.argv = ahead.argv

    def move_logs(self, destination: Path) -> None:
        """Move the log directory to *destination* (absent, or an empty directory, on the
        same file system), while QEMU keeps writing to its open files."""
        self.files.move_logs(destination)
        self.transcript.path = self.files.transcript_log
        self.console.log_path = self.files.paths.console_log

    def close(self) -> None:
        """Once QEMU is gone: close the channel and the console, remove the run directory."""
        self.channel.close()
        self.console.close()
        self.files.remove()

    def is_running(self) -> bool:
        """Whether the current QEMU is alive."""
        return self.process is not None and self.process.is_running()

    def has_exited(self) -> bool:
        """Whether QEMU has exited, allowing a moment for an exit already under way."""
        return self.process is not None and self.process.has_exited()

    def stderr_tail(self) -> str:
        """The end of what QEMU wrote to its stderr (its error messages)."""
        try:
            return self.files.stderr_log.read_text(errors="replace").strip()[-3000:]
        except OSError:
            return ""

    def failure_report(self, headline: str, argv: list[str] | None = None) -> str:
        """*headline* and what is needed to debug it (see :func:`diagnose.failure_report`)."""
        return failure_report(
            headline,
            argv=argv or self.argv,
            status=self.process.returncode if self.process is not None else None,
            stderr=self.stderr_tail(),
            stderr_log=self.files.stderr_log,
            console_tail=self.console.tail(30),
            console_log=self.files.paths.console_log,
        )

    def start_failure(self, headline: str) -> VMExited:
        """The error of a start that failed at *headline*, saying whether QEMU exited."""
        if self.has_exited():
            headline = f"QEMU exited while the VM was starting: {headline}"
        return VMExited(self.failure_report(headline))
