"""Resolve kernel module names to files, with dependencies, in load order.

The guest initramfs has no ``modprobe`` and no ``depmod`` data of its own, so
the host's ``modules.dep`` is used to decide which ``.ko`` files to copy in
and in which order the guest's init must ``insmod`` them.
"""

from __future__ import annotations

import gzip
import importlib
import io
import lzma
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from pytest_qemu.errors import ModuleError

__all__ = [
    "SOFT_DEPENDENCIES",
    "KernelModule",
    "ModuleError",
    "ModuleIndex",
    "canonical_module_name",
]

_MODULE_SUFFIXES: Final = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")

#: Modules that a module needs at run time but that ``modules.dep`` does not
#: list, because the kernel asks for them by alias (``request_module``) and the
#: guest has no modprobe to answer. Each one is loaded before the module that
#: names it, together with its own dependencies. Names missing from a given
#: kernel (or built into it) are skipped, since configs differ.
#:
#: Checked against Debian 12's 6.1 kernel (``modules.dep``, ``modules.softdep``
#: and ``/boot/config-*``); for virtio_pci, virtio_net, virtio_blk,
#: virtio_console, virtio_rng and virtio_mmio ``modules.dep`` is complete.
SOFT_DEPENDENCIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        # FAT mounts look up their codepage (CONFIG_FAT_DEFAULT_CODEPAGE=437)
        # and iocharset (CONFIG_FAT_DEFAULT_IOCHARSET="ascii") via load_nls();
        # without these modules mount fails with "IO charset ascii not found".
        "vfat": ("nls_cp437", "nls_ascii"),
        "msdos": ("nls_cp437",),
        # 9p.ko is transport-agnostic; trans=virtio lives in 9pnet_virtio,
        # requested as "9p-virtio" only at mount time.
        "9p": ("9pnet_virtio",),
        # modules.softdep "libcrc32c pre: crc32c": libcrc32c's init fails
        # outright without a crc32c shash (it is used by xfs, btrfs,
        # nf_conntrack, sctp, ...). crc32c_generic rather than crc32c_intel
        # because the latter needs SSE4.2, absent from TCG's default qemu64 CPU.
        "libcrc32c": ("crc32c_generic",),
        # modules.softdep "ext4/jbd2 pre: crypto-crc32c": metadata_csum, on by
        # default in mkfs.ext4, makes mount fail with "Cannot load crc32c
        # driver" otherwise.
        "ext4": ("crc32c_generic",),
        "jbd2": ("crc32c_generic",),
        # sd_mod and nvme pull these in via t10-pi. modules.softdep has
        # "crc_t10dif pre: crct10dif" and "crc64_rocksoft pre: crc64"; without
        # them the guest tries (and fails) a request_module and falls back to
        # slow table code. The generic drivers work on every CPU model.
        "crc_t10dif": ("crct10dif_generic",),
        "crc64_rocksoft": ("crc64_rocksoft_generic",),
        # Host adapters only register SCSI hosts; the disks behind them show up
        # as /dev/sdX only once sd_mod is loaded.
        "ahci": ("sd_mod",),
        "ata_piix": ("sd_mod",),
        "virtio_scsi": ("sd_mod",),
    }
)


def canonical_module_name(name: str) -> str:
    """Return the kernel's canonical spelling of a module name.

    The kernel treats ``-`` and ``_`` in module names as equal and reports
    them with underscores; file names (``virtio-rng.ko``) often use dashes.
    A path or a ``.ko*`` suffix is stripped too, so file names map to names.
    """
    base = name.strip().rsplit("/", 1)[-1]
    for suffix in _MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


@dataclass(frozen=True)
class KernelModule:
    """One loadable kernel module file."""

    name: str
    """Canonical name with underscores, e.g. ``virtio_net``."""
    path: Path
    """Absolute path of the ``.ko``, ``.ko.xz``, ``.ko.gz`` or ``.ko.zst`` file."""

    def load_bytes(self) -> bytes:
        """Return the module's uncompressed ELF bytes, ready for ``insmod``.

        Decompressing on the host keeps the guest free of the need for a
        kernel built with in-kernel module decompression or a compressing
        insmod.
        """
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ModuleError(
                f"cannot read kernel module {self.name} at {self.path}: {exc}"
            ) from exc
        suffix = self.path.name.rsplit(".", 1)[-1]
        try:
            if suffix == "xz":
                return lzma.decompress(raw)
            if suffix == "gz":
                return gzip.decompress(raw)
        except (lzma.LZMAError, OSError, EOFError) as exc:
            raise ModuleError(f"cannot decompress kernel module {self.path}: {exc}") from exc
        if suffix == "zst":
            return _zstd_decompress(raw, self.path)
        return raw


def _zstd_decompress(raw: bytes, path: Path) -> bytes:
    # Imported lazily and by name: both are optional, and neither is needed
    # on hosts (like Debian) that ship uncompressed or xz modules.
    try:
        zstandard = importlib.import_module("zstandard")
    except ImportError:
        pass
    else:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw))
            with reader:
                data = reader.read()
        except zstandard.ZstdError as exc:
            raise ModuleError(f"cannot decompress kernel module {path}: {exc}") from exc
        if not isinstance(data, bytes):
            raise ModuleError(f"cannot decompress kernel module {path}: unexpected result")
        return data
    try:
        stdlib_zstd = importlib.import_module("compression.zstd")  # Python >= 3.14
    except ImportError:
        raise ModuleError(
            f"kernel module {path} is zstd-compressed, which needs the 'zstandard' "
            "Python package: pip install zstandard"
        ) from None
    try:
        data = stdlib_zstd.decompress(raw)
    except stdlib_zstd.ZstdError as exc:
        raise ModuleError(f"cannot decompress kernel module {path}: {exc}") from exc
    if not isinstance(data, bytes):
        raise ModuleError(f"cannot decompress kernel module {path}: unexpected result")
    return data


class ModuleIndex:
    """The modules of one kernel release, as described by its ``modules.dep``."""

    def __init__(self, modules_dir: Path) -> None:
        """Read ``modules.dep`` and, if present, ``modules.builtin`` from ``modules_dir``."""
        self.modules_dir = Path(modules_dir).absolute()
        dep_file = self.modules_dir / "modules.dep"
        try:
            dep_text = dep_file.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise ModuleError(
                f"cannot read {dep_file}: {exc.strerror or exc}. The kernel modules for this "
                "release do not seem to be installed (on Debian/Ubuntu: "
                "`apt-get install linux-image-$(dpkg --print-architecture)`, or run `depmod` if "
                "the modules are there but the index is missing)."
            ) from exc
        # Entries as written in modules.dep: a Path is made only for the modules resolved
        # (the index has thousands, and every worker process reads it).
        self._paths: dict[str, str] = {}
        self._deps: dict[str, tuple[str, ...]] = {}
        self._parse_dep(dep_text)
        self._builtin: frozenset[str] = self._read_builtin(self.modules_dir / "modules.builtin")

    @classmethod
    def for_kernel_release(cls, release: str, root: Path = Path("/lib/modules")) -> ModuleIndex:
        """Return the index for ``root/release``, e.g. ``/lib/modules/6.1.0-56-<flavour>``."""
        modules_dir = root / release
        if not modules_dir.is_dir():
            try:
                available = sorted(p.name for p in root.iterdir() if p.is_dir())
            except OSError:
                available = []
            found = ", ".join(available) if available else "none"
            raise ModuleError(
                f"no kernel modules directory {modules_dir} for kernel release {release!r} "
                f"(releases found in {root}: {found}). Install the kernel's modules "
                "(e.g. `apt-get install linux-image-$(dpkg --print-architecture)`) or use a "
                "kernel whose release matches an installed modules directory."
            )
        return cls(modules_dir)

    def is_builtin(self, name: str) -> bool:
        """Whether module ``name`` is compiled into the kernel (per ``modules.builtin``)."""
        return canonical_module_name(name) in self._builtin

    def resolve(
        self,
        names: Iterable[str],
        *,
        soft_dependencies: Mapping[str, tuple[str, ...]] = SOFT_DEPENDENCIES,
    ) -> list[KernelModule]:
        """Return ``names`` plus all their dependencies, each once, in load order.

        Dependencies come before the modules that need them, so loading the
        list front to back with ``insmod`` works. Modules built into the
        kernel are left out. Entries of ``soft_dependencies`` (see
        :data:`SOFT_DEPENDENCIES`) are added before the module naming them;
        those that this kernel lacks are silently skipped.
        """
        soft = {
            canonical_module_name(key): tuple(canonical_module_name(v) for v in values)
            for key, values in soft_dependencies.items()
        }
        order: list[KernelModule] = []
        # A name is marked before its dependencies are visited so that a
        # cyclic modules.dep (which depmod rejects, but hand-made indexes may
        # contain) terminates instead of recursing forever.
        seen: set[str] = set()

        def visit(name: str, required: bool) -> None:
            if name in seen:
                return
            builtin = name in self._builtin
            if name not in self._paths and not builtin:
                if required:
                    raise self._unknown_module_error(name)
                return
            seen.add(name)
            if not builtin:
                # Reversed, as modprobe does: depmod lists the deepest dependencies last.
                for dep in reversed(self._deps.get(name, ())):
                    visit(dep, required=True)
            for dep in soft.get(name, ()):
                visit(dep, required=False)
            if not builtin:
                order.append(KernelModule(name, self._module_path(self._paths[name])))

        for requested in names:
            name = canonical_module_name(requested)
            if not name:
                raise ModuleError(f"invalid kernel module name {requested!r}")
            visit(name, required=True)

        for module in order:
            if not module.path.is_file():
                raise ModuleError(
                    f"kernel module {module.name} is listed in {self.modules_dir / 'modules.dep'} "
                    f"but {module.path} does not exist; the modules directory looks "
                    "incomplete (reinstall the kernel package, e.g. "
                    "`apt-get install --reinstall linux-image-$(dpkg --print-architecture)`)."
                )
        return order

    # -- internals ----------------------------------------------------------

    def _module_path(self, entry: str) -> Path:
        path = Path(entry)
        return path if path.is_absolute() else self.modules_dir / path

    def _parse_dep(self, text: str) -> None:
        dep_file = self.modules_dir / "modules.dep"
        dep_paths: dict[str, str] = {}
        for line_no, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            target, sep, rest = line.partition(":")
            target = target.strip()
            if not sep or not target:
                raise ModuleError(f"{dep_file}:{line_no}: malformed line {line!r}")
            name = canonical_module_name(target)
            # depmod lists a module once; if a hand-edited file repeats one,
            # the first entry wins, as in modprobe's search order.
            if name in self._deps:
                continue
            self._paths[name] = target
            dependencies = rest.split()
            self._deps[name] = tuple(canonical_module_name(dep) for dep in dependencies)
            for dep in dependencies:
                # Remembered in case a dependency lacks a line of its own; a
                # later line for it overrides this guess.
                dep_paths.setdefault(canonical_module_name(dep), dep)
        for name, path in dep_paths.items():
            self._paths.setdefault(name, path)

    @staticmethod
    def _read_builtin(path: Path) -> frozenset[str]:
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return frozenset()
        except OSError as exc:
            raise ModuleError(f"cannot read {path}: {exc}") from exc
        return frozenset(canonical_module_name(line) for line in text.splitlines() if line.strip())

    def _unknown_module_error(self, name: str) -> ModuleError:
        return ModuleError(
            f"kernel module {name!r} not found in {self.modules_dir} (neither in "
            "modules.dep nor in modules.builtin). Check the module name and that the "
            "kernel release matches this modules directory; the modules of the host kernel "
            "come with its package (e.g. `apt-get install "
            "linux-image-$(dpkg --print-architecture)`)."
        )
