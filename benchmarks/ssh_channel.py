"""OpenSSH's client over a control master against asyncssh, on one guest's sshd.

Run from a checkout after ./scripts/setup.sh, as root (the image build needs it):

    .venv/bin/python benchmarks/ssh_channel.py [--round-trips 50] [--megabytes 20]

Boots the stand-in cloud image (cloud-init sets up the user with the session's key)
with ``channel="ssh"``, then measures in the same run, against the same sshd:

- a login: ``ssh ... true`` without the master (a login and a command), against
  ``asyncssh.connect``;
- the round trip of ``true``: an ``ssh -S`` client multiplexed over a control
  master (a host process per command), against ``conn.run("true")`` on an open
  asyncssh connection (a new session each); then the same with the line the
  channel really sends (``timeout ... sh -c``), and ``vm.run("true")``;
- the time to move 20 MB of output (``head -c`` from ``/dev/zero``) each way.

The guest's side (sshd forking a session, the user's shell) is the same for both;
the difference is the host side.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pytest_qemu.cache import default_cache_dir
from pytest_qemu.channels.base import CommandRequest
from pytest_qemu.channels.shell import shell_runner
from pytest_qemu.channels.sshkeys import session_key
from pytest_qemu.guests.cloudinit import CloudInit
from pytest_qemu.guests.image import ImageGuest
from pytest_qemu.images import build_debian_image
from pytest_qemu.platforms import get_platform
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.machine import VM

MB = 1_000_000


def summary(label: str, times: list[float]) -> float:
    times = sorted(times)
    median = statistics.median(times)
    print(
        f"{label}: median {median * 1000:.1f} ms, min {times[0] * 1000:.1f}, "
        f"p90 {times[int(len(times) * 0.9)] * 1000:.1f} ({len(times)} runs)"
    )
    return median


def timed(function: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


async def async_timed(function: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await function()
        times.append(time.perf_counter() - started)
    return times


async def asyncssh_figures(port: int, user: str, repeat: int, megabytes: int) -> list[float]:
    import asyncssh

    key = str(session_key().private_key)
    started = time.perf_counter()
    connection = await asyncssh.connect(
        "127.0.0.1", port, username=user, client_keys=[key], known_hosts=None, agent_path=None
    )
    login = time.perf_counter() - started
    async with connection:
        for _ in range(5):  # warm up, as for the other client
            await connection.run("true")
        trips = await async_timed(lambda: connection.run("true"), repeat)
        line = shell_runner(CommandRequest("true"))
        lines = await async_timed(lambda: connection.run(line), repeat)
        summary("asyncssh, the channel's line", lines)
        started = time.perf_counter()
        result = await connection.run(f"head -c {megabytes * MB} /dev/zero", encoding=None)
        output = time.perf_counter() - started
        assert isinstance(result.stdout, bytes) and len(result.stdout) == megabytes * MB
    return [login, output, *trips]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=50)
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument(
        "--image", type=Path, help="a cloud image of your own (default: the stand-in)"
    )
    options = parser.parse_args()
    platform = get_platform()
    disk = options.image or build_debian_image(default_cache_dir(), cloud=True).disk
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-ssh-bench-") as scratch:
        work = Path(scratch)
        guest = ImageGuest(platform, disk, channel="ssh", cloud_init=CloudInit())
        devices = guest.devices([], work)
        spec = MachineSpec(kernel=None, devices=devices, platform=platform, memory=512)
        started = time.monotonic()
        with VM(spec, log_dir=work / "vm", boot_timeout=900, guest=guest) as vm:
            print(f"cold boot until SSH logs in (cloud-init's first boot): "
                  f"{time.monotonic() - started:.1f} s")  # fmt: skip
            forward = next(arg for arg in vm.argv if "hostfwd=" in arg)
            port = int(re.search(r"127\.0\.0\.1:(\d+)-", forward).group(1))  # type: ignore[union-attr]
            options_ = [
                "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none", "-i", str(session_key().private_key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-p", str(port), "-l", "pytest",
            ]  # fmt: skip
            fresh = ["ssh", *options_, "-o", "ControlPath=none", "127.0.0.1", "true"]
            summary("OpenSSH login + `true` without a master", timed(
                lambda: subprocess.run(fresh, check=True), 3))  # fmt: skip
            control = work / "ctl"
            master = subprocess.Popen(
                ["ssh", *options_, "-M", "-N", "-S", str(control), "127.0.0.1"]
            )
            while not control.exists():
                time.sleep(0.05)

            def mux(command: str) -> None:
                argv = ["ssh", *options_, "-S", str(control), "127.0.0.1", command]
                subprocess.run(argv, check=True, capture_output=True)

            line = shell_runner(CommandRequest("true"))
            for _ in range(5):
                mux("true")
            openssh = summary("OpenSSH client over a control master, `true`", timed(
                lambda: mux("true"), options.round_trips))  # fmt: skip
            summary("OpenSSH client over a control master, the channel's line", timed(
                lambda: mux(line), options.round_trips))  # fmt: skip
            summary("the channel as built: vm.run('true')", timed(
                lambda: vm.run("true"), options.round_trips))  # fmt: skip
            master.terminate()
            master.wait()
            started = time.perf_counter()
            result = vm.run(f"head -c {options.megabytes * MB} /dev/zero")
            channel_output = time.perf_counter() - started
            assert result.stdout_output.size == options.megabytes * MB
            try:
                figures = asyncio.run(
                    asyncssh_figures(port, "pytest", options.round_trips, options.megabytes)
                )
            except ImportError:
                print("asyncssh is not installed: `.venv/bin/pip install asyncssh`")
                return
            login, async_output, *trips = figures
            other = summary("asyncssh, conn.run('true') on an open connection", trips)
            print(f"round trip ratio OpenSSH/asyncssh: {openssh / other:.2f}")
            print(f"asyncssh login: {login * 1000:.1f} ms")
            print(
                f"{options.megabytes} MB of output: the channel (vm.run) {channel_output:.2f} s "
                f"({options.megabytes / channel_output:.1f} MB/s), asyncssh "
                f"{async_output:.2f} s ({options.megabytes / async_output:.1f} MB/s)"
            )


if __name__ == "__main__":
    main()
