"""Wall time of a VM-booting pytest suite run with pytest-xdist's -n 2 against -n 0.

Writes a temporary suite of N tests, each starting a VM (the ``qemu_vm``
fixture) and running one command in it, then times
``python -m pytest -p no:cacheprovider --qemu-accel=tcg -q`` on that suite with
``-n 0`` (no xdist) and with ``-n 2``, in the same invocation on the same
machine. The suite loads pytest-qemu and pytest-xdist only
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``): the development environment's other
plugins (pytest-html, allure-pytest... for this project's own tests) would
otherwise be imported by every pytest process and be timed as pytest-qemu's cost
(12% of the CPU time of the 20-test suite at ``-n 2``). With --repeat R each
setting runs R times, alternating which goes first so that a drifting machine
load favours neither. The speed-up is the
ratio of the median wall times, n0 / n2.

The default guest's kernel and initramfs are built (without booting anything)
before the first timed run, so no run pays for building them. Each run gets a
private lease state directory and temporary directory, removed at the end; a
run that fails, leaves a QEMU process behind or leaks a lease fails the benchmark.

Run: .venv/bin/python benchmarks/parallel_suite.py [--tests N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    from pytest_qemu.allocation import Allocator
except ImportError:  # not installed: use the source tree next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pytest_qemu.allocation import Allocator
from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.guests.default import DefaultGuest

WORKER_COUNTS = (0, 2)

SUITE = """\
import pytest


@pytest.mark.parametrize("index", range({tests}))
def test_boot_and_run(index, qemu_vm):
    assert qemu_vm.check("true") == ""
"""


@dataclass
class Timings:
    """The wall times of one -n setting, in seconds."""

    workers: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def qemu_pids(marker: str) -> list[int]:
    """The QEMU processes whose command line mentions *marker* (our temporary directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith(b"qemu-system") and any(
            marker.encode() in arg for arg in argv
        ):
            pids.append(int(entry.name))
    return pids


def other_qemu_count() -> int:
    """How many QEMU system emulators (of anyone) run on this host right now."""
    return len(qemu_pids(""))


def prepare_guest() -> None:
    """Build the default guest's files into the shared cache, as the first VM would."""
    guest = DefaultGuest(BuildCache(default_cache_dir()))
    guest.kernel_image()
    guest.initramfs([])


def run_suite(
    suite_dir: Path, workers: int, basetemp: Path, tests: int, extra_args: list[str]
) -> float:
    """Run the suite once with ``-n workers``; return its wall time in seconds."""
    command = [
        sys.executable, "-m", "pytest", "-p", "pytest_qemu.plugin", "-p", "xdist.plugin",
        "-p", "no:cacheprovider", "--qemu-accel=tcg", "-q",
        "-n", str(workers), f"--basetemp={basetemp}", *extra_args,
    ]  # fmt: skip
    timeout = 120 + 120 * tests
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=suite_dir,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise SystemExit(f"`{shlex.join(command)}` took more than {timeout} s: killed") from None
    elapsed = time.monotonic() - started
    text = output.decode(errors="replace")
    if process.returncode != 0 or f"{tests} passed" not in text:
        raise SystemExit(
            f"`{shlex.join(command)}` failed (exit code {process.returncode}):\n{text}"
        )
    return elapsed


def end_leftover_vms(marker: str) -> list[int]:
    """SIGKILL the QEMU processes our runs left behind (there should be none); return them."""
    leftovers = qemu_pids(marker)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tests", type=int, default=6, help="tests in the suite, one VM each (default 6)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed runs per -n setting (default 1)"
    )
    parser.add_argument(
        "--pytest-args",
        # VMs prepared ahead would let -n 0 use the second core too: this compares xdist.
        default="--qemu-prepare-ahead=off",
        help="more arguments for every pytest run, e.g. '--qemu-memory=512' "
        "(default --qemu-prepare-ahead=off)",
    )
    args = parser.parse_args()
    if args.tests < 1:
        parser.error("--tests must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    extra_args = shlex.split(args.pytest_args)

    prepare_guest()
    timings = {workers: Timings(workers) for workers in WORKER_COUNTS}
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-parallel-bench-") as tmp:
        root = Path(tmp)
        suite_dir = root / "suite"
        suite_dir.mkdir()
        (suite_dir / "test_vms.py").write_text(SUITE.format(tests=args.tests))
        state_dir = root / "state"
        state_dir.mkdir(mode=0o700)
        os.environ["PYTEST_QEMU_STATE_DIR"] = str(state_dir)

        print(
            f"{args.tests} tests, one TCG VM each; {args.repeat} timed run(s) per setting; "
            f"CPUs: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}; "
            f"other QEMU processes running: {other_qemu_count()}"
        )
        try:
            for repeat in range(args.repeat):
                # Alternate the order, so that neither setting always runs first.
                order = WORKER_COUNTS if repeat % 2 == 0 else WORKER_COUNTS[::-1]
                for workers in order:
                    basetemp = root / f"run-n{workers}-{repeat}"
                    seconds = run_suite(suite_dir, workers, basetemp, args.tests, extra_args)
                    timings[workers].seconds.append(seconds)
                    print(f"  run {repeat + 1}: -n {workers}: {seconds:6.1f} s", flush=True)
                    leftovers = end_leftover_vms(tmp)
                    if leftovers:
                        raise SystemExit(f"the -n {workers} run left QEMU running: {leftovers}")
        finally:
            end_leftover_vms(tmp)
        leases = Allocator(state_dir).leases()
        if leases:
            raise SystemExit(f"leases left behind by the runs: {leases}")
        print(f"  load average after: {os.getloadavg()[0]:.2f}\n")

    header = f"{'setting':<8}{'runs':>6}{'median s':>10}{'min s':>8}{'max s':>8}{'s per VM':>10}"
    print(header)
    print("-" * len(header))
    for workers, timing in timings.items():
        print(
            f"{'-n ' + str(workers):<8}{len(timing.seconds):>6}{timing.median:>10.1f}"
            f"{min(timing.seconds):>8.1f}{max(timing.seconds):>8.1f}"
            f"{timing.median / args.tests:>10.1f}"
        )
    speedup = timings[0].median / timings[2].median
    print(f"\nspeed-up of -n 2 over -n 0 (median n0 / median n2): {speedup:.2f}x")


if __name__ == "__main__":
    main()
