"""``--qemu-keep-failed``: a failed test's VMs stay up for you to look into."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import pytest

from pytest_qemu.vm.machine import VM


def keep_alive(config: pytest.Config, vms: Sequence[VM], test: str) -> None:
    """Say how to reach each running VM of the failed *test*; with a terminal, wait for
    Enter (as ``--pdb`` does). The caller tears the VMs down afterwards, also on Ctrl-C."""
    running = [vm for vm in vms if vm.is_running()]
    if not running:
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        out = sys.stderr
        out.write(f"\npytest-qemu: {test} failed; its VMs are kept running:\n")
        for index, vm in enumerate(running):
            # Let go of the sockets that take one client, so that you can connect.
            vm.console.close()
            vm.release_qmp()
            console = vm.console.socket_path
            out.write(
                f"  vm{index} (QEMU pid {vm.pid}, logs in {vm.log_dir}):\n"
                f"    shell on the console: python -m pytest_qemu console {console}\n"
                f"    QMP: {vm.qmp_socket} (e.g. qmp-shell {vm.qmp_socket})\n"
                + (f"    gdb: {command}\n" if (command := vm.gdb_command()) else "")
            )
        if sys.stdin is not None and sys.stdin.isatty():
            out.write("pytest-qemu: press Enter to end them and go on ")
            out.flush()
            with contextlib.suppress(EOFError):
                sys.stdin.readline()
        else:
            out.write("pytest-qemu: no terminal to wait on: ending them now\n")
        out.flush()
