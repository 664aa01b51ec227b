"""A Debian userland (``userland="debian"``): its first build, a clone, Python's start.

Run from a checkout after ./scripts/setup.sh (it downloads Debian packages):

    .venv/bin/python benchmarks/debian_userland.py [--arch x86_64] [--cache-dir DIR]

With a fresh ``--cache-dir`` (the default: a new temporary directory) the first VM
builds the userland of ``packages=["python3"]``: the wall time and the download size
are printed. Then, side by side in one run, for the default (busybox) guest and the
Debian userland: the median time until a clone of the template is ready (target: at
most 0.5 s for the userland), and ``python3 -c pass`` run twice in a fresh Debian
clone (the first run pays TCG translating Python's start-up in that QEMU process).
Compare ratios from one run, never absolute times across runs: the machine's load
average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pytest_qemu.devices.directories import P9Directory
from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.snapshot import SnapshotStore

PACKAGES = ["python3"]


def load() -> str:
    """The host's load averages over 1, 5 and 15 minutes."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def clone_ready(factory: VMFactory, repeat: int, **options: object) -> float:
    """The median seconds until a clone is ready for commands (its overlay included)."""
    times = []
    for _ in range(repeat):
        started = time.monotonic()
        vm = factory(**options)  # type: ignore[arg-type]
        times.append(time.monotonic() - started)
        assert vm.restored_from is not None, "expected a clone of the template"
        vm.kill()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="the guest architecture (default: host's)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="reuse this cache (default: a fresh one)"
    )
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    print(f"load average at start: {load()} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-debian-") as scratch:
        work = Path(scratch)
        cache = options.cache_dir or work / "cache"
        session = QemuSession(QemuSettings.defaults(accel="tcg", cache_dir=cache))
        factory = VMFactory(
            session, work / "logs", SnapshotStore(cache / "snapshots"), shared_directories=[work]
        )
        debian = {"userland": "debian", "packages": PACKAGES, "arch": options.arch}
        try:
            factory(arch=options.arch).kill()  # the default guest, built and templated
            started = time.monotonic()
            first = factory(**debian)  # type: ignore[arg-type]
            first_seconds = time.monotonic() - started
            built = first.guest.userland()  # type: ignore[attr-defined]
            first.kill()
            print(f"{built.directory.name}: {built.packages} packages, "
                  f"{built.download_bytes / 1e6:.1f} MB downloaded")  # fmt: skip
            print(f"first VM (build {built.build_seconds:.0f} s when built now, "
                  f"template, boot): {first_seconds:.1f} s")  # fmt: skip
            busybox = clone_ready(factory, options.repeat, arch=options.arch)
            # The Debian userland always shares pytest's temporary directory: a clone with
            # a device is personalised with its mounts, which a bare busybox clone is not.
            shared = clone_ready(
                factory, options.repeat, arch=options.arch, devices=[P9Directory(work)]
            )
            userland = clone_ready(factory, options.repeat, **debian)
            print(f"clone ready, median of {options.repeat}: busybox {busybox:.3f} s, "
                  f"busybox with a 9p share {shared:.3f} s, debian {userland:.3f} s "
                  f"({userland / busybox:.1f}x, {userland / shared:.1f}x)")  # fmt: skip
            vm = factory(**debian)  # type: ignore[arg-type]
            runs = []
            for _ in range(2):
                started = time.monotonic()
                vm.check("python3 -c pass", timeout=600)
                runs.append(time.monotonic() - started)
            vm.kill()
            print(f"python3 -c pass in a fresh clone: first {runs[0]:.2f} s, "
                  f"second {runs[1]:.2f} s")  # fmt: skip
        finally:
            factory.close()
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
