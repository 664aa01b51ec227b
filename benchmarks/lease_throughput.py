"""Lease throughput of pytest_qemu.allocation with 1, 2, 4 and 8 concurrent processes.

Every process repeatedly leases a value and releases it (one "lease" below is
such a pair: two locked transactions on the shared state file) for a fixed
duration, all on one temporary state directory. Since every transaction holds
the one state lock, total throughput is expected to stay roughly flat as
processes are added, and per-process throughput to fall accordingly.

Run: .venv/bin/python benchmarks/lease_throughput.py [--duration SECONDS] [--kinds vm,tcp]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

try:
    from pytest_qemu.allocation import Allocator, Lease
except ImportError:  # not installed: use the source tree next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pytest_qemu.allocation import Allocator, Lease

KINDS = ("vm", "network", "tcp", "udp")
# Ports of the default range that the benchmark leases (and probes by binding).
PORT_RANGE = (20000, 32767)


def lease_one(allocator: Allocator, kind: str) -> Lease:
    if kind == "vm":
        return allocator.lease_vm_number("benchmark")
    if kind == "network":
        return allocator.lease_network_id("benchmark")
    return allocator.lease_port("tcp" if kind == "tcp" else "udp", "benchmark")


def worker(
    state_dir: str,
    kind: str,
    duration: float,
    barrier: Barrier,
    results: multiprocessing.Queue[tuple[int, float]],
) -> None:
    allocator = Allocator(Path(state_dir), port_range=PORT_RANGE, lock_timeout=60)
    lease_one(allocator, kind).release()  # warm up: imports, first file creation
    barrier.wait()
    count = 0
    start = time.monotonic()
    deadline = start + duration
    while time.monotonic() < deadline:
        lease_one(allocator, kind).release()
        count += 1
    results.put((count, time.monotonic() - start))


def measure(state_dir: Path, kind: str, processes: int, duration: float) -> float:
    """Total lease+release pairs per second of *processes* concurrent workers."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results: multiprocessing.Queue[tuple[int, float]] = context.Queue()
    workers = [
        context.Process(target=worker, args=(str(state_dir), kind, duration, barrier, results))
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    outcomes = [results.get(timeout=duration + 120) for _ in workers]
    for process in workers:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"a benchmark worker failed with exit code {process.exitcode}")
    # Workers overlap for the whole duration, so their rates add up.
    return sum(count / elapsed for count, elapsed in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=1.5, help="seconds per measurement (default 1.5)"
    )
    parser.add_argument(
        "--kinds",
        default="vm,tcp",
        help=f"comma-separated lease kinds to measure, of {','.join(KINDS)} (default vm,tcp)",
    )
    parser.add_argument("--processes", default="1,2,4,8", help="process counts (default 1,2,4,8)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in KINDS:
            parser.error(f"unknown kind {kind!r}: choose from {', '.join(KINDS)}")
    counts = [int(count) for count in args.processes.split(",")]

    with tempfile.TemporaryDirectory(prefix="pytest-qemu-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        print(f"state dir: {state_dir}  (CPUs: {os.cpu_count()}, {args.duration:g} s per row)")
        print("one lease = lease + release (two locked transactions on the state file)\n")
        header = f"{'kind':<8}{'processes':>10}{'total leases/s':>17}"
        header += f"{'per-process leases/s':>23}{'ratio to 1 process':>21}"
        print(header)
        print("-" * len(header))
        for kind in kinds:
            baseline: float | None = None
            for processes in counts:
                total = measure(state_dir, kind, processes, args.duration)
                baseline = baseline or (total if processes == 1 else None)
                ratio = f"{total / baseline:.2f}" if baseline else "-"
                print(
                    f"{kind:<8}{processes:>10}{total:>17,.0f}{total / processes:>23,.0f}"
                    f"{ratio:>21}",
                    flush=True,
                )
        left = Allocator(state_dir).leases()
        if left:
            raise SystemExit(f"leases left behind after the benchmark: {left}")


if __name__ == "__main__":
    main()
