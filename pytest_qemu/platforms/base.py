"""The :class:`Platform` interface: one CPU architecture as QEMU and the guest see it.

A platform names the QEMU binary, machine and CPU, the console device and the
kernel's name for it, how virtio devices attach, how the KVM probe runs, the
kernel command-line limit, the kernel image format and how it is made
bootable, the compiler of the guest agent, and where its kernel and busybox
come from. Everything else in pytest-qemu asks the platform instead of
assuming an architecture. Each architecture is one module beside this one.
"""

from __future__ import annotations

import abc
import platform as host
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pytest_qemu.errors import ConfigurationError, SetupError
from pytest_qemu.platforms.foreign import unpacked_root


@dataclass(frozen=True)
class UefiFirmware:
    """The UEFI firmware Debian ships for a platform, in the files of *package*: the
    code (flash unit 0, read-only) and the variable store each VM gets a copy of."""

    package: str
    code: Path
    variables: Path
    #: Secure boot: code that enforces it and a variable store with Microsoft's keys
    #: enrolled (for images booting through shim); None where Debian ships none.
    secure_code: Path | None = None
    secure_variables: Path | None = None
    #: QEMU arguments the firmware needs beyond the flash in every VM (i386's only
    #: OVMF is a secure boot build: SMM, on q35).
    machine_args: tuple[str, ...] = ()
    #: QEMU arguments secure boot needs beyond those (x86_64: SMM, on q35).
    secure_args: tuple[str, ...] = ()
    #: With secure boot on, whether the firmware still boots a kernel given directly
    #: (``-kernel``) that its keys do not trust: OVMF falls back to its own ``bzImage``
    #: loader (the guest runs with secure boot on, its kernel locked down); AAVMF
    #: refuses it ("Security Violation").
    secure_direct_boot: bool = False
    #: UEFI's name for the architecture in boot file names (``BOOTX64.EFI``,
    #: ``systemd-bootx64.efi``).
    efi_arch: str = "x64"


@dataclass(frozen=True)
class Platform(abc.ABC):
    """One guest architecture. Instances are immutable and compare by value."""

    #: The name users pass (``arch="aarch64"``), as ``uname -m`` prints it in the guest.
    name: str
    #: Debian's name for the architecture (``amd64``, ``arm64``).
    debian_arch: str
    #: The QEMU system emulator and the Debian package that provides it.
    qemu_binary: str
    qemu_package: str
    #: QEMU arguments that choose the machine (and CPU, where the default is not usable).
    machine_args: tuple[str, ...]
    #: The guest's serial console device, for ``console=``.
    console: str
    #: The Debian kernel package (a meta-package naming the current kernel).
    kernel_package: str
    #: A C compiler that builds static binaries for this architecture.
    compiler: str
    #: Debian packages that provide :attr:`compiler` and its static C library.
    compiler_packages: tuple[str, ...]
    #: Debian's kernel for cloud VMs (fewer drivers, quicker to boot), if it has one here.
    cloud_kernel_package: str | None = None
    #: Kernel arguments every guest of this platform gets.
    kernel_args: tuple[str, ...] = ()
    #: The Debian release a foreign guest's kernel and busybox are downloaded from.
    debian_suite: str = "bookworm"
    #: Other names users may give for it (Debian's, for one).
    aliases: tuple[str, ...] = ()
    #: How virtio devices attach: ``pci`` (``virtio-*-pci``), ``device`` (MMIO), ``ccw``.
    virtio_transport: str = "pci"
    #: The guest kernel modules of that transport.
    virtio_modules: tuple[str, ...] = ("virtio_pci",)
    #: Kinds of virtio device (``rng``, ``9p``...) this machine cannot have at all.
    unavailable_devices: tuple[str, ...] = ()
    #: How many PCI devices the machine gives an interrupt to (None: as many as QEMU takes).
    pci_slots: int | None = None
    #: The longest kernel command line its kernels take, in bytes (without the NUL).
    command_line_limit: int = 2047
    #: The file name prefix of its kernel images in ``/boot`` (``vmlinuz-<release>``).
    kernel_image_prefix: str = "vmlinuz"
    #: Kernel log messages that look like trouble (``WARNING:``) but are this machine's
    #: normal boot: kernel-warning detection passes over them.
    harmless_kernel_messages: tuple[str, ...] = ()
    #: Why its VMs cannot be cloned from a template under this QEMU (None: they can).
    clone_blocker: str | None = None
    #: Why its VMs with devices (beyond the command channel) cannot be cloned (None: they can).
    device_clone_blocker: str | None = None
    #: ``uname -m`` in the guest, where it is not :attr:`name` (``i686`` for ``i386``).
    guest_machine: str = ""
    #: The guest's word size in bits (its pointers, ``long`` and ELF class).
    word_size: int = 64
    #: The guest's byte order: ``little`` or ``big`` (s390x).
    byte_order: Literal["little", "big"] = "little"
    #: gdb's name for the architecture (``set architecture``), for ``gdb-multiarch``.
    gdb_architecture: str = ""
    #: The UEFI firmware for ``firmware="uefi"``; None where Debian ships none.
    uefi: UefiFirmware | None = None
    #: Why there is no :attr:`uefi` here, for the error ``firmware="uefi"`` gets.
    uefi_missing: str = "Debian ships no UEFI firmware for its QEMU machine"

    def uefi_kernel(self, image: Path, prepared: Path) -> Path:
        """Which of the kernel *image* and its faster form *prepared* (from
        :meth:`prepare_kernel`) the UEFI firmware boots directly: the faster one here."""
        return prepared

    def uefi_files(self, secure_boot: bool = False) -> tuple[Path, Path, tuple[str, ...]]:
        """The UEFI code, the variable store to copy, and the extra QEMU arguments; a
        :class:`ConfigurationError` where there is no such firmware, a
        :class:`SetupError` naming the package when its files are missing."""
        firmware = self.uefi
        if firmware is None:
            raise ConfigurationError(
                f"firmware='uefi' is not available on {self.name}: {self.uefi_missing}; "
                "use firmware='bios' (the default) there"
            )
        code, variables = firmware.code, firmware.variables
        extra = firmware.machine_args
        if secure_boot:
            if firmware.secure_code is None or firmware.secure_variables is None:
                raise ConfigurationError(
                    f"secure_boot=True: Debian ships no UEFI variable store with Microsoft's "
                    f"keys for {self.name}"
                )
            code, variables = firmware.secure_code, firmware.secure_variables
            extra = (*extra, *firmware.secure_args)
        for path in (code, variables):
            if not path.is_file():
                raise SetupError(
                    f"firmware='uefi' on {self.name} needs {path}, which is missing: install "
                    f"it with `sudo apt-get install {firmware.package}`"
                )
        return code, variables, extra

    def clone_blocker_for(self, has_devices: bool) -> str | None:
        """Why a VM of this platform, with devices or without, cannot be cloned (None: it can)."""
        return self.clone_blocker or (self.device_clone_blocker if has_devices else None)

    def virtio_device(self, kind: str) -> str:
        """QEMU's driver of the virtio device *kind* (``rng``, ``blk``, ``9p``...) here.

        Raises:
            ConfigurationError: this machine cannot have such a device.
        """
        if kind in self.unavailable_devices:
            raise ConfigurationError(
                f"a virtio {kind} device is not available on {self.name} guests "
                f"({' '.join(self.machine_args)}): leave it out of this architecture's VMs"
            )
        return f"virtio-{kind}-{self.virtio_transport}"

    def console_args(self, chardev: str) -> list[str]:
        """QEMU arguments that put the serial console :attr:`console` on *chardev*."""
        return ["-serial", f"chardev:{chardev}"]

    def kernel_memory_size(self, image: Path) -> int | None:
        """The guest memory the kernel *image* takes as it boots (its file size, unless
        the image format says it unpacks itself into more); None if it cannot be read."""
        try:
            return image.stat().st_size if image.is_file() else None
        except OSError:
            return None

    def kvm_probe_args(self, directory: Path) -> list[str] | None:
        """QEMU arguments (machine included) of a tiny guest that makes QEMU exit with
        :attr:`kvm_probe_status` as soon as it runs, its files written to *directory*;
        None if this platform has none (a kernel is then the probe)."""
        return None

    #: QEMU's exit status when the probe guest of :meth:`kvm_probe_args` ran.
    kvm_probe_status: int = 0

    @property
    def is_host(self) -> bool:
        """Whether the host runs this architecture (its kernel, busybox and KVM are usable)."""
        return host.machine() == self.name

    @property
    def can_use_kvm(self) -> bool:
        """Whether KVM could run this platform's guests on this host."""
        return self.is_host

    @abc.abstractmethod
    def prepare_kernel(self, image: Path, destination: Path) -> bool:
        """Write a faster-booting form of the kernel *image* to *destination*.

        Returns False if there is none (the image is then booted as it is).
        """

    def system_root(self, cache_dir: Path) -> Path:
        """Where this platform's kernel (``boot/``, ``lib/modules/``) and busybox are:
        the host's ``/``, or Debian packages of a foreign architecture unpacked in the cache."""
        if self.is_host:
            return Path("/")
        return unpacked_root(cache_dir, self.debian_arch, self.kernel_package, self.debian_suite)

    @property
    def uname_machine(self) -> str:
        """What ``uname -m`` prints in this platform's guests."""
        return self.guest_machine or self.name

    def gdb_command(self, socket: Path, symbols: Path | None) -> list[str]:
        """The command that attaches gdb to the stub on *socket*, with *symbols* if known:
        the host's ``gdb`` for the host's architecture, else ``gdb-multiarch`` told this one."""
        if self.is_host or not self.gdb_architecture:
            gdb = ["gdb"]
        else:
            gdb = ["gdb-multiarch", "-ex", f"set architecture {self.gdb_architecture}"]
        return [*gdb, "-ex", f"target remote {socket}", *([str(symbols)] if symbols else [])]

    def __str__(self) -> str:
        return self.name
