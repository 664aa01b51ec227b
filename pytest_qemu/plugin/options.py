"""Command-line and ini options, and the settings they resolve to."""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_qemu.cache import (
    DEFAULT_SOURCE,
    default_cache_dir_and_source,
    make_writable_directory,
)
from pytest_qemu.devices.options import validate_kernel_argument
from pytest_qemu.errors import ConfigurationError, SetupError
from pytest_qemu.guests import GUEST_KINDS
from pytest_qemu.platforms import PLATFORMS, Platform, get_platform

ACCELERATOR_CHOICES = ("auto", "kvm", "tcg")

# (name, help, default): each is --qemu-NAME on the command line and qemu_NAME in the ini file.
_OPTIONS = (
    ("binary", "QEMU binary to run (default: the architecture's qemu-system-*)", ""),
    ("arch", f"guest architecture: {PLATFORMS.help()} (default: the host's)", ""),
    ("userland", f"the guest's userland: {GUEST_KINDS.help()}", "busybox"),
    (
        "packages",
        "Debian packages for --qemu-userland debian, comma-separated (with their dependencies)",
        "",
    ),
    (
        "suite",
        "the Debian suite of --qemu-userland debian (default: the architecture's, as bookworm)",
        "",
    ),
    ("kernel", "guest kernel (default: the host's newest /boot/vmlinuz-*)", ""),
    ("initramfs", "guest initramfs (default: one pytest-qemu builds from busybox-static)", ""),
    (
        "arch-files",
        "ARCH=DIR[,ARCH=DIR...]: an architecture's kernel (DIR/boot/vmlinuz-*), modules "
        "(DIR/lib/modules/) and busybox-static (DIR/bin/busybox) from DIR instead of Debian's "
        "packages, for a host without apt",
        "",
    ),
    (
        "image",
        "a disk image to boot instead of the default guest (each VM writes to a throwaway overlay)",
        "",
    ),
    ("kernel-args", "extra kernel command-line arguments", ""),
    (
        "accel",
        "accelerator: auto (KVM if a probe guest runs under it, else TCG), kvm or tcg",
        "auto",
    ),
    ("memory", "guest memory in MiB", "256"),
    ("boot-timeout", "seconds a guest may take to come up", "120"),
    (
        "cache-dir",
        "where built guests, snapshots and probe results are kept (default ~/.cache/pytest-qemu)",
        "",
    ),
    ("snapshots", "restore VMs from a saved boot instead of booting them: on or off", "on"),
    ("log-dir", "copy the logs and transcripts of failed tests' VMs into this directory", ""),
    ("gdb", "on: give every VM a gdb stub (a UNIX socket) and boot kernels without KASLR", "off"),
    (
        "keep-failed",
        "on: keep a failed test's VMs running after it and say how to reach them; with a "
        "terminal, wait for Enter",
        "off",
    ),
    (
        "prepare-ahead",
        "how many VMs to start ahead, while tests run, for the next tests that use qemu_vm: "
        "a number, off, or auto (the CPUs pytest's processes leave free, at most 4: none under "
        "-n auto)",
        "auto",
    ),
    (
        "kernel-warnings",
        "fail: a warning, BUG or oops in a guest kernel's log fails the test; ignore",
        "fail",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("qemu", "QEMU virtual machines (pytest-qemu)")
    for name, help_text, default in _OPTIONS:
        dest = f"qemu_{name.replace('-', '_')}"
        # On/off options work as flags too: --qemu-gdb means --qemu-gdb=on.
        flag = {"nargs": "?", "const": "on"} if default in ("on", "off") else {}
        group.addoption(
            f"--qemu-{name}", dest=dest, default=None, help=f"{help_text} [ini: {dest}]", **flag
        )
        parser.addini(dest, help_text, default=default)


#: Gives an option's value as text, by its name (``"boot-timeout"``).
Values = Callable[[str], str]

#: Each option's default value, as text.
_DEFAULTS = {name: default for name, _help, default in _OPTIONS}


def _value(config: pytest.Config, name: str) -> str:
    """Option *name*'s value: from the command line, else the ini file (else its default)."""
    dest = f"qemu_{name.replace('-', '_')}"
    from_command_line = config.getoption(dest)
    if from_command_line is not None:
        return str(from_command_line)
    return str(config.getini(dest))


def _number(config: Values, name: str, kind: type[int] | type[float]) -> float:
    text = config(name)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigurationError(f"--qemu-{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"--qemu-{name} {text!r} is not a finite number")
    if value <= 0:
        raise ConfigurationError(f"--qemu-{name} {text!r} must be greater than zero")
    return value


#: No Linux guest boots in less; each VM checks the real minimum for its kernel and initramfs.
_MEMORY_FLOOR_MB = 16


def _memory(config: Values) -> int:
    memory = int(_number(config, "memory", int))
    if memory < _MEMORY_FLOOR_MB:
        raise ConfigurationError(
            f"--qemu-memory {memory} MiB is far too small: no Linux guest boots in less than "
            f"{_MEMORY_FLOOR_MB} MiB, and the default guest on Debian 12 needs about 96; "
            "each VM reports the minimum for its kernel and initramfs when it is created"
        )
    return memory


def _kernel_args(config: Values) -> tuple[str, ...]:
    text = config("kernel-args")
    try:
        arguments = shlex.split(text)
    except ValueError as error:
        raise ConfigurationError(
            f"--qemu-kernel-args {text!r} cannot be split into arguments ({error}): "
            "close every quote, or escape a lone quote with a backslash"
        ) from None
    for argument in arguments:
        validate_kernel_argument(argument, f"--qemu-kernel-args {text!r}: argument")
    return tuple(arguments)


def _cache_dir(config: Values) -> Path | None:
    text = config("cache-dir")
    if not text:
        # From the environment: checked without creating anything, since every pytest
        # run loads the plugin, VMs or not. The default under ~/.cache is not: a run
        # without VMs must not fail for a home directory it does not use (a VM that
        # needs the cache then fails, naming it).
        path, source = default_cache_dir_and_source()
        if source != DEFAULT_SOURCE and (problem := _unusable_directory(path)) is not None:
            raise ConfigurationError(
                f"the pytest-qemu cache directory {str(path)!r} (from {source}) cannot be "
                f"used: {problem}. Give a directory you can create and write to with "
                "--qemu-cache-dir or PYTEST_QEMU_CACHE_DIR"
            )
        return None
    # Checked now: otherwise the first VM fails deep inside the guest build.
    return _writable_directory(config, "cache-dir")


def _log_dir(config: Values) -> Path | None:
    # Checked now: otherwise the first failing test's report is lost copying its logs.
    return _writable_directory(config, "log-dir") if config("log-dir") else None


def _writable_directory(config: Values, name: str) -> Path:
    """The directory option *name*, created if needed; a usage error if it cannot be."""
    text = config(name)
    path = Path(text).expanduser().absolute()
    try:
        make_writable_directory(path)
    except OSError as error:
        raise ConfigurationError(
            f"--qemu-{name} {text!r} is not a writable directory ({error.strerror}: "
            f"{error.filename or path}): give a directory you can create and write to"
        ) from None
    return path


def _unusable_directory(path: Path) -> str | None:
    """Why *path* cannot become a writable directory (None if it can), creating nothing."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            return f"{existing} is a dangling symbolic link"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (a read-only file system, or its permissions)"
    return None


def _existing_file(config: Values, name: str) -> Path | None:
    text = config(name)
    if not text:
        return None
    path = Path(text).expanduser().absolute()
    if not path.is_file():
        raise ConfigurationError(f"--qemu-{name} {text!r}: no such file")
    return path


def _arch_files(config: Values) -> tuple[tuple[str, Path], ...]:
    """``ARCH=DIR`` pairs, each architecture by its registered name, each DIR existing."""
    pairs: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in config("arch-files").split(","))):
        arch, separator, directory = item.partition("=")
        if not separator or not arch or not directory:
            raise ConfigurationError(
                f"--qemu-arch-files {item!r} is not ARCH=DIR: an architecture's name "
                f"({', '.join(PLATFORMS.names())}), '=', and the directory of its files"
            )
        name = get_platform(arch).name
        path = Path(directory).expanduser().absolute()
        if not path.is_dir():
            raise ConfigurationError(f"--qemu-arch-files {item!r}: {path} is not a directory")
        pairs[name] = path
    return tuple(sorted(pairs.items()))


def _choice(config: Values, name: str, choices: tuple[str, ...]) -> str:
    value = config(name)
    if value not in choices:
        raise ConfigurationError(f"--qemu-{name} {value!r} is not one of {choices}")
    return value


def _prepare_ahead(config: Values) -> str:
    value = config("prepare-ahead")
    if value not in ("auto", "off") and not (value.isdigit() and int(value) > 0):
        raise ConfigurationError(
            f"--qemu-prepare-ahead {value!r} is not 'auto', 'off' or a number of VMs (1, 2...)"
        )
    return value


def optional_str(value: object) -> str | None:
    """*value* as text, None staying None (a marker's or option's value)."""
    return None if value is None else str(value)


@dataclass(frozen=True)
class QemuSettings:
    """The run's QEMU settings, from the command line, the ini file and defaults."""

    binary: str
    arch: str | None
    userland: str
    kernel: Path | None
    initramfs: Path | None
    image: Path | None
    kernel_args: tuple[str, ...]
    accel: str
    memory: int
    boot_timeout: float
    cache_dir: Path | None
    snapshots: bool
    kernel_warnings: str = "fail"
    log_dir: Path | None = None
    gdb: bool = False
    keep_failed: bool = False
    prepare_ahead: str = "auto"
    #: Per architecture, a directory with its kernel, modules and busybox (--qemu-arch-files).
    arch_files: tuple[tuple[str, Path], ...] = ()
    #: The Debian userland's packages and suite (``--qemu-packages``, ``--qemu-suite``).
    packages: tuple[str, ...] = ()
    suite: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> QemuSettings:
        """The settings of *config*'s run: command line, then ini file, then defaults."""
        return cls.from_values(lambda name: _value(config, name))

    @classmethod
    def defaults(cls, **overrides: Any) -> QemuSettings:
        """The settings the options' defaults give, with *overrides* (outside pytest)."""
        return dataclasses.replace(cls.from_values(_DEFAULTS.__getitem__), **overrides)

    @classmethod
    def from_values(cls, config: Values) -> QemuSettings:
        """The settings of the options' values as text (*config* gives an option's value
        by its name), each checked."""
        accel = config("accel")
        if accel not in ACCELERATOR_CHOICES:
            raise ConfigurationError(f"--qemu-accel {accel!r} is not one of {ACCELERATOR_CHOICES}")
        snapshots = config("snapshots")
        if snapshots not in ("on", "off"):
            raise ConfigurationError(f"--qemu-snapshots {snapshots!r} is not 'on' or 'off'")
        userland = config("userland")
        if userland not in GUEST_KINDS:
            raise GUEST_KINDS.unknown(userland, "--qemu-userland")
        arch = config("arch") or None
        if arch is not None:
            get_platform(arch)  # a clear error for an unknown architecture, before any test
        return cls(
            binary=config("binary"),
            arch=arch,
            userland=userland,
            kernel=_existing_file(config, "kernel"),
            initramfs=_existing_file(config, "initramfs"),
            image=_existing_file(config, "image"),
            kernel_args=_kernel_args(config),
            accel=accel,
            memory=_memory(config),
            boot_timeout=_number(config, "boot-timeout", float),
            cache_dir=_cache_dir(config),
            snapshots=snapshots == "on",
            kernel_warnings=_choice(config, "kernel-warnings", ("fail", "ignore")),
            log_dir=_log_dir(config),
            gdb=_choice(config, "gdb", ("on", "off")) == "on",
            keep_failed=_choice(config, "keep-failed", ("on", "off")) == "on",
            prepare_ahead=_prepare_ahead(config),
            arch_files=_arch_files(config),
            packages=tuple(name.strip() for name in config("packages").split(",") if name.strip()),
            suite=config("suite") or None,
        )

    def resolved_binary(self, platform: Platform) -> str:
        """The path of the QEMU binary for *platform*; a clear error if it is not installed."""
        binary = self.binary or platform.qemu_binary
        found = shutil.which(binary)
        if found is None:
            raise SetupError(
                f"QEMU binary {binary!r} was not found: install it with "
                f"`apt-get install {platform.qemu_package}`, or name another with --qemu-binary"
            )
        return found
