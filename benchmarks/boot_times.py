"""How fast a test gets a ready VM: raw QEMU boots against pytest-qemu's cold boots and restores.

Run from a checkout after ./scripts/setup.sh:

    .venv/bin/python benchmarks/boot_times.py [--repeat 5] [--suite-tests 20]

Everything is measured in the same run on the same machine, so compare the
ratios: this machine is shared and noisy. Prints medians with min-max.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from parallel_suite import SUITE, run_suite  # benchmarks/ is on sys.path when run as a script

from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.guests.default import DefaultGuest, default_kernel_args
from pytest_qemu.platforms import get_platform
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore

USERLAND_MARKER = b"pytest-qemu: guest ready"
#: The modules a "full" initramfs carries, as a hand-written one would: every device's.
ALL_MODULES = ["virtio_net", "virtio_blk", "virtio_rng", "9p", "9pnet_virtio", "vfat"]


def time_to_console_line(argv: list[str], marker: bytes, timeout: float = 120) -> float:
    """Seconds from starting *argv* until *marker* appears on its stdout (the serial console)."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    output = b""
    try:
        while marker not in output:
            remaining = started + timeout - time.monotonic()
            if remaining <= 0 or not select.select([process.stdout], [], [], remaining)[0]:
                raise RuntimeError(f"{marker!r} did not appear within {timeout} s")
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"QEMU exited before printing {marker!r}")
            output += chunk
        return time.monotonic() - started
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def raw_argv(kernel: Path, initramfs: Path, fast: bool) -> list[str]:
    common = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "256",
        "-display",
        "none",
        "-serial",
        "stdio",
    ]
    common += ["-kernel", str(kernel), "-initrd", str(initramfs), "-no-reboot"]
    lean = ["-machine", "pc", "-nodefaults", "-no-user-config"] if fast else ["-machine", "pc"]
    return [*common, *lean, "-append", " ".join(default_kernel_args(get_platform()))]


def measure(label: str, repeat: int, sample: Callable[[], float]) -> list[float]:
    values = []
    for _ in range(repeat):
        values.append(sample())
    print(f"  {label}: {summary(values)}", flush=True)
    return values


def summary(values: list[float]) -> str:
    median = statistics.median(values)
    return f"median {median:.3f} s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def start_vm(guest: DefaultGuest, log_root: Path, snapshots: SnapshotStore | None) -> VM:
    spec = MachineSpec(
        kernel=guest.kernel_image(),
        initramfs=guest.initramfs([]),
        kernel_args=default_kernel_args(get_platform()),
    )
    return VM(spec, log_dir=Path(tempfile.mkdtemp(dir=log_root)), snapshots=snapshots).start()


def timed_start(
    guest: DefaultGuest, log_root: Path, snapshots: SnapshotStore | None, command: bool = False
) -> float:
    """Seconds until a VM is ready (and, with *command*, has run its first command)."""
    started = time.monotonic()
    vm = start_vm(guest, log_root, snapshots)
    if command:
        vm.check("true")
    elapsed = time.monotonic() - started
    vm.kill()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="samples per measurement (default 5)")
    parser.add_argument("--suite-tests", type=int, default=20, help="tests in the suite of step 6")
    parser.add_argument("--suite-repeat", type=int, default=1, help="runs of the suite at each -n")
    arguments = parser.parse_args()

    guest = DefaultGuest(BuildCache(default_cache_dir()))
    host_kernel = guest.host_kernel.image
    work = Path(tempfile.mkdtemp(prefix="pytest-qemu-bench-"))
    try:
        full_initramfs = guest.initramfs(ALL_MODULES)
        lean_initramfs = guest.initramfs([])
        version = subprocess.run(
            ["qemu-system-x86_64", "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0]
        print(f"QEMU: {version}")
        print(
            f"kernel: {host_kernel} (booted as {guest.kernel_image().name} by the plugin), "
            "accelerator: tcg"
        )
        print("measurements:")
        plain = measure(
            "1. raw QEMU, plain boot (vmlinuz, pc, full initramfs) to userland",
            arguments.repeat,
            lambda: time_to_console_line(
                raw_argv(host_kernel, full_initramfs, fast=False), USERLAND_MARKER
            ),
        )
        fast = measure(
            "2. raw QEMU, fastest cold boot (PVH vmlinux, -nodefaults, lean initramfs) to userland",
            arguments.repeat,
            lambda: time_to_console_line(
                raw_argv(guest.kernel_image(), lean_initramfs, fast=True), USERLAND_MARKER
            ),
        )
        cold = measure(
            "3. pytest-qemu VM, cold boot, ready for vm.run",
            arguments.repeat,
            lambda: timed_start(guest, work, None),
        )
        store = SnapshotStore(work / "snapshots")
        timed_start(guest, work, store)  # builds the snapshot
        restored = measure(
            "4. pytest-qemu VM, cloned from a template, ready for vm.run",
            arguments.repeat,
            lambda: timed_start(guest, work, store),
        )
        first_command = measure(
            "4b. pytest-qemu VM, cloned from a template, first command done",
            arguments.repeat,
            lambda: timed_start(guest, work, store, command=True),
        )
        vm = start_vm(guest, work, store)
        round_trips = []
        for _ in range(max(50, arguments.repeat)):
            started = time.monotonic()
            vm.run("true")
            round_trips.append(time.monotonic() - started)
        vm.kill()
        print(f"  5. vm.run('true') round trip: {summary(round_trips)}")

        suite = work / "suite"
        suite.mkdir()
        (suite / "test_suite.py").write_text(SUITE.format(tests=arguments.suite_tests))
        tests = arguments.suite_tests

        def time_suite(workers: int, prepare_ahead: str = "off") -> float:
            return run_suite(
                suite,
                workers,
                work / f"basetemp-{workers}-{prepare_ahead}",
                tests,
                [f"--qemu-prepare-ahead={prepare_ahead}"],
            )

        cpus = len(os.sched_getaffinity(0))
        time_suite(0)  # builds the suite's snapshot
        serial = measure(
            f"6a. {tests}-test qemu_vm suite, -n 0",
            arguments.suite_repeat,
            lambda: time_suite(0),
        )
        parallel = measure(
            f"6b. {tests}-test qemu_vm suite, -n 2",
            arguments.suite_repeat,
            lambda: time_suite(2),
        )
        ahead = measure(
            f"6c. {tests}-test qemu_vm suite, -n 0, --qemu-prepare-ahead=auto ({cpus} on "
            f"{cpus} CPUs)",
            arguments.suite_repeat,
            lambda: time_suite(0, "auto"),
        )
        parallel_ahead = measure(
            f"6d. {tests}-test qemu_vm suite, -n 2, --qemu-prepare-ahead=1",
            arguments.suite_repeat,
            lambda: time_suite(2, "1"),
        )

        median = statistics.median
        print("ratios:")
        print(
            "  3/2 plugin cold boot over the fastest raw boot: "
            f"{median(cold) / median(fast):.2f} (target <= 1.10)"
        )
        print(
            "  4/1 template clone over a plain boot: "
            f"{median(restored) / median(plain):.3f} (target <= 0.030); "
            f"4 itself {median(restored):.3f} s (target <= 0.10), "
            f"4b {median(first_command):.3f} s (target <= 0.15)"
        )
        sequential = arguments.suite_tests * median(plain)
        print(
            f"  6b over {arguments.suite_tests} plain boots one after another "
            f"({sequential:.1f} s): "
            f"{median(parallel) / sequential:.3f} (target <= {1 / 40:.3f})"
        )
        print(
            f"  6c over the same: {median(ahead) / sequential:.3f}; speed-up of preparing ahead "
            f"without xdist (6a/6c): {median(serial) / median(ahead):.2f}"
        )
        print(f"  6a/6b speed-up of -n 2 over -n 0: {median(serial) / median(parallel):.2f}")
        print(
            "  6d/6b preparing one VM ahead under -n 2 (no CPU left free): "
            f"{median(parallel_ahead) / median(parallel):.2f} (above 1: slower)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
