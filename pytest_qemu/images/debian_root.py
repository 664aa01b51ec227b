"""A Debian root file system of any architecture on a disk image, built without root.

The steps (:func:`debian_root_image`):

1. **Resolve and download** the suite's essential packages plus the requested ones
   and their dependencies, for the platform's Debian architecture, through the
   private apt configuration (:class:`~pytest_qemu.platforms.apt.PrivateApt`):
   ``apt-get install --simulate`` on an empty system, then ``apt-get download``.
2. **Unpack** every ``.deb`` on the host (``dpkg-deb --fsys-tarfile | tar``, under
   ``fakeroot`` when not root, so that files keep their owners and modes) into a
   merged-``/usr`` tree, and put the ``.deb`` files and a first-boot script beside it.
3. **Make the disk**: ``mkfs.ext4 -d`` writes the tree into a file system image; nothing
   is mounted on the host.
4. **Configure in the guest**: *configure* (the guest kind's, booting the platform's own
   kernel) runs the first-boot script natively, which installs the packages with
   ``dpkg`` (their maintainer scripts run on the right architecture) and removes the
   ``.deb`` files. The disk is then converted into a compressed qcow2 **base image**.

The base image lives under ``<cache_dir>/userlands/debian-<suite>-<arch>-<key>/``, keyed
on the architecture, the suite and the sorted package list, published by one rename
(nothing half-built is ever seen), built once under a file lock for all workers. VMs
run on copy-on-write overlays of it: it is never written again.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.cache import build_lock, cache_key
from pytest_qemu.errors import SetupError
from pytest_qemu.platforms import Platform
from pytest_qemu.platforms.apt import PrivateApt

logger = logging.getLogger("pytest_qemu")

#: Bump when the recipe changes in a way the key does not capture.
FORMAT_VERSION = "1"
#: Where the userlands live under the cache directory.
USERLANDS_DIR = "userlands"
#: Inside the tree: the packages and the script the first boot runs.
FIRST_BOOT_DIR = "var/lib/pytest-qemu"
FIRST_BOOT_SCRIPT = f"/{FIRST_BOOT_DIR}/first-boot"
#: The manifest of a built userland (its presence means: complete).
MANIFEST = "userland.json"
#: Free room on the root file system for what tests write (the overlay takes it).
_FREE_BYTES = 1024**3
#: Directories that merged-/usr makes symbolic links into /usr, as debootstrap does.
_MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libo32", "libx32")
_STEP_TIMEOUT = 900

#: Runs in the guest, chrooted into the new root, on its first boot. Essential packages
#: first, all at once (dpkg orders their configuration); then the rest, in apt's order.
#: Every file is already in place (unpacked on the host), so dependencies only unpacked
#: are forced (a pre-dependency is otherwise refused until configured). Services are not
#: started (policy-rc.d), as in any image build.
FIRST_BOOT = """\
#!/bin/sh
set -e
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
export DEBCONF_NONINTERACTIVE_SEEN=true
cd /{first_boot_dir}
printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
dpkg --force-depends --force-unsafe-io --install $(cat essential)
set -- $(cat others)
[ $# -eq 0 ] || dpkg --force-depends --force-unsafe-io --install "$@"
dpkg --configure -a
rm -f /usr/sbin/policy-rc.d
echo 'pytest-qemu' >/etc/hostname
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\tpytest-qemu\\n' >/etc/hosts
cd /
rm -rf /{first_boot_dir} /var/cache/apt/archives/*.deb
sync
"""


@dataclass(frozen=True)
class DebianRootRecipe:
    """What a Debian userland holds: *packages* of *suite* for the Debian architecture
    *debian_arch* (the essential set is always there)."""

    debian_arch: str
    suite: str
    packages: tuple[str, ...]

    @classmethod
    def of(cls, platform: Platform, suite: str, packages: Sequence[str]) -> DebianRootRecipe:
        """The recipe for *platform*, the package list checked and sorted."""
        check_package_names(packages)
        if not suite or any(c in suite for c in "/ \t\n") or suite.startswith("-"):
            raise SetupError(f"suite {suite!r} is not a Debian suite name (such as 'bookworm')")
        return cls(platform.debian_arch, suite, tuple(sorted(set(packages))))

    @property
    def key(self) -> str:
        """The cache key: everything that decides the content."""
        return cache_key([FORMAT_VERSION, self.debian_arch, self.suite, *self.packages, FIRST_BOOT])

    @property
    def name(self) -> str:
        """The userland's directory name in the cache."""
        return f"debian-{self.suite}-{self.debian_arch}-{self.key}"

    def describe(self) -> str:
        """In words, for progress lines and errors."""
        extra = f" with {', '.join(self.packages)}" if self.packages else ""
        return f"Debian {self.suite} for {self.debian_arch}{extra}"


def check_package_names(packages: Sequence[str]) -> None:
    """Refuse what cannot be a Debian package name (an option to apt, a list in one string)."""
    for package in packages:
        if (
            not isinstance(package, str)
            or not package
            or package.startswith("-")
            or any(c in package for c in ", \t\n/")
        ):
            raise SetupError(
                f"{package!r} is not a Debian package name: give one name per list item, "
                "such as packages=['python3', 'python3-pytest']"
            )


@dataclass(frozen=True)
class BuiltUserland:
    """A built userland: its base image (qcow2, never written) and what went into it."""

    directory: Path
    disk: Path
    packages: int
    download_bytes: int
    build_seconds: float


#: Boots the unconfigured raw disk (given) with the platform's kernel and runs
#: :data:`FIRST_BOOT_SCRIPT` in it, raising :class:`SetupError` if that fails.
Configure = Callable[[Path], None]


def userlands_dir(cache_dir: Path) -> Path:
    """Where the built userlands are kept."""
    return cache_dir / USERLANDS_DIR


def debian_root_image(
    cache_dir: Path, platform: Platform, recipe: DebianRootRecipe, configure: Configure
) -> BuiltUserland:
    """The cached userland of *recipe*, built first if needed (see the module's docstring).

    Raises :class:`SetupError` naming the package, the architecture and apt's or
    dpkg's output when a package is unknown, no archive answers or a maintainer
    script fails; nothing of a failed build stays in the cache.
    """
    directory = userlands_dir(cache_dir)
    final = directory / recipe.name
    if (final / MANIFEST).exists():
        return _load(final)
    directory.mkdir(parents=True, exist_ok=True)
    with build_lock(
        directory / f"{recipe.name}.lock",
        on_wait=lambda: logger.warning(
            "pytest-qemu: waiting for another process to build %s", recipe.describe()
        ),
    ):
        if (final / MANIFEST).exists():
            return _load(final)
        work = Path(tempfile.mkdtemp(prefix=f".{recipe.name}.", dir=directory))
        try:
            _build(cache_dir, work, platform, recipe, configure)
            # One rename publishes the whole directory: nobody sees half a userland.
            os.rename(work / "out", final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _load(final)


def _progress(recipe: DebianRootRecipe, started: float, message: str, *args: object) -> None:
    logger.warning(
        "pytest-qemu: %s: [%.0f s] " + message,
        recipe.describe(),
        time.monotonic() - started,
        *args,
    )


def _build(
    cache_dir: Path, work: Path, platform: Platform, recipe: DebianRootRecipe, configure: Configure
) -> None:
    started = time.monotonic()
    apt = PrivateApt(recipe.suite, recipe.debian_arch, cache_dir / USERLANDS_DIR / ".apt" /
                     f"{recipe.suite}-{recipe.debian_arch}")  # fmt: skip
    _progress(recipe, started, "first build: updating the package indexes")
    try:
        apt.update()
    except SetupError as error:
        raise SetupError(f"{recipe.describe()}: no Debian archive answered: {error}") from None
    if not list(apt.state_dir.glob(f"lists/*_dists_{recipe.suite}_main_binary-"
                                   f"{recipe.debian_arch}_Packages*")):  # fmt: skip
        raise SetupError(
            f"{recipe.describe()}: no Debian archive answered with the {recipe.suite} "
            f"packages for {recipe.debian_arch} (apt-get update fetched no index): is the "
            "mirror the host's apt uses reachable ($PYTEST_QEMU_DEBIAN_MIRROR overrides it), "
            f"and does Debian {recipe.suite} have {recipe.debian_arch}?"
        )
    essential = apt.essential_packages()
    try:
        ordered = apt.resolve([*essential, *recipe.packages])
    except SetupError as error:
        raise SetupError(
            f"{recipe.describe()}: apt cannot install these packages on "
            f"{recipe.debian_arch} (is each one in Debian {recipe.suite} for that "
            f"architecture?): {error}"
        ) from None
    size = apt.download_size(ordered)
    _progress(recipe, started, "downloading %d packages (%.1f MB)", len(ordered), size / 1e6)
    debs_dir = work / "debs"
    apt.download(ordered, debs_dir)
    debs = _debs_by_package(debs_dir)
    missing = [name for name in ordered if name not in debs]
    if missing:
        raise SetupError(f"{recipe.describe()}: apt downloaded no .deb for {', '.join(missing)}")
    root, raw = work / "root", work / "root.ext4"
    _progress(recipe, started, "unpacking on the host and making the disk")
    _unpack(root, raw, [debs[name] for name in ordered], set(essential))
    _progress(recipe, started, "configuring the packages in the guest (dpkg, on %s)", platform.name)
    configure(raw)
    _progress(recipe, started, "compressing the configured disk into the base image")
    out = work / "out"
    out.mkdir()
    _run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(out / "disk.qcow2")],
         recipe, "converting the configured disk to qcow2")  # fmt: skip
    seconds = time.monotonic() - started
    (out / MANIFEST).write_text(
        json.dumps(
            {
                "architecture": recipe.debian_arch,
                "suite": recipe.suite,
                "packages": list(recipe.packages),
                "installed": len(ordered),
                "download_bytes": size,
                "build_seconds": round(seconds, 1),
            },
            indent=2,
        )
    )
    _progress(recipe, started, "built in %.0f s (%d packages)", seconds, len(ordered))


def _debs_by_package(directory: Path) -> dict[str, Path]:
    """The downloaded ``.deb`` files by package name (``python3_3.11.2-1+b1_amd64.deb``)."""
    return {deb.name.split("_", 1)[0]: deb for deb in directory.glob("*.deb")}


def _unpack(root: Path, raw: Path, debs: Sequence[Path], essential: set[str]) -> None:
    """Unpack *debs* into *root*, add the first-boot files and write *root* into the ext4
    image *raw*: in one ``fakeroot`` session when not root, so owners survive into it."""
    first_boot = root / FIRST_BOOT_DIR
    first_boot.mkdir(parents=True)
    for name in _MERGED_DIRS:
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(f"usr/{name}")
    for name in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc", "tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/lib/dpkg/status").touch()
    (root / "var/lib/dpkg/available").touch()
    lists: dict[str, list[str]] = {"essential": [], "others": []}
    for deb in debs:
        shutil.copy2(deb, first_boot / deb.name)
        is_essential = deb.name.split("_", 1)[0] in essential
        lists["essential" if is_essential else "others"].append(deb.name)
    for name, names in lists.items():
        (first_boot / name).write_text("\n".join(names) + "\n")
    script = first_boot / "first-boot"
    script.write_text(FIRST_BOOT.format(first_boot_dir=FIRST_BOOT_DIR))
    script.chmod(0o755)
    size = _tree_bytes(root) * 2 + _FREE_BYTES
    commands = [
        f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | tar -x -p --same-owner "
        f"--keep-directory-symlink -C {shlex.quote(str(root))}"
        for deb in debs
    ]
    commands.append(
        f"mkfs.ext4 -q -F -L debian-root -d {shlex.quote(str(root))} {shlex.quote(str(raw))} "
        f"{size // 1024}k"
    )
    shell = ["sh", "-ec", "\n".join(commands)]
    if os.geteuid() != 0:
        if shutil.which("fakeroot") is None:
            raise SetupError(
                "building a Debian userland as a user needs fakeroot, so that the files "
                "keep their owners: `apt-get install fakeroot` (or ./scripts/setup.sh)"
            )
        shell = ["fakeroot", "--", *shell]
    env = dict(os.environ, PATH=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    result = subprocess.run(shell, capture_output=True, text=True, timeout=_STEP_TIMEOUT, env=env)
    if result.returncode != 0:
        raise SetupError(f"unpacking the packages into a disk failed: {result.stderr[-2000:]}")


def _tree_bytes(root: Path) -> int:
    return sum(
        (Path(directory) / name).lstat().st_size
        for directory, _, files in os.walk(root)
        for name in files
    )


def _run(argv: list[str], recipe: DebianRootRecipe, what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=_STEP_TIMEOUT)
    if result.returncode != 0:
        raise SetupError(f"{recipe.describe()}: {what} failed: {result.stderr.strip()[-2000:]}")


def _load(directory: Path) -> BuiltUserland:
    try:
        # The last use, for `python -m pytest_qemu cache prune`.
        os.utime(directory)
    except OSError:
        pass  # a read-only cache: pruning then goes by the build time
    manifest = json.loads((directory / MANIFEST).read_text())
    return BuiltUserland(
        directory=directory,
        disk=directory / "disk.qcow2",
        packages=int(manifest["installed"]),
        download_bytes=int(manifest["download_bytes"]),
        build_seconds=float(manifest["build_seconds"]),
    )
