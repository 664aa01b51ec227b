"""A foreign architecture's kernel and busybox, from Debian packages unpacked into the cache.

Nothing foreign is installed on the host. ``scripts/setup.sh`` downloads the
packages (``apt-get download``) into :func:`packages_dir`; the first VM of
that architecture unpacks them with ``dpkg-deb`` into the build cache and
writes the ``modules.dep`` that a package's post-install script would have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pytest_qemu.cache import build_lock, cache_key, file_fingerprint
from pytest_qemu.errors import SetupError

#: Bump when the unpacked layout changes.
_FORMAT_VERSION = "1"


def packages_dir(debian_arch: str) -> Path:
    """Where the set-up script puts the ``.deb`` files of *debian_arch*."""
    if configured := os.environ.get("PYTEST_QEMU_FOREIGN_PACKAGES"):
        return Path(configured) / debian_arch
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-qemu" / "foreign-packages" / debian_arch


#: The packages a foreign guest needs, as ``.deb`` file name patterns: the kernel itself
#: (not its meta-package, ``linux-image-arm64``) and busybox.
PACKAGE_PATTERNS = ("linux-image-[0-9]*.deb", "busybox-static_*.deb")


def fetch_command(debian_arch: str, kernel_package: str) -> str:
    """The commands that download a foreign guest's packages (the first two need root)."""
    directory = packages_dir(debian_arch)
    meta = f"{kernel_package}:{debian_arch}"
    return (
        f"dpkg --add-architecture {debian_arch} && apt-get update && mkdir -p {directory} && "
        f"cd {directory} && apt-get download busybox-static:{debian_arch} "
        f"$(apt-cache depends {meta} | awk '/Depends: linux-image-/ {{print $2; exit}}') "
        "(./scripts/setup.sh in a pytest-qemu checkout does this)"
    )


def unpacked_root(cache_dir: Path, debian_arch: str, kernel_package: str) -> Path:
    """A directory holding the unpacked packages of *debian_arch*, made once per set of files."""
    source = packages_dir(debian_arch)
    debs: list[Path] = []
    for pattern in PACKAGE_PATTERNS:
        found = sorted(source.glob(pattern)) if source.is_dir() else []
        if not found:
            raise SetupError(
                f"the {debian_arch} guest needs Debian's {debian_arch} kernel and "
                f"busybox-static packages in {source}, and {pattern!r} is not there. Fetch "
                "them (nothing gets installed): " + fetch_command(debian_arch, kernel_package)
            )
        debs.append(found[-1])
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
            # A package's post-install script would write modules.dep: do it here.
            for modules in sorted((partial / "lib" / "modules").glob("*")):
                _run(["depmod", "-b", str(partial), modules.name], f"indexing {modules}")
            (partial / ".complete").touch()
            os.replace(partial, root)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return root


def _run(argv: list[str], what: str) -> None:
    tool = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if tool is None:
        raise SetupError(f"{what} needs {argv[0]}: install it with `apt-get install dpkg kmod`")
    result = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SetupError(f"{what} failed: {result.stderr.strip()[-2000:]}")
