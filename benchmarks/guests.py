"""Cold boot, clone and first command for each kind of guest, measured in one run.

Run from a checkout after ./scripts/setup.sh:

    .venv/bin/python benchmarks/guests.py [--repeat 5]

For the default guest on x86_64 and on aarch64 (emulated), and for the host's
userland on x86_64: the median time until a VM started by ``VMFactory`` is
ready when it boots (``snapshot=False``), when it is cloned from a template,
and until a clone has run its first command (``true``); for the host's
userland also ``python3 -c pass`` in a clone after a first run. Under TCG,
with templates in a private store removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore

GUESTS: dict[str, dict[str, Any]] = {
    "x86_64, default guest": {"arch": "x86_64"},
    "aarch64, default guest": {"arch": "aarch64"},
    "x86_64, host userland": {"arch": "x86_64", "userland": "host"},
}


def timed_start(
    factory: VMFactory, options: dict[str, Any], then: Callable[[VM], object] | None = None
) -> float:
    """Seconds until a VM started with *options* is ready (and has done *then*)."""
    started = time.monotonic()
    vm = factory(**options)
    if then is not None:
        then(vm)
    elapsed = time.monotonic() - started
    vm.kill()
    return elapsed


def median_start(
    repeat: int,
    factory: VMFactory,
    options: dict[str, Any],
    then: Callable[[VM], object] | None = None,
) -> float:
    return statistics.median(timed_start(factory, options, then) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="samples per figure (default 5)")
    options = parser.parse_args()
    session = QemuSession(QemuSettings.defaults(accel="tcg"))
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-guests-") as scratch:
        work = Path(scratch)
        factory = VMFactory(
            session, work / "logs", SnapshotStore(work / "snapshots"), shared_directories=[work]
        )

        print(f"medians of {options.repeat}, TCG:")
        print(f"{'guest':26s} {'cold boot':>10s} {'clone':>8s} {'clone + true':>13s}")
        for name, kind in GUESTS.items():
            repeat = options.repeat
            cold = median_start(repeat, factory, {**kind, "snapshot": False})
            timed_start(factory, kind)  # builds the template
            clone = median_start(repeat, factory, kind)
            first = median_start(repeat, factory, kind, lambda vm: vm.check("true"))
            print(f"{name:26s} {cold:9.3f}s {clone:7.3f}s {first:12.3f}s", flush=True)

        host = GUESTS["x86_64, host userland"]
        vm = factory(**host)
        vm.check("python3 -c pass")  # fills the guest's cache of the host's files
        python = []
        for _ in range(options.repeat):
            started = time.monotonic()
            vm.check("python3 -c pass")
            python.append(time.monotonic() - started)
        vm.kill()
        print(f"host userland: python3 -c pass, warm: {statistics.median(python):.3f} s")
        factory.close()


if __name__ == "__main__":
    main()
