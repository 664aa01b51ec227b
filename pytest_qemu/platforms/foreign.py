"""A foreign architecture's kernel and busybox, from Debian packages unpacked into the cache.

Nothing foreign is installed on the host. The first VM of an architecture downloads
its kernel and busybox packages (``apt-get download`` through a private apt
configuration, :mod:`pytest_qemu.platforms.apt`) into :func:`packages_dir`, then
unpacks them with ``dpkg-deb`` into the build cache and writes the ``modules.dep``
that a package's post-install script would have.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pytest_qemu.cache import build_lock, cache_key, file_fingerprint
from pytest_qemu.errors import SetupError
from pytest_qemu.platforms.apt import PrivateApt

logger = logging.getLogger("pytest_qemu")

#: Bump when the unpacked layout changes.
_FORMAT_VERSION = "1"


def packages_dir(debian_arch: str) -> Path:
    """Where the ``.deb`` files of *debian_arch* are downloaded (shared by every cache
    directory of the user): ``$PYTEST_QEMU_FOREIGN_PACKAGES/<arch>``, else
    ``$XDG_CACHE_HOME/pytest-qemu/foreign-packages/<arch>``."""
    if configured := os.environ.get("PYTEST_QEMU_FOREIGN_PACKAGES"):
        return Path(configured) / debian_arch
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-qemu" / "foreign-packages" / debian_arch


#: The packages a foreign guest needs, as ``.deb`` file name patterns: the kernel itself
#: (not its meta-package, ``linux-image-arm64``) and busybox.
PACKAGE_PATTERNS = ("linux-image-[0-9]*.deb", "busybox-static_*.deb")


def downloaded_packages(debian_arch: str, kernel_package: str, suite: str) -> list[Path]:
    """The kernel and busybox ``.deb`` files of *debian_arch*, downloaded from Debian
    *suite* first if :func:`packages_dir` lacks them (once, under a lock)."""
    directory = packages_dir(debian_arch)
    found = _find(directory)
    if found is not None:
        return found
    directory.mkdir(parents=True, exist_ok=True)
    with build_lock(directory / ".download.lock"):
        found = _find(directory)
        if found is not None:
            return found
        apt = PrivateApt(suite, debian_arch, directory.parent / ".apt" / f"{suite}-{debian_arch}")
        apt.update()
        wanted = [apt.concrete_package(kernel_package), "busybox-static"]
        logger.warning(
            "pytest-qemu: downloading Debian %s's %s for %s guests (%.0f MB) into %s",
            suite,
            " and ".join(wanted),
            debian_arch,
            apt.download_size(wanted) / 1e6,
            directory,
        )
        partial = Path(tempfile.mkdtemp(dir=directory, prefix=".downloading-"))
        try:
            apt.download(wanted, partial)
            for deb in sorted(partial.glob("*.deb")):
                os.replace(deb, directory / deb.name)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        found = _find(directory)
    if found is None:
        raise SetupError(
            f"downloading Debian's {debian_arch} kernel ({kernel_package}) and busybox-static "
            f"left no {' and '.join(PACKAGE_PATTERNS)} in {directory}"
        )
    return found


def _find(directory: Path) -> list[Path] | None:
    debs = []
    for pattern in PACKAGE_PATTERNS:
        found = sorted(directory.glob(pattern)) if directory.is_dir() else []
        if not found:
            return None
        debs.append(found[-1])
    return debs


def unpacked_root(cache_dir: Path, debian_arch: str, kernel_package: str, suite: str) -> Path:
    """A directory holding the unpacked packages of *debian_arch*, made once per set of files."""
    debs = downloaded_packages(debian_arch, kernel_package, suite)
    key = cache_key([_FORMAT_VERSION, *(file_fingerprint(deb) for deb in debs)])
    root = cache_dir / "foreign" / debian_arch / key
    if (root / ".complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(Path(f"{root}.lock")):
        if (root / ".complete").exists():
            return root
        partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=".unpacking-"))
        try:
            for deb in debs:
                _run(["dpkg-deb", "-x", str(deb), str(partial)], f"unpacking {deb}")
            _merge_usr(partial)
            # A package's post-install script would write modules.dep: do it here.
            for modules in sorted((partial / "lib" / "modules").glob("*")):
                _run(["depmod", "-b", str(partial), modules.name], f"indexing {modules}")
            (partial / ".complete").touch()
            os.replace(partial, root)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return root


def _merge_usr(root: Path) -> None:
    """Make *root* a merged-``/usr`` system, as Debian 12 and later are: ``lib`` and
    ``bin`` are links into ``usr``. Debian 13's packages ship only ``usr/lib/modules``
    and ``usr/bin/busybox``; the kernel's modules are then found (and indexed by the
    host's ``depmod``) at ``lib/modules`` as in older releases."""
    for name in ("lib", "bin", "sbin"):
        if (root / "usr" / name).is_dir() and not (root / name).exists():
            (root / name).symlink_to(Path("usr") / name)


def _run(argv: list[str], what: str) -> None:
    tool = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if tool is None:
        raise SetupError(f"{what} needs {argv[0]}: install it with `apt-get install dpkg kmod`")
    result = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SetupError(f"{what} failed: {result.stderr.strip()[-2000:]}")
