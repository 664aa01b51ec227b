"""Tests for kernel module resolution against fake and real modules directories."""

from __future__ import annotations

import gzip
import importlib
import lzma
import re
from pathlib import Path
from types import ModuleType

import pytest

from pytest_qemu.guests.modules import (
    SOFT_DEPENDENCIES,
    KernelModule,
    ModuleError,
    ModuleIndex,
    canonical_module_name,
)

RELEASE = "6.1.0-99-test"

# A cut-down copy of real Debian entries, plus cases modules.dep can contain.
MODULES_DEP = """\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/fat/fat.ko:
kernel/fs/nls/nls_cp437.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/misc/cycle_a.ko: kernel/misc/cycle_b.ko
kernel/misc/cycle_b.ko: kernel/misc/cycle_a.ko
kernel/misc/gz_mod.ko.gz:
kernel/misc/zst_mod.ko.zst:
kernel/misc/orphan_user.ko: kernel/misc/orphan.ko
kernel/misc/missing_file.ko:
"""

MODULES_BUILTIN = """\
kernel/fs/nls/nls_base.ko
kernel/fs/nls/nls_ascii.ko
kernel/drivers/char/hw_random/rng-core.ko
"""


def fake_elf(name: str) -> bytes:
    return b"\x7fELF" + name.encode() + b"\0" * 7


def make_modules_dir(root: Path) -> Path:
    modules_dir = root / RELEASE
    modules_dir.mkdir(parents=True)
    (modules_dir / "modules.dep").write_text(MODULES_DEP.replace("\\\n", ""), encoding="utf-8")
    (modules_dir / "modules.builtin").write_text(MODULES_BUILTIN, encoding="utf-8")
    for line in MODULES_DEP.replace("\\\n", "").splitlines():
        for entry in line.replace(":", " ").split():
            path = modules_dir / entry
            if "missing_file" in entry or path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            content = fake_elf(canonical_module_name(entry))
            if entry.endswith(".xz"):
                content = lzma.compress(content, format=lzma.FORMAT_XZ)
            elif entry.endswith(".gz"):
                content = gzip.compress(content)
            elif entry.endswith(".zst"):
                content = b"\x28\xb5\x2f\xfd not really zstd"
            path.write_bytes(content)
    return modules_dir


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    return make_modules_dir(tmp_path / "lib" / "modules")


@pytest.fixture
def index(modules_dir: Path) -> ModuleIndex:
    return ModuleIndex(modules_dir)


def names(modules: list[KernelModule]) -> list[str]:
    return [module.name for module in modules]


def assert_dependencies_first(index: ModuleIndex, resolved: list[KernelModule]) -> None:
    position = {module.name: i for i, module in enumerate(resolved)}
    for module in resolved:
        for dep in index._deps[module.name]:
            if dep in position:
                assert position[dep] < position[module.name], f"{dep} after {module.name}"


# -- fake modules directory -----------------------------------------------------


def test_dependencies_come_first_in_modprobe_order(index: ModuleIndex) -> None:
    resolved = index.resolve(["virtio_pci"])
    assert names(resolved) == [
        "virtio_ring",
        "virtio",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
    ]
    assert resolved[-1].path == index.modules_dir / "kernel/drivers/virtio/virtio_pci.ko"
    assert all(module.path.is_absolute() for module in resolved)


def test_each_module_appears_once_across_requests(index: ModuleIndex) -> None:
    resolved = index.resolve(["virtio_pci", "virtio_net", "virtio_pci", "virtio-net"])
    assert sorted(names(resolved)) == sorted(set(names(resolved)))
    assert names(resolved)[:5] == names(index.resolve(["virtio_pci"]))
    assert names(resolved)[5:] == ["failover", "net_failover", "virtio_net"]
    assert_dependencies_first(index, resolved)


def test_dash_and_underscore_are_equivalent(index: ModuleIndex) -> None:
    # The file is virtio-rng.ko.xz; the kernel's name is virtio_rng.
    dashed = index.resolve(["virtio-rng"])
    assert names(dashed) == names(index.resolve(["virtio_rng"]))
    assert names(dashed)[-1] == "virtio_rng"
    assert dashed[-1].path.name == "virtio-rng.ko.xz"
    assert index.is_builtin("rng-core") and index.is_builtin("rng_core")


def test_builtin_modules_are_skipped(index: ModuleIndex) -> None:
    assert index.is_builtin("nls_ascii")
    assert not index.is_builtin("vfat")
    assert index.resolve(["nls_base", "nls-ascii"]) == []


def test_vfat_gets_its_nls_soft_dependencies(index: ModuleIndex) -> None:
    # nls_ascii is built in here, so only nls_cp437 is added.
    assert SOFT_DEPENDENCIES["vfat"] == ("nls_cp437", "nls_ascii")
    resolved = names(index.resolve(["vfat"]))
    assert resolved == ["fat", "nls_cp437", "vfat"]


def test_9p_gets_its_virtio_transport(index: ModuleIndex) -> None:
    resolved = names(index.resolve(["9p"]))
    assert set(resolved) == {"9pnet", "virtio_ring", "virtio", "9pnet_virtio", "9p"}
    assert resolved[-1] == "9p"
    assert_dependencies_first(index, index.resolve(["9p"]))


def test_soft_dependencies_can_be_overridden_and_missing_ones_are_skipped(
    index: ModuleIndex,
) -> None:
    assert names(index.resolve(["vfat"], soft_dependencies={})) == ["fat", "vfat"]
    resolved = index.resolve(["fat"], soft_dependencies={"fat": ("no_such_module", "failover")})
    assert names(resolved) == ["failover", "fat"]


def test_explicit_request_for_missing_soft_dependency_still_fails(index: ModuleIndex) -> None:
    with pytest.raises(ModuleError, match="no_such_module"):
        index.resolve(["fat", "no_such_module"], soft_dependencies={"fat": ("no_such_module",)})


def test_unknown_module_error_names_module_directory_and_fix(
    index: ModuleIndex, modules_dir: Path
) -> None:
    with pytest.raises(ModuleError) as excinfo:
        index.resolve(["virtio_pci", "virtio_gpu"])
    message = str(excinfo.value)
    assert "virtio_gpu" in message
    assert str(modules_dir) in message
    assert "apt-get install linux-image-$(dpkg --print-architecture)" in message
    assert "release" in message


def test_cycles_terminate(index: ModuleIndex) -> None:
    assert sorted(names(index.resolve(["cycle_a"]))) == ["cycle_a", "cycle_b"]
    assert names(index.resolve(["cycle_a", "cycle_b"]))[-1] == "cycle_a"


def test_dependency_without_its_own_line_is_still_resolved(index: ModuleIndex) -> None:
    resolved = index.resolve(["orphan_user"])
    assert names(resolved) == ["orphan", "orphan_user"]
    assert resolved[0].path == index.modules_dir / "kernel/misc/orphan.ko"


def test_missing_file_is_reported(index: ModuleIndex) -> None:
    with pytest.raises(ModuleError, match=r"missing_file\.ko does not exist"):
        index.resolve(["missing_file"])


def test_load_bytes_plain_xz_and_gzip(index: ModuleIndex) -> None:
    (virtio_rng,) = [m for m in index.resolve(["virtio_rng"]) if m.name == "virtio_rng"]
    assert virtio_rng.path.suffix == ".xz"
    assert virtio_rng.load_bytes() == fake_elf("virtio_rng")
    (gz,) = index.resolve(["gz_mod"])
    assert gz.load_bytes() == fake_elf("gz_mod")
    assert index.resolve(["virtio_ring"])[0].load_bytes() == fake_elf("virtio_ring")


def test_load_bytes_zstd_without_zstandard_is_a_clear_error(
    index: ModuleIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = importlib.import_module

    def no_zstd(name: str, package: str | None = None) -> ModuleType:
        if name in ("zstandard", "compression.zstd"):
            raise ImportError(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", no_zstd)
    (zst,) = index.resolve(["zst_mod"])
    with pytest.raises(ModuleError, match="zstandard"):
        zst.load_bytes()


def test_load_bytes_corrupt_xz_is_a_module_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.ko.xz"
    path.write_bytes(b"\xfd7zXZ\0garbage")
    with pytest.raises(ModuleError, match=r"bad\.ko\.xz"):
        KernelModule("bad", path).load_bytes()


def test_absolute_paths_in_modules_dep(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "extra.ko"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(fake_elf("extra"))
    modules_dir = tmp_path / "mods"
    modules_dir.mkdir()
    (modules_dir / "modules.dep").write_text(f"{elsewhere}:\n")
    (resolved,) = ModuleIndex(modules_dir).resolve(["extra"])
    assert resolved.path == elsewhere


def test_missing_modules_dep_is_a_module_error(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match=re.escape("apt-get install linux-image-$(dpkg")):
        ModuleIndex(tmp_path)


def test_missing_modules_builtin_is_fine(modules_dir: Path) -> None:
    (modules_dir / "modules.builtin").unlink()
    index = ModuleIndex(modules_dir)
    assert not index.is_builtin("nls_ascii")
    assert names(index.resolve(["fat"])) == ["fat"]


def test_for_kernel_release(modules_dir: Path) -> None:
    root = modules_dir.parent
    assert ModuleIndex.for_kernel_release(RELEASE, root=root).modules_dir == modules_dir
    with pytest.raises(ModuleError) as excinfo:
        ModuleIndex.for_kernel_release("5.10.0-1-amd64", root=root)
    message = str(excinfo.value)
    assert "5.10.0-1-amd64" in message and RELEASE in message
    assert "apt-get install linux-image-$(dpkg --print-architecture)" in message


def test_canonical_module_name() -> None:
    assert canonical_module_name("virtio-net") == "virtio_net"
    assert canonical_module_name("kernel/crypto/crc32c-intel.ko.xz") == "crc32c_intel"
    assert canonical_module_name("t10-pi.ko") == "t10_pi"


# -- the real host ----------------------------------------------------------------


def _real_modules_dirs() -> list[Path]:
    root = Path("/lib/modules")
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / "modules.dep").is_file())


def test_real_host_modules_resolve() -> None:
    dirs = _real_modules_dirs()
    if not dirs:
        pytest.skip("no /lib/modules/<release>/modules.dep on this host")
    index = ModuleIndex(dirs[-1])
    requested = ["virtio_net", "9p", "vfat", "virtio_console", "virtio_rng", "virtio_pci"]
    resolved = index.resolve(requested)
    found = names(resolved)

    assert len(found) == len(set(found))
    for name in requested:
        assert name in found or index.is_builtin(name), name
    assert_dependencies_first(index, resolved)
    for soft in ("9pnet_virtio", "nls_cp437", "nls_ascii"):
        assert soft in found or index.is_builtin(soft), soft
    for core in ("virtio_ring", "virtio"):
        if core in found and "virtio_pci" in found:
            assert found.index(core) < found.index("virtio_pci")
    for module in resolved:
        assert module.path.is_file()
        assert module.load_bytes()[:4] == b"\x7fELF"


def test_load_bytes_zstd_when_zstandard_is_installed(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "m.ko.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(fake_elf("m")))
    assert KernelModule("m", path).load_bytes() == fake_elf("m")
