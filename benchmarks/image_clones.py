"""How fast a clone of an image's template is ready, per channel (guest agent, console, SSH).

Run from a checkout after ./scripts/setup.sh, as root (the image builds need it):

    .venv/bin/python benchmarks/image_clones.py [--clones 3] [--channels qga console ssh]
        [--baseline]

For each channel, one VM builds the template of the image (a cold boot: the Debian
test image for ``qga`` and ``console``, the stand-in cloud image with a pinned
cloud-init seed for ``ssh``), then ``--clones`` VMs are cloned from it, one after
another. Printed per channel: the median time until the clone is ready (``vm.start``
returned: restored, the channel answered, the clone personalised), and until its
first command (``vm.run("true")``) is done. Target (issue 20): ready in at most 0.5 s.

``--baseline`` also times clones of a template saved the way it was before: as soon as
the channel answered, without waiting for the image to finish booting. The two kinds
of clone alternate, so that the machine's drift weighs on both alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pytest_qemu.cache import default_cache_dir
from pytest_qemu.guests.cloudinit import CloudInit
from pytest_qemu.guests.image import ImageGuest
from pytest_qemu.images import DebianImage, build_debian_image
from pytest_qemu.platforms import get_platform
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore

TARGET = 0.5
#: A seed that names no VM of its own: the VMs can share a template.
PINNED_SEED = CloudInit(meta_data={"instance-id": "bench", "local-hostname": "bench"})


class UnsettledImageGuest(ImageGuest):
    """The baseline: an image whose template is saved as soon as its channel answers."""

    startup_finished_command = ""  # also a part of its templates' key


def start(
    channel: str, image: DebianImage, work: Path, store: SnapshotStore, settled: bool = True
) -> VM:
    platform = get_platform()
    kind = ImageGuest if settled else UnsettledImageGuest
    guest = kind(
        platform,
        image.disk,
        channel=channel,
        cloud_init=PINNED_SEED if channel == "ssh" else None,
    )
    directory = Path(tempfile.mkdtemp(dir=work))
    spec = MachineSpec(kernel=None, devices=guest.devices([], directory), platform=platform,
                       memory=512)  # fmt: skip
    vm = VM(spec, log_dir=directory, boot_timeout=900, snapshots=store, guest=guest)
    vm.start()
    return vm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clones", type=int, default=3)
    parser.add_argument("--channels", nargs="+", default=["qga", "console", "ssh"])
    parser.add_argument("--baseline", action="store_true", help="also time unsettled templates")
    options = parser.parse_args()
    cache = default_cache_dir()
    kinds = (True, False) if options.baseline else (True,)
    for channel in options.channels:
        image = build_debian_image(cache, cloud=channel == "ssh")
        with tempfile.TemporaryDirectory(prefix="pytest-qemu-clones-") as scratch:
            work = Path(scratch)
            store = SnapshotStore(work / "snapshots")
            built: dict[bool, float] = {}
            ready: dict[bool, list[float]] = {kind: [] for kind in kinds}
            first: dict[bool, list[float]] = {kind: [] for kind in kinds}
            for settled in kinds:
                started = time.monotonic()
                start(channel, image, work, store, settled).kill()  # builds the template
                built[settled] = time.monotonic() - started
            for _ in range(options.clones):
                for settled in kinds:
                    started = time.monotonic()
                    vm = start(channel, image, work, store, settled)
                    ready[settled].append(time.monotonic() - started)
                    vm.run("true")
                    first[settled].append(time.monotonic() - started)
                    assert vm.restored_from is not None, vm.boot_reason
                    vm.kill()
            settled_ready = statistics.median(ready[True])
            print(
                f"{channel}: template built in {built[True]:.1f} s; clone ready median "
                f"{settled_ready:.2f} s (min {min(ready[True]):.2f}), first command done "
                f"{statistics.median(first[True]):.2f} s; target <= {TARGET} s, ratio "
                f"{settled_ready / TARGET:.2f} ({options.clones} clones)",
                flush=True,
            )
            if options.baseline:
                unsettled_ready = statistics.median(ready[False])
                print(
                    f"  baseline, template saved at once (built in {built[False]:.1f} s): "
                    f"clone ready median {unsettled_ready:.2f} s (min {min(ready[False]):.2f}), "
                    f"first command done {statistics.median(first[False]):.2f} s; "
                    f"settled/baseline {settled_ready / unsettled_ready:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
