"""UEFI against QEMU's default firmware, per architecture, measured side by side in one run.

Run from a checkout after ./scripts/setup.sh:

    .venv/bin/python benchmarks/firmware.py [--repeat 3] [--arch NAME ...]

For the default guest of each architecture with UEFI firmware (``Platform.uefi``; every
one unless ``--arch`` names some), under TCG, with QEMU's default firmware and then with
``firmware="uefi"`` (the firmware boots the kernel itself): the median time until a VM
booted cold (``snapshot=False``) is ready, until a clone of a template is ready, and
until a clone has run its first command (``true``), and the cold boots' ratio.
Templates live in a private store removed at the end.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

# The same timings as guests.py's (this directory is on sys.path when run).
from guests import median, starts, timed_start

from pytest_qemu.platforms import get_platform, names
from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.snapshot import SnapshotStore


def main() -> None:
    uefi = [name for name in names() if get_platform(name).uefi is not None]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="samples per figure (default 3)")
    parser.add_argument("--arch", action="append", choices=uefi, help="only these (repeatable)")
    options = parser.parse_args()
    session = QemuSession(QemuSettings.defaults(accel="tcg"))
    repeat = options.repeat
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-firmware-") as scratch:
        work = Path(scratch)
        factory = VMFactory(session, work / "logs", SnapshotStore(work / "snapshots"))
        print(f"medians of {repeat}, TCG")
        print(
            f"{'architecture':13s} {'firmware':9s} {'cold boot':>10s} {'clone':>7s} "
            f"{'clone + true':>13s}"
        )
        for name in options.arch or uefi:
            platform = get_platform(name)
            cold_boots = {}
            for firmware in ("bios", "uefi"):
                kind = {"arch": name, "firmware": firmware, "boot_timeout": 300}
                if platform.clone_blocker is not None:
                    boot = partial(timed_start, factory, {**kind, "snapshot": False})
                    cold = median(repeat, boot)
                    cloned = "  (cannot be cloned)"
                else:
                    cold, clone, first = starts(factory, kind, repeat)
                    cloned = f" {clone:6.3f}s {first:12.3f}s"
                cold_boots[firmware] = cold
                print(f"{name:13s} {firmware:9s} {cold:9.3f}s{cloned}", flush=True)
            ratio = cold_boots["uefi"] / cold_boots["bios"]
            print(f"{name:13s} uefi/bios cold boot: {ratio:.2f}", flush=True)
        factory.close()


if __name__ == "__main__":
    main()
