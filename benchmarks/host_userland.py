"""The host's userland in a clone against the host itself, side by side in one run.

Run from a checkout after ./scripts/setup.sh (it downloads one sdist from PyPI):

    .venv/bin/python benchmarks/host_userland.py [--repeat 3] [--project six==1.17.0]

Each workload runs with this checkout's venv Python on the host and in a
``userland="host"`` VM cloned from a template, warm (after a first run whose
figure is printed too): pure Python CPU work (the emulation floor), a
``import pytest``, and a real project's own test suite taken from its sdist
(``pip download --no-binary :all: --no-deps``), run from a directory that is
not shared read-write, as a checkout would be. ``/ cpu`` divides a ratio by
the CPU work's ratio: what file access adds on top of emulating the CPU.

Then two busy processes at once against one, in clones with ``cpus=1`` and
``cpus=2``: with multi-threaded TCG the second vCPU is a second host thread. The
host's line (ten times the work) shows how far the machine itself runs two at once:
a guest cannot do better.

The machine's load average is printed at start and end: under load, TCG
suffers more than the host (each of QEMU's threads waits for a core), so
compare ratios from one run, never absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore

PYTHON = sys.executable
BUSY = f"{PYTHON} -c 'sum(range(3 * 10**6))'"
#: The host runs ten times the work: long enough for two at once to show how many
#: cores the machine really gives (a busy host shares them with its neighbours).
HOST_BUSY = f"{PYTHON} -c 'sum(range(3 * 10**7))'"


def seconds(action: Callable[[], object]) -> float:
    """Wall-clock seconds *action* takes."""
    started = time.monotonic()
    action()
    return time.monotonic() - started


def on_host(command: str) -> float:
    """Seconds *command* takes in a shell on the host; it must succeed."""
    return seconds(lambda: subprocess.run(command, shell=True, check=True, capture_output=True))


def in_guest(vm: VM, command: str) -> float:
    """Seconds *command* takes in *vm*; it must succeed."""
    return seconds(lambda: vm.check(command, timeout=1800))


def unpack_sdist(project: str, directory: Path) -> Path:
    """The unpacked sdist of *project* (``name`` or ``name==version``) under *directory*."""
    subprocess.run(
        [PYTHON, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
         "-d", str(directory), project],
        check=True,
    )  # fmt: skip
    (archive,) = directory.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    (tree,) = (path for path in directory.iterdir() if path.is_dir())
    return tree


def load() -> str:
    """The host's load averages over 1, 5 and 15 minutes."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def compare(vm: VM, workloads: dict[str, str], repeat: int) -> None:
    """Print host and guest times of each workload, their ratio, and it over the CPU's."""
    heads = ("host", 7), ("guest 1st", 10), ("guest", 7), ("ratio", 6), ("/ cpu", 6)
    print(f"{'workload':24s}", *(f"{head:>{width}s}" for head, width in heads))
    cpu_ratio = 0.0
    for name, command in workloads.items():
        host = statistics.median(on_host(command) for _ in range(repeat))
        first = in_guest(vm, command)
        guest = statistics.median(in_guest(vm, command) for _ in range(repeat))
        ratio = guest / host
        cpu_ratio = cpu_ratio or ratio
        print(
            f"{name:24s} {host:6.2f}s {first:9.2f}s {guest:6.2f}s {ratio:5.1f}x "
            f"{ratio / cpu_ratio:5.2f}",
            flush=True,
        )


def parallel(factory: VMFactory, repeat: int) -> None:
    """Print one busy process against two at once, with one vCPU and with two."""
    two_at_once = f"{BUSY} & {BUSY} & wait"
    host_one = statistics.median(on_host(HOST_BUSY) for _ in range(repeat))
    host_two = statistics.median(
        on_host(f"{HOST_BUSY} & {HOST_BUSY} & wait") for _ in range(repeat)
    )
    print(f"{'':24s} {'one busy':>9s} {'two at once':>12s} {'two / one':>10s}")
    print(f"{'host':24s} {host_one:8.2f}s {host_two:11.2f}s {host_two / host_one:9.2f}")
    for cpus in (1, 2):
        factory(userland="host", cpus=cpus).kill()  # the template
        vm = factory(userland="host", cpus=cpus)
        in_guest(vm, two_at_once)  # translates python3's code in this QEMU
        one = statistics.median(in_guest(vm, BUSY) for _ in range(repeat))
        two = statistics.median(in_guest(vm, two_at_once) for _ in range(repeat))
        vm.kill()
        print(f"{f'clone, cpus={cpus}':24s} {one:8.2f}s {two:11.2f}s {two / one:9.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="samples per figure (default 3)")
    parser.add_argument(
        "--project", default="six==1.17.0", help="the sdist whose suite runs (default six)"
    )
    parser.add_argument(
        "--tests", default="", help="pytest arguments for its suite (default: its own config)"
    )
    options = parser.parse_args()
    print(f"load average at start: {load()} ({os.cpu_count()} cores)")
    session = QemuSession(QemuSettings.defaults(accel="tcg"))
    with (
        tempfile.TemporaryDirectory(prefix="pytest-qemu-userland-") as scratch,
        tempfile.TemporaryDirectory(prefix="pytest-qemu-sdist-") as sdist,
    ):
        work = Path(scratch)
        # The project is not shared read-write: the guest reads it through the host's
        # root, as it would a checkout, and keeps its .pyc files in guest memory.
        project = unpack_sdist(options.project, Path(sdist))
        suite = (
            f"cd {shlex.quote(str(project))} && "
            f"{PYTHON} -m pytest -q -p no:cacheprovider {options.tests}"
        )
        factory = VMFactory(
            session, work / "logs", SnapshotStore(work / "snapshots"), shared_directories=[work]
        )
        try:
            factory(userland="host").kill()  # builds the template
            vm = factory(userland="host")
            assert vm.restored_from is not None
            print(f"TCG, clone of a template, medians of {options.repeat} warm runs:")
            compare(
                vm,
                {
                    "cpu: sum(range(3e6))": BUSY,
                    "import pytest": f"{PYTHON} -c 'import pytest'",
                    f"suite: {project.name}": suite,
                },
                options.repeat,
            )
            vm.kill()
            parallel(factory, options.repeat)
        finally:
            factory.close()
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
