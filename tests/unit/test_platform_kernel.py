"""Tests for finding the host kernel and extracting vmlinux from a bzImage."""

from __future__ import annotations

import gzip
import lzma
import os
import random
import struct
import time
from pathlib import Path

import pytest

from pytest_qemu.platforms import kernel as kernel_mod
from pytest_qemu.platforms.kernel import (
    HostKernel,
    KernelError,
    KernelNotFoundError,
    extract_vmlinux,
    find_host_kernel,
    has_pvh_note,
)

# -- synthetic ELF files ----------------------------------------------------------


def _note(name: bytes, note_type: int, desc: bytes, align: int = 4) -> bytes:
    name_z = name + b"\0"
    out = struct.pack("<III", len(name_z), len(desc), note_type)
    out += name_z + b"\0" * (-len(name_z) % align)
    return out + desc + b"\0" * (-len(desc) % align)


def make_elf64(notes: list[bytes], *, note_align: int = 4, padding: int = 256) -> bytes:
    """An ELF64 file with a PT_LOAD and one PT_NOTE segment per entry of ``notes``."""
    ehsize, phentsize = 64, 56
    phnum = 1 + len(notes)
    offset = ehsize + phentsize * phnum
    segments = []
    body = b""
    for note in notes:
        segments.append((4, offset + len(body), len(note), note_align))
        body += note
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x1000000, 0x1000000, 64, 64, 0x200000)
    for p_type, p_offset, size, align in segments:
        phdrs += struct.pack("<IIQQQQQQ", p_type, 4, p_offset, 0, 0, size, size, align)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, ehsize, 0, 0, ehsize, phentsize, phnum, 64, 0, 0
    )
    return header + phdrs + body + bytes(padding)


def make_elf32(notes: list[bytes]) -> bytes:
    ehsize, phentsize = 52, 32
    phnum = len(notes)
    offset = ehsize + phentsize * phnum
    phdrs = b""
    body = b""
    for note in notes:
        phdrs += struct.pack("<IIIIIIII", 4, offset + len(body), 0, 0, len(note), len(note), 4, 4)
        body += note
    ident = b"\x7fELF" + bytes([1, 1, 1]) + b"\0" * 9
    header = ident + struct.pack(
        "<HHIIIIIHHHHHH", 2, 3, 1, 0x100000, ehsize, 0, 0, ehsize, phentsize, phnum, 40, 0, 0
    )
    return header + phdrs + body


PVH_NOTE = _note(b"Xen", 18, struct.pack("<I", 0x1000460))
OTHER_NOTES = [_note(b"GNU", 3, b"\x01" * 20), _note(b"Linux", 6, b"6.1.0-test\0")]


def fake_vmlinux(size: int = 300_000) -> bytes:
    # Compressible but not trivially so, and larger than one decompression chunk
    # would be after compression, to exercise streaming.
    rng = random.Random(1234)
    filler = bytes(rng.getrandbits(3) for _ in range(size))
    return make_elf64([*OTHER_NOTES, PVH_NOTE]) + filler


def make_bzimage(payload: bytes, *, prefix_size: int = 17_000, trailer: bytes = b"") -> bytes:
    rng = random.Random(99)
    # Keep the random prefix free of accidental magic sequences.
    prefix = bytes(rng.choice(range(0x20, 0x7F)) for _ in range(prefix_size))
    return prefix + payload + (trailer or os.urandom(4096))


# -- extract_vmlinux ----------------------------------------------------------------


def test_extract_xz_payload_with_trailing_garbage(tmp_path: Path) -> None:
    vmlinux = fake_vmlinux()
    xz = lzma.compress(vmlinux, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    image = tmp_path / "vmlinuz-test"
    image.write_bytes(make_bzimage(xz, trailer=b"\x00\x10\x20\x30" + os.urandom(8192)))

    destination = tmp_path / "out" / "vmlinux"
    assert extract_vmlinux(image, destination) == destination
    assert destination.read_bytes() == vmlinux
    assert has_pvh_note(destination)
    assert sorted(p.name for p in destination.parent.iterdir()) == ["vmlinux"]


def test_extract_skips_decoy_streams_before_the_payload(tmp_path: Path) -> None:
    vmlinux = fake_vmlinux(50_000)
    decoys = (
        b"\xfd7zXZ\x00not really xz"  # bad stream
        + lzma.compress(b"not an ELF file", format=lzma.FORMAT_XZ)  # valid, but not ELF
        + b"\x1f\x8b\x08\x00garbage"  # bad gzip
    )
    xz = lzma.compress(vmlinux, format=lzma.FORMAT_XZ)
    image = tmp_path / "bzImage"
    image.write_bytes(make_bzimage(decoys + xz))
    destination = tmp_path / "vmlinux"
    extract_vmlinux(image, destination)
    assert destination.read_bytes() == vmlinux


def test_extract_gzip_payload(tmp_path: Path) -> None:
    vmlinux = fake_vmlinux(50_000)
    payload = gzip.compress(vmlinux, mtime=0)
    assert payload.startswith(b"\x1f\x8b\x08\x00")
    image = tmp_path / "bzImage"
    image.write_bytes(make_bzimage(payload))
    extract_vmlinux(image, tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == vmlinux


def test_extract_replaces_an_existing_destination(tmp_path: Path) -> None:
    vmlinux = fake_vmlinux(10_000)
    image = tmp_path / "bzImage"
    image.write_bytes(make_bzimage(lzma.compress(vmlinux, format=lzma.FORMAT_XZ)))
    destination = tmp_path / "vmlinux"
    destination.write_bytes(b"stale")
    extract_vmlinux(image, destination)
    assert destination.read_bytes() == vmlinux


def test_an_elf_image_is_copied(tmp_path: Path) -> None:
    vmlinux = fake_vmlinux(1000)
    image = tmp_path / "vmlinux-in"
    image.write_bytes(vmlinux)
    extract_vmlinux(image, tmp_path / "vmlinux-out")
    assert (tmp_path / "vmlinux-out").read_bytes() == vmlinux


def test_no_payload_is_a_kernel_error_naming_the_image(tmp_path: Path) -> None:
    image = tmp_path / "vmlinuz-broken"
    image.write_bytes(make_bzimage(lzma.compress(b"no elf here", format=lzma.FORMAT_XZ)))
    destination = tmp_path / "out" / "vmlinux"
    with pytest.raises(KernelError, match="vmlinuz-broken"):
        extract_vmlinux(image, destination)
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []


def test_truncated_payload_is_a_kernel_error(tmp_path: Path) -> None:
    xz = lzma.compress(fake_vmlinux(100_000), format=lzma.FORMAT_XZ)
    image = tmp_path / "bzImage"
    image.write_bytes(b"prefix" + xz[: len(xz) // 2])
    with pytest.raises(KernelError):
        extract_vmlinux(image, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_unreadable_image_is_a_kernel_error(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="does-not-exist"):
        extract_vmlinux(tmp_path / "does-not-exist", tmp_path / "vmlinux")


# -- has_pvh_note ---------------------------------------------------------------------


def test_has_pvh_note(tmp_path: Path) -> None:
    cases = {
        "pvh": (make_elf64([*OTHER_NOTES, PVH_NOTE]), True),
        "pvh-second-segment": (make_elf64([OTHER_NOTES[0], PVH_NOTE]), True),
        "pvh-8-aligned": (make_elf64([_note(b"Xen", 18, b"\1" * 4, align=8)], note_align=8), True),
        "no-notes": (make_elf64([]), False),
        "other-notes": (make_elf64(OTHER_NOTES), False),
        "xen-other-type": (make_elf64([_note(b"Xen", 1, b"\0" * 8)]), False),
        "elf32-pvh": (make_elf32([PVH_NOTE]), True),
        "not-elf": (b"MZ" + bytes(4096), False),
        "truncated": (make_elf64([PVH_NOTE])[:40], False),
        "empty": (b"", False),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert has_pvh_note(path) is expected, name
    assert has_pvh_note(tmp_path / "missing") is False


# -- find_host_kernel -------------------------------------------------------------------


def make_kernel(boot: Path, modules_root: Path, release: str, *, modules: bool = True) -> Path:
    boot.mkdir(parents=True, exist_ok=True)
    image = boot / f"vmlinuz-{release}"
    image.write_bytes(b"bzImage " + release.encode())
    if modules:
        (modules_root / release).mkdir(parents=True, exist_ok=True)
    return image


def test_find_host_kernel_picks_newest_by_version(tmp_path: Path) -> None:
    boot, mods = tmp_path / "boot", tmp_path / "lib" / "modules"
    for release in ("6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-28-amd64", "6.1.0-2-amd64"):
        make_kernel(boot, mods, release)
    # Newer but unusable: no modules directory.
    make_kernel(boot, mods, "6.12.0-1-amd64", modules=False)
    (boot / "config-6.1.0-10-amd64").write_text("")
    kernel = find_host_kernel(boot, mods)
    assert kernel == HostKernel(
        image=boot / "vmlinuz-6.1.0-10-amd64",
        release="6.1.0-10-amd64",
        modules_dir=mods / "6.1.0-10-amd64",
    )


def test_find_host_kernel_uses_modules_dir_vmlinuz(tmp_path: Path) -> None:
    boot, mods = tmp_path / "boot", tmp_path / "lib" / "modules"
    boot.mkdir()
    (mods / "6.8.9-300.fc40.x86_64").mkdir(parents=True)
    (mods / "6.8.9-300.fc40.x86_64" / "vmlinuz").write_bytes(b"bzImage")
    kernel = find_host_kernel(boot, mods)
    assert kernel.image == mods / "6.8.9-300.fc40.x86_64" / "vmlinuz"
    assert kernel.release == "6.8.9-300.fc40.x86_64"


def test_find_host_kernel_none_found(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    with pytest.raises(KernelNotFoundError) as excinfo:
        find_host_kernel(tmp_path / "boot", tmp_path / "modules")
    message = str(excinfo.value)
    assert "apt-get install linux-image-amd64" in message
    assert "--qemu-kernel" in message


def test_find_host_kernel_without_modules_says_so(tmp_path: Path) -> None:
    make_kernel(tmp_path / "boot", tmp_path / "modules", "6.1.0-10-amd64", modules=False)
    with pytest.raises(KernelNotFoundError) as excinfo:
        find_host_kernel(tmp_path / "boot", tmp_path / "modules")
    message = str(excinfo.value)
    assert "vmlinuz-6.1.0-10-amd64" in message and "modules" in message
    assert "apt-get install linux-image-amd64" in message and "--qemu-kernel" in message


def test_find_host_kernel_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    image = make_kernel(boot, mods, "6.8.0-45-generic")
    image.chmod(0o600)
    # Tests may run as root, which can read anything; simulate the failure.
    monkeypatch.setattr(kernel_mod, "_is_readable", lambda path: False)
    with pytest.raises(KernelNotFoundError) as excinfo:
        find_host_kernel(boot, mods)
    message = str(excinfo.value)
    assert str(image) in message
    assert "0600" in message
    assert "chmod" in message and "--qemu-kernel" in message


def test_find_host_kernel_skips_unreadable_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    make_kernel(boot, mods, "6.8.0-40-generic")
    newest = make_kernel(boot, mods, "6.8.0-45-generic")
    monkeypatch.setattr(kernel_mod, "_is_readable", lambda path: path != newest)
    assert find_host_kernel(boot, mods).release == "6.8.0-40-generic"


# -- the real host kernel --------------------------------------------------------------


def test_real_host_kernel_extracts_to_pvh_vmlinux(tmp_path: Path) -> None:
    images = sorted(p for p in Path("/boot").glob("vmlinuz-*") if p.is_file())
    if not images:
        pytest.skip("no /boot/vmlinuz-* on this host")
    readable = [p for p in images if os.access(p, os.R_OK)]
    if not readable:
        pytest.skip(f"{images[0]} is not readable by this user")
    start = time.monotonic()
    vmlinux = extract_vmlinux(readable[-1], tmp_path / "vmlinux")
    elapsed = time.monotonic() - start
    with vmlinux.open("rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert has_pvh_note(vmlinux)
    assert elapsed < 15, f"extracting {readable[-1]} took {elapsed:.1f}s"


def test_extract_zstd_payload_when_zstandard_is_installed(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    vmlinux = fake_vmlinux(50_000)
    # The kernel's zstd payload is followed by its 4-byte uncompressed size.
    payload = zstandard.ZstdCompressor(level=19).compress(vmlinux) + struct.pack("<I", len(vmlinux))
    image = tmp_path / "bzImage"
    image.write_bytes(make_bzimage(payload))
    extract_vmlinux(image, tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == vmlinux
