"""How fast commands and their output travel between the host and the default guest.

Run from a checkout after ./scripts/setup.sh:

    .venv/bin/python benchmarks/command_channel.py [--round-trips 200] [--megabytes 20 100 200]

Boots one VM under TCG, then measures in the same run: the round trip of
``vm.run("true")`` (median, with min and 90th percentile), command output
throughput in MB/s for each size (``dd`` from ``/dev/zero``, so the guest
side costs almost nothing), input throughput, file transfer with ``put`` and
``get``, and the host's peak memory growth while a large output streams.
Targets (issue 7): round trip at most 5 ms, output at least 20 MB/s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.guests.default import DefaultGuest, default_kernel_args
from pytest_qemu.platforms import get_platform
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.machine import VM

MB = 1_000_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--megabytes", type=int, nargs="+", default=[20, 100, 200])
    options = parser.parse_args()

    guest = DefaultGuest(BuildCache(default_cache_dir()))
    spec = MachineSpec(
        kernel=guest.kernel_image(),
        initramfs=guest.initramfs([]),
        kernel_args=default_kernel_args(get_platform()),
    )
    with tempfile.TemporaryDirectory() as scratch, VM(spec, log_dir=Path(scratch)) as vm:
        for _ in range(20):  # warm up: TCG translates the agent's and sh's code once
            vm.run("true")
        times = []
        for _ in range(options.round_trips):
            started = time.perf_counter()
            vm.run("true")
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        print(
            f"round trip of vm.run('true'): median {statistics.median(times):.2f} ms, "
            f"min {times[0]:.2f}, p90 {times[int(len(times) * 0.9)]:.2f} "
            f"({options.round_trips} runs; target <= 5 ms, "
            f"ratio {statistics.median(times) / 5:.2f})"
        )
        for megabytes in options.megabytes:
            before = peak_rss_mb()
            started = time.perf_counter()
            result = vm.run(
                f"dd if=/dev/zero bs=65536 count={megabytes * MB // 65536} 2>/dev/null", timeout=600
            )
            elapsed = time.perf_counter() - started
            size = result.stdout_output.size
            kept = "a file" if result.stdout_output.spilled else "memory"
            print(
                f"output {size / MB:.0f} MB: {elapsed:.2f} s, {size / MB / elapsed:.1f} MB/s "
                f"(target >= 20, ratio {size / MB / elapsed / 20:.2f}); host peak RSS grew "
                f"{peak_rss_mb() - before:.1f} MB; kept in {kept}"
            )
        payload = os.urandom(20 * MB)
        started = time.perf_counter()
        echoed = vm.run("wc -c", input=payload)
        elapsed = time.perf_counter() - started
        print(
            f"input 20 MB: {elapsed:.2f} s, {20 / elapsed:.1f} MB/s ({echoed.stdout.strip()} bytes)"
        )
        source = Path(scratch) / "payload"
        source.write_bytes(payload)
        started = time.perf_counter()
        vm.put(source, "/tmp/payload")
        put_seconds = time.perf_counter() - started
        started = time.perf_counter()
        back = vm.get("/tmp/payload", Path(scratch) / "back")
        get_seconds = time.perf_counter() - started
        assert back.read_bytes() == payload
        print(f"put 20 MB: {20 / put_seconds:.1f} MB/s; get 20 MB: {20 / get_seconds:.1f} MB/s")


if __name__ == "__main__":
    main()
