"""A small Debian 12 (bookworm) disk image for tests, built once per machine.

``mmdebstrap`` installs a minimal system (systemd, ``qemu-guest-agent``, the
Debian kernel, udev, kmod, iproute2) into a directory from the Debian mirrors
the host's apt uses; the directory is configured for a test VM (root logged in
on the serial console, no password, nothing that only slows a boot under
emulation), and packed into a partitioned disk without mounting anything: a
FAT boot partition made with mtools that SYSLINUX boots from (its MBR code is
the image's own ``syslinux-common``), and an ext4 root partition written by
``mkfs.ext4 -d`` at its offset. The disk is converted to qcow2. It boots by
itself (SeaBIOS, SYSLINUX, the kernel); the kernel and initramfs are also
copied out beside it, for a direct kernel boot.

The build needs root (``mmdebstrap``'s root mode: the image's files must be
owned by their real owners) and takes about a minute; the result is cached
under ``<cache_dir>/images/``, keyed on everything that goes into it. Parallel
pytest workers wait for one builder under a file lock; the image directory is
published by an atomic rename. Build one ahead of time with::

    sudo .venv/bin/python -m pytest_qemu.images.debian [CACHE_DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.cache import build_lock, cache_key, default_cache_dir
from pytest_qemu.errors import SetupError
from pytest_qemu.platforms import Platform, get_platform

logger = logging.getLogger(__name__)

#: What the image is made of: a systemd system the guest agent and devices work in (and
#: the platform's kernel package).
DEFAULT_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "qemu-guest-agent",
    "udev",
    "kmod",
    "iproute2",
    # The boot loader's MBR code and modules: the disk boots by itself through SYSLINUX.
    "syslinux-common",
)
#: A stand-in for a distribution's cloud image (Debian's genericcloud): no user, no password,
#: no key; cloud-init sets them from a seed at first boot and tests reach it over SSH.
#: ``ifupdown`` and ``isc-dhcp-client``: the network cloud-init configures (it writes the
#: interface's DHCP stanza into ``/etc/network/interfaces.d``).
CLOUD_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "syslinux-common",
    "cloud-init",
    "openssh-server",
    # The UEFI boot loader's binaries (the disk boots through UEFI as well as a BIOS).
    "systemd-boot-efi",
    # What a seed's user gets (users: sudo: ...), as on Debian's cloud images.
    "sudo",
    "ifupdown",
    "isc-dhcp-client",
)
SUITE = "bookworm"
#: Bump when the recipe changes in a way the key below does not capture.
FORMAT_VERSION = 3
#: The network configuration of a cloud image: cloud-init's stanzas are read from the
#: directory it writes them to.
_CLOUD_INTERFACES = """\
# pytest-qemu: cloud-init writes the interfaces' stanzas here.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
"""
#: The root partition's size; the boot partition (FAT16) comes before it.
DISK_SIZE = "2G"
_ROOT_BYTES = 2 * 1024**3
_SECTOR = 512
#: Where the partitions start, in sectors: 1 MiB alignment, as partitioning tools do.
_BOOT_START = 2048
_BOOT_SECTORS = 64 * 1024 * 1024 // _SECTOR
_ROOT_START = _BOOT_START + _BOOT_SECTORS
HOSTNAME = "pytest-qemu"


def __getattr__(name: str) -> object:
    """``KERNEL_ARGS``: :func:`kernel_args` on the host's architecture, worked out when it
    is first used (so that the module imports on a host of any architecture)."""
    if name == "KERNEL_ARGS":
        return kernel_args(get_platform())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def kernel_args(platform: Platform) -> tuple[str, ...]:
    """The root file system, the console on the platform's serial port. "quiet" (errors
    only) saves about 0.6 s of emulated serial output per boot; a panic reboots at once,
    which ends QEMU under -no-reboot instead of hanging the test."""
    return ("root=/dev/vda2", "rw", f"console={platform.console}", "quiet", "panic=-1")


#: The modules the initramfs needs to mount the root disk (everything else loads from the
#: image): it unpacks and runs 3 s faster under emulation than Debian's default of every
#: storage driver. virtio_console is loaded early too: the guest agent's port then exists
#: when udev first scans the devices, and the agent answers about 2 s sooner.
INITRAMFS_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "ext4", "virtio_console")

#: Units that cost a test VM boot time and do nothing useful in it (masked).
MASKED_UNITS: tuple[str, ...] = (
    # Periodic maintenance of a disk that is thrown away after the test.
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    # Logins on virtual terminals: a test VM has no screen (the serial getty stays).
    "getty-static.service",
    "getty@tty1.service",
)

_AUTOLOGIN = """\
# pytest-qemu: root is logged in on the serial console, without a password.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear %I 115200 linux
"""

_HOSTS = f"""\
127.0.0.1\tlocalhost
127.0.1.1\t{HOSTNAME}
::1\tlocalhost ip6-localhost ip6-loopback
"""

#: Documentation is never read in a test VM: leaving it out makes the image smaller.
_DPKG_EXCLUDES: tuple[str, ...] = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)

_MMDEBSTRAP_TIMEOUT = 1800.0
_STEP_TIMEOUT = 600.0
_MANIFEST = "image.json"


@dataclass(frozen=True)
class DebianImage:
    """A built Debian image: a qcow2 disk and the kernel and initramfs to boot it with.

    Attach ``disk`` as the first virtio disk (``/dev/vda``) behind an overlay
    (``snapshot=on`` or a qcow2 overlay: the cached file is shared) and boot
    ``kernel`` with ``initramfs`` and ``kernel_args``. The guest logs root in
    on its serial console (``root_password`` is empty) and starts ``qemu-guest-agent``
    when its virtio-serial port ``org.qemu.guest_agent.0`` appears.
    """

    disk: Path
    kernel: Path
    initramfs: Path
    kernel_args: tuple[str, ...]
    root_password: str
    #: Seconds the build took (when this machine built it, not when it was found cached).
    build_seconds: float
    #: Bytes of the qcow2 disk.
    disk_size: int


def image_key(packages: Sequence[str], platform: Platform, cloud: bool = False) -> str:
    """The cache key of an image: everything that decides its content."""
    return cache_key(
        [
            f"format {FORMAT_VERSION}",
            *(["cloud", _CLOUD_INTERFACES, *platform.kernel_args] if cloud else []),
            SUITE,
            platform.debian_arch,
            DISK_SIZE,
            HOSTNAME,
            " ".join(sorted(set(packages))),
            " ".join(INITRAMFS_MODULES),
            " ".join(MASKED_UNITS),
            " ".join(_DPKG_EXCLUDES),
            " ".join(kernel_args(platform)),
            _AUTOLOGIN,
        ]
    )


def build_debian_image(
    cache_dir: Path | None = None,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    platform: Platform | None = None,
    *,
    cloud: bool = False,
) -> DebianImage:
    """Return the cached Debian image of *platform* (the host's architecture if None) with
    *packages* and the platform's kernel, building it first if needed.

    *cloud*: a stand-in for a distribution's cloud image instead (*packages* default to
    :data:`CLOUD_PACKAGES`, the platform's cloud kernel): no login on the console, no
    password, no key, and cloud-init to set them at first boot (``cloud_init=`` on the
    factory gives it a seed).

    Raises :class:`~pytest_qemu.errors.SetupError`, saying what to run, when a
    tool is missing, the build is not run as root or the mirror cannot be reached.
    """
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    platform = platform or get_platform()
    kernel = platform.kernel_package
    if cloud:
        packages = CLOUD_PACKAGES if packages is DEFAULT_PACKAGES else packages
        kernel = platform.cloud_kernel_package or kernel
    packages = tuple(dict.fromkeys((*packages, kernel)))
    _check_packages(packages)
    images = cache_dir / "images"
    kind = "debian-cloud" if cloud else "debian"
    key = image_key(packages, platform, cloud)
    final = images / f"{kind}-{SUITE}-{platform.debian_arch}-{key}"
    if (final / _MANIFEST).exists():
        return _load(final)
    images.mkdir(parents=True, exist_ok=True)
    with build_lock(
        images / f"{final.name}.lock",
        on_wait=lambda: logger.info(
            "waiting for another process to build the Debian image %s", final
        ),
    ):
        if (final / _MANIFEST).exists():
            return _load(final)
        _check_tools(cache_dir)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=images))
        # apt downloads as its unprivileged user, which must reach the tree being built.
        work.chmod(0o755)
        try:
            _build(work, packages, platform, cloud)
            # One rename publishes the whole directory: nobody sees half an image.
            os.rename(work / "out", final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _load(final)


def _check_packages(packages: Sequence[str]) -> None:
    for package in packages:
        if not package or package.startswith("-") or any(c in package for c in ", \t\n"):
            raise SetupError(f"{package!r} is not a Debian package name")


def _check_tools(cache_dir: Path) -> None:
    missing = [
        f"{tool} (package {package})"
        for tool, package in (
            ("mmdebstrap", "mmdebstrap"),
            ("mkfs.ext4", "e2fsprogs"),
            ("qemu-img", "qemu-utils"),
            ("syslinux", "syslinux"),
            ("mcopy", "mtools"),
            ("mkfs.fat", "dosfstools"),
        )
        if shutil.which(tool) is None
        and not any(Path(directory, tool).exists() for directory in ("/usr/sbin", "/sbin"))
    ]
    if missing:
        raise SetupError(
            f"building the Debian test image needs {', '.join(missing)}: run "
            "`sudo apt-get install mmdebstrap e2fsprogs qemu-utils syslinux mtools dosfstools` (or "
            "./scripts/setup.sh)"
        )
    if os.geteuid() != 0:
        raise SetupError(
            "building the Debian test image needs root (mmdebstrap's root mode keeps the "
            "image's file owners): build it once with `sudo .venv/bin/python -m "
            f"pytest_qemu.images.debian {shlex.quote(str(cache_dir))}`, then run the tests as "
            "yourself"
        )


def host_debian_sources(suite: str = SUITE) -> list[str]:
    """The host's apt sources for *suite* (and its -updates and -security), one-line style.

    Empty if apt knows none (then ``mmdebstrap`` uses deb.debian.org). Only the
    entries apt has indexes for count: a mirror the host never reached is left out.
    """
    try:
        listing = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(REPO_URI)\t$(RELEASE)\t$(COMPONENT)",
             "Identifier: Packages"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return debian_sources_from_index_targets(listing, suite)


def debian_sources_from_index_targets(listing: str, suite: str = SUITE) -> list[str]:
    """Turn ``apt-get indextargets`` lines (URI, release, component) into sources for *suite*."""
    wanted = (suite, f"{suite}-updates", f"{suite}-security")
    components: dict[tuple[str, str], list[str]] = {}
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) != 3 or fields[1] not in wanted:
            continue
        found = components.setdefault((fields[0], fields[1]), [])
        if fields[2] not in found:
            found.append(fields[2])
    return [
        f"deb {uri} {release} {' '.join(parts)}"
        for (uri, release), parts in sorted(components.items(), key=lambda item: item[0][1])
    ]


def _apt_proxy_options() -> list[str]:
    """The host apt's proxies, which mmdebstrap's own apt configuration does not read."""
    options = []
    for scheme in ("http", "https"):
        try:
            value = subprocess.run(
                ["apt-config", "dump", "--no-empty", "--format", "%v", f"Acquire::{scheme}::Proxy"],
                capture_output=True, text=True, timeout=30, check=False,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        if value and "\n" not in value and '"' not in value:
            options.append(f'--aptopt=Acquire::{scheme}::Proxy "{value}"')
    return options


def mmdebstrap_command(
    packages: Sequence[str], root: Path, sources: Sequence[str], platform: Platform
) -> list[str]:
    """The ``mmdebstrap`` command that installs *platform*'s *packages* into *root*."""
    # Before the kernel is installed, so that its postinst builds the small initramfs.
    modules = "\\n".join(INITRAMFS_MODULES)
    initramfs_hook = (
        'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" && '
        'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/pytest-qemu" && '
        f'printf "{modules}\\n" > "$1/usr/share/initramfs-tools/modules.d/pytest-qemu"'
    )
    return [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        f"--architectures={platform.debian_arch}",
        *(f"--dpkgopt={option}" for option in _DPKG_EXCLUDES),
        *_apt_proxy_options(),
        f"--essential-hook={initramfs_hook}",
        SUITE,
        str(root),
        *sources,
    ]


def configure_root(root: Path, platform: Platform, cloud: bool = False) -> None:
    """Make the installed system *root* a test VM: autologin, no password, fast boot; or,
    *cloud*, a cloud image: nobody logged in, no password, cloud-init's network."""
    for unit in MASKED_UNITS:
        mask = root / "etc/systemd/system" / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")
    if cloud:
        # Like a distribution's cloud image: the host name and users come from the seed.
        (root / "etc/network/interfaces").write_text(_CLOUD_INTERFACES)
        (root / "etc/network/interfaces.d").mkdir(parents=True, exist_ok=True)
        return
    dropin = root / f"etc/systemd/system/serial-getty@{platform.console}.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "autologin.conf").write_text(_AUTOLOGIN)
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("root:"):
            fields = line.split(":")
            fields[1] = ""  # no password: log in without one
            lines[index] = ":".join(fields)
    shadow.write_text("".join(lines))
    (root / "etc/hostname").write_text(f"{HOSTNAME}\n")
    (root / "etc/hosts").write_text(_HOSTS)


def _run_step(name: str, command: list[str], timeout: float, advice: str) -> float:
    started = time.monotonic()
    logger.info("Debian image: %s: %s", name, shlex.join(command))
    try:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise SetupError(
            f"building the Debian test image: {name} did not finish within {timeout:g} s; "
            f"{advice}\ncommand: {shlex.join(command)}"
        ) from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise SetupError(
            f"building the Debian test image: {name} failed (exit status {result.returncode}); "
            f"{advice}\ncommand: {shlex.join(command)}\n" + "\n".join(output[-15:])
        )
    seconds = time.monotonic() - started
    logger.info("Debian image: %s took %.1f s", name, seconds)
    return seconds


def _build(work: Path, packages: Sequence[str], platform: Platform, cloud: bool) -> None:
    started = time.monotonic()
    root, out, raw = work / "root", work / "out", work / "disk.raw"
    out.mkdir()
    steps: dict[str, float] = {}
    sources = host_debian_sources()
    mirrors = ", ".join(sources) if sources else "deb.debian.org (mmdebstrap's default)"
    steps["mmdebstrap"] = _run_step(
        "mmdebstrap",
        mmdebstrap_command(packages, root, sources, platform),
        _MMDEBSTRAP_TIMEOUT,
        f"check that `sudo apt-get update` reaches the Debian mirror ({mirrors}) and that "
        "the packages exist in Debian 12, then run the tests again",
    )
    step = time.monotonic()
    configure_root(root, platform, cloud)
    kernel, initramfs = _boot_files(root, platform)
    shutil.copyfile(kernel, out / "vmlinuz")
    shutil.copyfile(initramfs, out / "initrd.img")
    steps["configure"] = time.monotonic() - step
    step = time.monotonic()
    # A disk the firmware boots gives the kernel the platform's own arguments too: under a
    # loaded host the kernel's IO-APIC timer check fails without them ("MP-BIOS bug").
    arguments = (*kernel_args(platform), *(platform.kernel_args if cloud else ()))
    boot = _boot_partition(work, kernel, initramfs, arguments)
    if cloud:
        _add_uefi_boot(boot, work, root, platform, arguments)
    # The whole disk's size up front: mkfs.ext4 leaves the file short where it writes nothing.
    # A GPT keeps its backup in the last 33 sectors, after the root partition.
    disk_sectors = _ROOT_START + _ROOT_BYTES // _SECTOR + (_GPT_SECTORS + 1 if cloud else 0)
    with raw.open("wb") as disk:
        disk.truncate(disk_sectors * _SECTOR)
    steps["boot partition"] = time.monotonic() - step
    steps["mkfs.ext4"] = _run_step(
        "mkfs.ext4",
        [
            "mkfs.ext4",
            "-q",
            "-L",
            "pytest-qemu",
            "-E",
            f"offset={_ROOT_START * _SECTOR}",
            "-d",
            str(root),
            str(raw),
            f"{_ROOT_BYTES // 1024}k",
        ],
        _STEP_TIMEOUT,
        f"check the free space in {work.parent} (the raw disk takes {DISK_SIZE} while building)",
    )
    with raw.open("r+b") as disk:
        if cloud:
            # GPT: UEFI boots systemd-boot from the EFI system partition; SYSLINUX's GPT
            # MBR code boots the same partition (legacy-BIOS-bootable) under a BIOS.
            gpt_code = (root / "usr/lib/syslinux/mbr/gptmbr.bin").read_bytes()
            primary, backup = guid_partition_table(gpt_code, disk_sectors)
            disk.write(primary)
            disk.seek((disk_sectors - _GPT_SECTORS) * _SECTOR)
            disk.write(backup)
        else:
            mbr_code = (root / "usr/lib/syslinux/mbr/mbr.bin").read_bytes()
            disk.write(master_boot_record(mbr_code, _ROOT_START + _ROOT_BYTES // _SECTOR))
        disk.seek(_BOOT_START * _SECTOR)
        with boot.open("rb") as partition:
            shutil.copyfileobj(partition, disk)
    shutil.rmtree(root)
    steps["qemu-img convert"] = _run_step(
        "qemu-img convert",
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / "disk.qcow2")],
        _STEP_TIMEOUT,
        f"check the free space in {work.parent}",
    )
    raw.unlink()
    build_seconds = time.monotonic() - started
    disk_size = (out / "disk.qcow2").stat().st_size
    manifest = {
        "suite": SUITE,
        "architecture": platform.debian_arch,
        "packages": list(packages),
        "cloud": cloud,
        "kernel_args": list(kernel_args(platform)),
        "kernel_release": kernel.name.removeprefix("vmlinuz-"),
        "sources": sources,
        "build_seconds": round(build_seconds, 2),
        "steps": {name: round(seconds, 2) for name, seconds in steps.items()},
        "disk_size": disk_size,
    }
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for path in out.iterdir():
        # Readable by everyone: a root build serves the tests of every user.
        path.chmod(0o644)
    out.chmod(0o755)
    logger.info(
        "Debian image built in %.1f s (%s), disk %.0f MB",
        build_seconds,
        ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps.items()),
        disk_size / 1e6,
    )


def syslinux_config(kernel_args: Sequence[str]) -> str:
    """SYSLINUX's configuration: boot ``vmlinuz`` with ``initrd.img`` at once."""
    return (
        # SERIAL first: SYSLINUX then also speaks on the serial console, which the test logs.
        # NOESCAPE: a byte arriving on that console must not stop the boot at a prompt.
        "SERIAL 0 115200\nNOESCAPE 1\nDEFAULT linux\nPROMPT 0\nTIMEOUT 1\nLABEL linux\n"
        "  KERNEL vmlinuz\n"
        f"  INITRD initrd.img\n  APPEND {' '.join(kernel_args)}\n"
    )


def master_boot_record(code: bytes, disk_sectors: int) -> bytes:
    """The first sector: *code* (SYSLINUX's ``mbr.bin``) and a partition table with the
    bootable FAT16 boot partition and the Linux root partition after it (LBA only)."""

    def entry(bootable: bool, kind: int, start: int, sectors: int) -> bytes:
        no_chs = b"\xfe\xff\xff"  # cylinder/head/sector unused: firmware reads the LBA
        flag = b"\x80" if bootable else b"\x00"
        return flag + no_chs + bytes([kind]) + no_chs + struct.pack("<II", start, sectors)

    if len(code) > 440:
        raise SetupError(f"the MBR boot code is {len(code)} bytes; at most 440 fit")
    return (
        code.ljust(440, b"\0")
        + b"PQ\0\0"  # the disk signature
        + b"\0\0"
        + entry(True, 0x06, _BOOT_START, _BOOT_SECTORS)
        + entry(False, 0x83, _ROOT_START, disk_sectors - _ROOT_START)
        + bytes(32)
        + b"\x55\xaa"
    )


#: Sectors of a GPT's partition entries (128 of 128 bytes), plus the header's sector.
_GPT_SECTORS = 33
_ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
_LINUX_TYPE = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
#: GPT attribute bit 2: the partition SYSLINUX's gptmbr.bin boots under a BIOS.
_LEGACY_BIOS_BOOTABLE = 1 << 2


def guid_partition_table(code: bytes, disk_sectors: int) -> tuple[bytes, bytes]:
    """A GPT for a disk of *disk_sectors*: the boot partition as the EFI system partition
    (also legacy-BIOS-bootable) and the root partition after it. Returns the first 34
    sectors (protective MBR with *code*, header, entries) and the last 33 (the backups).
    GUIDs are derived from the layout: the same disk gets the same table."""
    last = disk_sectors - 1

    def guid(name: str) -> bytes:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"pytest-qemu:{name}").bytes_le

    def entry(kind: uuid.UUID, name: str, first: int, end: int, attributes: int) -> bytes:
        label = name.encode("utf-16-le").ljust(72, b"\0")
        return kind.bytes_le + guid(name) + struct.pack("<QQQ", first, end, attributes) + label

    entries = (
        entry(_ESP_TYPE, "EFI system", _BOOT_START, _ROOT_START - 1, _LEGACY_BIOS_BOOTABLE)
        + entry(_LINUX_TYPE, "root", _ROOT_START, last - _GPT_SECTORS, 0)
    ).ljust(128 * 128, b"\0")

    def header(current: int, backup: int, entries_at: int) -> bytes:
        fields = struct.pack(
            "<8sIIIIQQQQ16sQIII",
            b"EFI PART", 0x00010000, 92, 0, 0, current, backup, 34, last - _GPT_SECTORS,
            guid("disk"), entries_at, 128, 128, zlib.crc32(entries),
        )  # fmt: skip
        checksum = zlib.crc32(fields)
        return (fields[:16] + struct.pack("<I", checksum) + fields[20:]).ljust(_SECTOR, b"\0")

    if len(code) > 440:
        raise SetupError(f"the GPT MBR boot code is {len(code)} bytes; at most 440 fit")
    protective = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1,
                             min(last, 0xFFFFFFFF))  # fmt: skip
    mbr = code.ljust(440, b"\0") + bytes(6) + protective + bytes(48) + b"\x55\xaa"
    primary = mbr + header(1, last, 2) + entries
    backup = entries + header(last, 1, last - _GPT_SECTORS + 1)
    return primary, backup


def systemd_boot_entry(kernel_args: Sequence[str]) -> dict[str, str]:
    """systemd-boot's configuration: boot ``vmlinuz`` with ``initrd.img`` at once."""
    return {
        "loader/loader.conf": "default debian.conf\ntimeout 0\n",
        "loader/entries/debian.conf": (
            f"title Debian\nlinux /vmlinuz\ninitrd /initrd.img\noptions {' '.join(kernel_args)}\n"
        ),
    }


def _add_uefi_boot(
    boot: Path, work: Path, root: Path, platform: Platform, arguments: Sequence[str]
) -> None:
    """Make the boot partition *boot* an EFI system partition too: systemd-boot (from the
    image's own ``systemd-boot-efi``) as the removable-media boot file, and its entry."""
    if platform.uefi is None:
        return
    arch = platform.uefi.efi_arch
    loader = root / f"usr/lib/systemd/boot/efi/systemd-boot{arch}.efi"
    advice = "check that mtools is installed and systemd-boot-efi is among the packages"
    _run_step("mmd", ["mmd", "-i", str(boot), "::EFI", "::EFI/BOOT", "::loader",
                      "::loader/entries"], _STEP_TIMEOUT, advice)  # fmt: skip
    _run_step("mcopy", ["mcopy", "-i", str(boot), str(loader),
                        f"::EFI/BOOT/BOOT{arch.upper()}.EFI"], _STEP_TIMEOUT, advice)  # fmt: skip
    for name, text in systemd_boot_entry(arguments).items():
        source = work / name.replace("/", "_")
        source.write_text(text)
        _run_step("mcopy", ["mcopy", "-i", str(boot), str(source), f"::{name}"],
                  _STEP_TIMEOUT, advice)  # fmt: skip


def _boot_partition(work: Path, kernel: Path, initramfs: Path, arguments: Sequence[str]) -> Path:
    """The FAT16 boot partition's file system, with the kernel, initramfs and SYSLINUX
    (made with mtools: no mount). Its hidden-sectors field says where it starts."""
    boot = work / "boot.img"
    config = work / "syslinux.cfg"
    config.write_text(syslinux_config(arguments))
    advice = "check that syslinux, mtools and dosfstools are installed (./scripts/setup.sh)"
    kilobytes = str(_BOOT_SECTORS * _SECTOR // 1024)
    for name, command in (
        (
            "mkfs.fat",
            [
                "mkfs.fat",
                "-C",
                "-F",
                "16",
                "-h",
                str(_BOOT_START),
                "-n",
                "BOOT",
                str(boot),
                kilobytes,
            ],
        ),
        ("mcopy", ["mcopy", "-i", str(boot), str(kernel), "::vmlinuz"]),
        ("mcopy", ["mcopy", "-i", str(boot), str(initramfs), "::initrd.img"]),
        ("mcopy", ["mcopy", "-i", str(boot), str(config), "::syslinux.cfg"]),
        ("syslinux", ["syslinux", "--install", str(boot)]),
    ):
        _run_step(name, command, _STEP_TIMEOUT, advice)
    return boot


def _boot_files(root: Path, platform: Platform) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initramfs = sorted((root / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initramfs) != 1:
        raise SetupError(
            f"building the Debian test image: expected one kernel and one initramfs in "
            f"/boot, found {[p.name for p in kernels + initramfs]}: is {platform.kernel_package} "
            "among the packages?"
        )
    return kernels[0], initramfs[0]


def _load(directory: Path) -> DebianImage:
    manifest = json.loads((directory / _MANIFEST).read_text())
    return DebianImage(
        disk=directory / "disk.qcow2",
        kernel=directory / "vmlinuz",
        initramfs=directory / "initrd.img",
        kernel_args=tuple(manifest["kernel_args"]),
        root_password="",
        build_seconds=float(manifest["build_seconds"]),
        disk_size=int(manifest["disk_size"]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the image and print where it is."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_qemu.images.debian", description=__doc__.splitlines()[0]
    )
    parser.add_argument("cache_dir", nargs="?", type=Path, default=default_cache_dir())
    parser.add_argument("--package", action="append", default=[], help="an extra package")
    parser.add_argument(
        "--cloud", action="store_true", help="the stand-in for a cloud image (cloud-init, sshd)"
    )
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = CLOUD_PACKAGES if options.cloud else DEFAULT_PACKAGES
    packages = (*base, *options.package) if options.package else DEFAULT_PACKAGES
    try:
        image = build_debian_image(options.cache_dir, packages, cloud=options.cloud)
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({key: str(value) for key, value in vars(image).items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
