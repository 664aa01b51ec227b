"""VM templates at scale: memory per clone, many clones at once, many clones in a row.

Run from a checkout after ./scripts/setup.sh:

    .venv/bin/python benchmarks/templates.py [--concurrent 16] [--in-a-row 64]

All in one run, under TCG, with a template store private to the run:

1. the proportional set size (PSS) of each of N concurrent clones of the
   default guest (256 MiB), read from /proc/PID/smaps_rollup once all answer
   (target: at most 32 MiB each);
2. the same N clones started at once from threads: all ready and answering,
   and how long the slowest took;
3. M clones one after another, each started, used and shut down: the median
   ready time, and what was left afterwards (QEMU processes, socket
   directories, snapshot files, leases): everything must be back to before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.guests.default import DefaultGuest
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore

MIB = 1024 * 1024


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def qemu_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if os.path.basename(command).startswith(b"qemu-system"):
                pids.add(int(entry.name))
    return pids


def socket_dirs() -> set[str]:
    return {
        path.name for path in Path(tempfile.gettempdir()).glob(f"pytest-qemu-vm-{os.getpid()}-*")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--in-a-row", type=int, default=64)
    options = parser.parse_args()

    guest = DefaultGuest(BuildCache(default_cache_dir()))
    spec = MachineSpec(
        kernel=guest.kernel_image(),
        initramfs=guest.initramfs([]),
        kernel_args=guest.boot_files([]).kernel_args,
    )
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-templates-") as scratch:
        work = Path(scratch)
        store = SnapshotStore(work / "snapshots")

        def start(index: int) -> VM:
            vm = VM(spec, log_dir=work / f"vm{index}", snapshots=store, guest=guest)
            return vm.start()

        before_processes, before_dirs = qemu_pids(), socket_dirs()
        started = time.monotonic()
        start(-1).kill()  # builds the template
        print(f"template built and first clone ready in {time.monotonic() - started:.2f} s")
        template_files = sorted(path.name for path in store.root.iterdir())
        ram = next(store.root.glob("*.ram"))
        print(
            f"template files: {template_files}; RAM file {ram.stat().st_size / MIB:.0f} MiB "
            f"apparent, {ram.stat().st_blocks * 512 / MIB:.0f} MiB on disk"
        )

        count = options.concurrent
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=count) as pool:
            vms = list(pool.map(start, range(count)))
        all_ready = time.monotonic() - began
        answers = [vm.check("echo $((6 * 7))") for vm in vms]
        assert answers == ["42\n"] * count, answers
        assert all(vm.restored_from is not None for vm in vms)
        pss = [pss_mib(vm.pid or 0) for vm in vms]
        ready = sorted(vm.boot_seconds or 0 for vm in vms)
        print(
            f"{count} clones started at once: all ready and answering after {all_ready:.2f} s "
            f"(each: median {statistics.median(ready):.2f} s, slowest {ready[-1]:.2f} s)"
        )
        print(
            f"PSS per clone of a {spec.memory} MiB guest: median {statistics.median(pss):.1f} MiB, "
            f"max {max(pss):.1f} MiB (target <= 32, ratio {max(pss) / 32:.2f})"
        )
        for vm in vms:
            vm.shutdown(timeout=5)

        times = []
        for index in range(options.in_a_row):
            began = time.monotonic()
            vm = start(index)
            times.append(time.monotonic() - began)
            assert vm.check("echo ok") == "ok\n"
            vm.shutdown(timeout=5)
        times.sort()
        print(
            f"{options.in_a_row} clones in a row: ready median {statistics.median(times):.3f} s, "
            f"p90 {times[int(len(times) * 0.9)]:.3f} s"
        )
        leftover_processes = qemu_pids() - before_processes
        leftover_dirs = socket_dirs() - before_dirs
        leftover_files = sorted(
            set(path.name for path in store.root.iterdir()) - set(template_files)
        )
        print(
            f"left behind: {len(leftover_processes)} QEMU processes, {len(leftover_dirs)} socket "
            f"directories, {len(leftover_files)} new snapshot files {leftover_files}"
        )


if __name__ == "__main__":
    main()
