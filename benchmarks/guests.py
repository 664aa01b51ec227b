"""Every architecture side by side: cold boot, clone and first command, measured in one run.

Run from a checkout after ./scripts/setup.sh:

    .venv/bin/python benchmarks/guests.py [--repeat 3] [--arch NAME ...]

For the default guest of each architecture of the registry (every one unless
``--arch`` names some), under TCG: the median time until

- a hand-written ``qemu-system-*`` boot of the same kernel and a lean initramfs, as
  fast as it can be written (``-nodefaults``, the console on stdio, nothing else),
  prints the guest's "ready" line (the baseline);
- a VM started by ``VMFactory`` is ready when it boots (``snapshot=False``), and the
  ratio to the baseline (target: at most 1.2);
- a VM cloned from a template is ready, and has run its first command (``true``)
  (targets: 0.3 s and 0.5 s).

Then the host's userland on the host's architecture: cold boot, clone, first command,
and ``python3 -c pass`` warm in a clone. Templates live in a private store removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The same timing as boot_times.py's raw boots (this directory is on sys.path when run).
from boot_times import time_to_console_line

from pytest_qemu.cache import BuildCache, default_cache_dir
from pytest_qemu.guests.default import DefaultGuest, default_kernel_args
from pytest_qemu.platforms import Platform, get_platform, names
from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore

#: What the default guest's init prints on the console when it is ready.
READY = b"pytest-qemu: guest ready"


def raw_argv(platform: Platform, guest: DefaultGuest) -> list[str]:
    """The fastest hand-written boot of the default guest's kernel on *platform*."""
    return [
        platform.qemu_binary, "-accel", "tcg", *platform.machine_args, "-m", "256",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", "stdio,id=console", *platform.console_args("console"),
        "-kernel", str(guest.kernel_image()), "-initrd", str(guest.initramfs([])),
        "-append", " ".join(default_kernel_args(platform)),
    ]  # fmt: skip


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


def median(repeat: int, sample: Callable[[], float]) -> float:
    return statistics.median(sample() for _ in range(repeat))


def measure(
    platform: Platform, cache: BuildCache, factory: VMFactory, repeat: int
) -> tuple[float, float, float | None, float | None]:
    """Medians for *platform*: hand-written boot, cold boot, clone, clone and ``true``
    (None for a platform whose VMs cannot be cloned)."""
    guest = DefaultGuest(cache, platform=platform)
    raw = median(
        repeat, lambda: time_to_console_line(raw_argv(platform, guest), READY, timeout=300)
    )
    kind = {"arch": platform.name}
    if platform.clone_blocker is not None:
        cold = median(repeat, lambda: timed_start(factory, {**kind, "snapshot": False}))
        return raw, cold, None, None
    return (raw, *starts(factory, kind, repeat))


def starts(factory: VMFactory, kind: dict[str, Any], repeat: int) -> tuple[float, float, float]:
    """Medians for VMs of *kind*: cold boot, clone, clone and ``true``."""
    cold = median(repeat, lambda: timed_start(factory, {**kind, "snapshot": False}))
    timed_start(factory, kind)  # builds the template
    clone = median(repeat, lambda: timed_start(factory, kind))
    first = median(repeat, lambda: timed_start(factory, kind, lambda vm: vm.check("true")))
    return cold, clone, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="samples per figure (default 3)")
    parser.add_argument("--arch", action="append", choices=names(), help="only these (repeatable)")
    options = parser.parse_args()
    session = QemuSession(QemuSettings.defaults(accel="tcg"))
    cache = BuildCache(default_cache_dir())
    repeat = options.repeat
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-guests-") as scratch:
        work = Path(scratch)
        factory = VMFactory(
            session, work / "logs", SnapshotStore(work / "snapshots"), shared_directories=[work]
        )
        print(f"medians of {repeat}, TCG; targets: clone <= 0.3 s, first command <= 0.5 s,")
        print("cold boot <= 1.2 x the fastest hand-written qemu-system-* boot of the same kernel")
        print(
            f"{'architecture':14s} {'raw boot':>9s} {'cold boot':>10s} {'ratio':>6s} "
            f"{'clone':>7s} {'clone + true':>13s}"
        )
        for name in options.arch or names():
            raw, cold, clone, first = measure(get_platform(name), cache, factory, repeat)
            cloned = (
                "  (cannot be cloned)"
                if clone is None or first is None
                else f" {clone:6.3f}s {first:12.3f}s"
            )
            print(f"{name:14s} {raw:8.3f}s {cold:9.3f}s {cold / raw:6.2f}{cloned}", flush=True)

        host = {"arch": get_platform().name, "userland": "host"}
        cold, clone, first = starts(factory, host, repeat)
        print(
            f"{'host userland':14s} {'':9s} {cold:9.3f}s {'':6s} {clone:6.3f}s {first:12.3f}s",
            flush=True,
        )
        vm = factory(**host)
        vm.check("python3 -c pass")  # fills the guest's cache of the host's files
        python = []
        for _ in range(repeat):
            started = time.monotonic()
            vm.check("python3 -c pass")
            python.append(time.monotonic() - started)
        vm.kill()
        print(f"host userland: python3 -c pass, warm: {statistics.median(python):.3f} s")
        factory.close()


if __name__ == "__main__":
    main()
