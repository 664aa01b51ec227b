"""The :class:`Platform` interface: one CPU architecture as QEMU and the guest see it.

A platform names the QEMU binary and machine, the console device, how its
kernel image is made bootable, and where its kernel and busybox come from.
Everything else in pytest-qemu asks the platform instead of assuming x86.
Each architecture is one module beside this one.
"""

from __future__ import annotations

import abc
import platform as host
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.platforms.foreign import unpacked_root


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
    #: Kernel arguments every guest of this platform gets.
    kernel_args: tuple[str, ...] = ()
    #: The Debian release a foreign guest's kernel and busybox are downloaded from.
    debian_suite: str = "bookworm"

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

    def __str__(self) -> str:
        return self.name
