"""The accelerator probe's verdict cache and forced-KVM verdict, and the self-booting
Debian image's first sector: pure pieces, no QEMU started."""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path

import pytest

from pytest_qemu.images import debian
from pytest_qemu.vm import accel
from pytest_qemu.vm.accel import ProbeResult, cached_probe, choose_accelerator, probe_key


def test_the_probe_key_does_not_depend_on_the_cache_directory(tmp_path: Path) -> None:
    # The default guest's extracted kernel has the same name in every cache directory.
    for cache in ("one", "two"):
        (tmp_path / cache / "kernels").mkdir(parents=True)
        (tmp_path / cache / "kernels" / "abc.vmlinux").write_bytes(b"k" * 100)
    one = probe_key("/bin/true", "kvm", tmp_path / "one/kernels/abc.vmlinux")
    two = probe_key("/bin/true", "kvm", tmp_path / "two/kernels/abc.vmlinux")
    assert one == two
    assert probe_key("/bin/false", "kvm", None) != probe_key("/bin/true", "kvm", None)


def test_a_verdict_is_probed_once_per_verdict_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes = []

    def probe(qemu: str, accelerator: str, kernel: Path | None = None) -> ProbeResult:
        probes.append(qemu)
        return ProbeResult(False, "a test kernel printed nothing within 5 s under kvm")

    monkeypatch.setattr(accel, "probe_accelerator", probe)
    for _ in range(3):
        assert not cached_probe("/bin/true", "kvm", tmp_path / "verdicts").works
    assert probes == ["/bin/true"]


def test_a_forced_kvm_that_does_not_work_is_named_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        accel, "probe_accelerator", lambda *args: ProbeResult(False, "/dev/kvm hangs")
    )
    choice = choose_accelerator("kvm", "/bin/true", tmp_path)
    assert choice.accelerator == "kvm"
    assert choice.problem is not None
    assert "--qemu-accel=kvm" in choice.problem and "/dev/kvm hangs" in choice.problem
    assert "troubleshooting.md#kvm-hangs-or-is-missing" in choice.problem
    # auto falls back to TCG and has no problem; tcg never probes.
    assert choose_accelerator("auto", "/bin/true", tmp_path).accelerator == "tcg"
    assert choose_accelerator("auto", "/bin/true", tmp_path).problem is None
    monkeypatch.setattr(accel, "probe_accelerator", lambda *args: ProbeResult(True, "ran"))
    assert choose_accelerator("kvm", "/bin/true", tmp_path / "fresh").problem is None


def test_the_master_boot_record_has_a_bootable_fat_and_a_linux_partition() -> None:
    code = b"\xfa" * 440
    sector = debian.master_boot_record(code, 4_000_000)
    assert len(sector) == 512 and sector[:440] == code and sector[510:] == b"\x55\xaa"
    entries = [sector[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    flag, kind, start, count = entries[0][0], entries[0][4], *struct.unpack("<II", entries[0][8:])
    assert (flag, kind, start) == (0x80, 0x06, 2048)
    flag, kind, start2, count2 = entries[1][0], entries[1][4], *struct.unpack("<II", entries[1][8:])
    assert (flag, kind, start2) == (0x00, 0x83, start + count)
    assert start2 + count2 == 4_000_000
    assert entries[2] == entries[3] == bytes(16)
    with pytest.raises(debian.SetupError, match="441 bytes"):
        debian.master_boot_record(b"x" * 441, 4_000_000)


def test_syslinux_boots_the_kernel_at_once_and_talks_on_the_serial_port() -> None:
    config = debian.syslinux_config(debian.KERNEL_ARGS)
    assert config.startswith("SERIAL 0 115200\n")
    assert (
        "NOESCAPE 1" in config
        and "PROMPT 0" in config
        and "KERNEL vmlinuz" in config
        and "INITRD initrd.img" in config
    )
    assert "APPEND root=/dev/vda2 rw console=ttyS0" in config


def test_the_guid_partition_table_has_an_efi_system_and_a_linux_partition() -> None:
    sectors = 4_000_000
    code = b"\xfa" * 440
    primary, backup = debian.guid_partition_table(code, sectors)
    assert len(primary) == 34 * 512 and len(backup) == 33 * 512
    assert primary[:440] == code and primary[510:512] == b"\x55\xaa"
    assert primary[446 + 4] == 0xEE  # the protective MBR partition
    header = primary[512:604]
    assert header[:8] == b"EFI PART"
    crc = struct.unpack("<I", header[16:20])[0]
    assert zlib.crc32(header[:16] + bytes(4) + header[20:]) == crc
    current, other, first_usable, last_usable = struct.unpack("<QQQQ", header[24:56])
    assert (current, other, first_usable, last_usable) == (1, sectors - 1, 34, sectors - 34)
    entries = primary[1024:]
    assert zlib.crc32(entries) == struct.unpack("<I", header[88:92])[0]
    esp, root = entries[:128], entries[128:256]
    assert uuid.UUID(bytes_le=esp[:16]) == uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    assert struct.unpack("<QQQ", esp[32:56]) == (2048, 133119, 1 << 2)
    assert struct.unpack("<QQ", root[32:48]) == (133120, sectors - 34)
    assert backup[:-512] == entries and backup[-512:-504] == b"EFI PART"
    backup_header = backup[-512:-420]
    assert struct.unpack("<QQ", backup_header[24:40]) == (sectors - 1, 1)
    assert struct.unpack("<Q", backup_header[72:80])[0] == sectors - 33
    assert debian.guid_partition_table(code, sectors) == (primary, backup)


def test_systemd_boot_boots_the_kernel_at_once() -> None:
    files = debian.systemd_boot_entry(("root=/dev/vda2", "rw"))
    assert files["loader/loader.conf"] == "default debian.conf\ntimeout 0\n"
    assert (
        "linux /vmlinuz\ninitrd /initrd.img\noptions root=/dev/vda2 rw\n"
        in files["loader/entries/debian.conf"]
    )
