"""Guest architectures: each is a :class:`Platform` in a module of its own, registered in
:data:`PLATFORMS` by its name (``uname -m`` in the guest); its aliases are its own."""

from __future__ import annotations

import platform as host

from pytest_qemu.platforms.base import Platform
from pytest_qemu.registry import Entry, Registry

#: Every architecture: a new one is a module beside this one and a line here.
PLATFORMS: Registry[Platform] = Registry(
    "architecture",
    [
        Entry("x86_64", "pytest_qemu.platforms.x86_64:PLATFORM", "64-bit PC"),
        Entry("aarch64", "pytest_qemu.platforms.aarch64:PLATFORM", "64-bit Arm, emulated"),
        Entry("i386", "pytest_qemu.platforms.i386:PLATFORM", "32-bit PC, emulated"),
        Entry("armhf", "pytest_qemu.platforms.armhf:PLATFORM", "32-bit Arm, emulated"),
        Entry("mips64el", "pytest_qemu.platforms.mips64el:PLATFORM", "64-bit MIPS, emulated"),
        Entry("ppc64le", "pytest_qemu.platforms.ppc64le:PLATFORM", "64-bit POWER, emulated"),
        Entry("s390x", "pytest_qemu.platforms.s390x:PLATFORM", "IBM Z (big-endian), emulated"),
        Entry("riscv64", "pytest_qemu.platforms.riscv64:PLATFORM", "64-bit RISC-V, emulated"),
    ],
    refusal="{what} {name!r} is not supported: use one of {names}",
)


def names() -> list[str]:
    """Every supported architecture name."""
    return PLATFORMS.names()


def architectures() -> list[str]:
    """Every architecture VMs can run, for a test matrix:
    ``@pytest.mark.parametrize("qemu_arch", pytest_qemu.architectures())``."""
    return names()


def get_platform(name: str | None = None) -> Platform:
    """The platform called *name* or one of its aliases (``None``: the host's architecture)."""
    wanted = host.machine() if name is None else name
    if wanted in PLATFORMS:
        return PLATFORMS.load(wanted)
    for known in PLATFORMS.names():
        platform = PLATFORMS.load(known)
        if wanted in platform.aliases:
            return platform
    raise PLATFORMS.unknown(wanted)


__all__ = ["PLATFORMS", "Platform", "architectures", "get_platform", "names"]
