"""``python -m pytest_qemu``: an interactive shell in the VM a test would get.

    python -m pytest_qemu shell [--arch NAME] [--userland host] [--share DIR]
                                [--image disk.qcow2] [--kernel K] [--initramfs I]
                                [--kernel-args ARGS] [--memory MiB] [--snapshot off]
                                [-- PYTEST_OPTIONS...]
    python -m pytest_qemu console SOCKET
    python -m pytest_qemu doctor [--arch NAME]
    python -m pytest_qemu fetch --arch NAME [--arch NAME ...] | --arch all
    python -m pytest_qemu cache list | prune [--idle-days DAYS]

``shell`` boots (or clones) the VM and puts your terminal on its serial
console. It reads the settings of the project in the current directory as
pytest would (its ini file, and ``--qemu-*`` options given after ``--``); its
own options then win, as a test's ``qemu`` marker and factory arguments do.
``console`` attaches to the console socket of a VM kept alive by
``--qemu-keep-failed``. Ctrl-] leaves; the VM then ends. ``doctor`` says what this
host can run and what it lacks; it exits with 1 if the default guest cannot run.
``fetch`` downloads and unpacks the kernel and busybox of foreign architectures ahead
of the first test (for a CI cache, or a machine that is offline later). ``cache list``
says where the cache is and how big each part and each built userland is; ``cache
prune`` removes the userlands unused for ``--idle-days`` days (default 30; 0: all).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from pathlib import Path

import pytest

from pytest_qemu.cache import default_cache_dir
from pytest_qemu.devices.directories import P9Directory
from pytest_qemu.errors import ConfigurationError, QemuError
from pytest_qemu.guests import GUEST_KINDS
from pytest_qemu.platforms import PLATFORMS, get_platform, names
from pytest_qemu.plugin.factory import VMFactory
from pytest_qemu.plugin.options import QemuSettings
from pytest_qemu.plugin.session import QemuSession
from pytest_qemu.terminal import attach


class _SettingsReader:
    """A pytest plugin that reads the run's settings, then ends the run before collection."""

    def __init__(self) -> None:
        self.settings: QemuSettings | None = None
        self.error: QemuError | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config: pytest.Config) -> int:
        try:
            self.settings = QemuSettings.from_config(config)
        except QemuError as error:
            self.error = error
        return 0


def project_settings(pytest_args: list[str]) -> QemuSettings:
    """The settings a test of the project in the current directory gets: pytest reads its
    ini file (and *pytest_args*, such as ``--qemu-memory=512``) as for a run."""
    reader = _SettingsReader()
    status = pytest.main(["-q", "-p", "no:cacheprovider", *pytest_args], plugins=[reader])
    if reader.error is not None:
        raise reader.error
    if reader.settings is None:
        raise ConfigurationError(
            f"pytest could not read the project's settings (exit status {status}): "
            f"check the options after -- ({shlex.join(pytest_args)}) and the ini file"
        )
    return reader.settings


def _split(kernel_args: str) -> list[str]:
    try:
        return shlex.split(kernel_args)
    except ValueError as error:
        raise ConfigurationError(f"--kernel-args {kernel_args!r}: {error}") from None


def _shell(options: argparse.Namespace) -> int:
    settings = project_settings(options.pytest_args)
    if options.memory is not None:
        settings = dataclasses.replace(settings, memory=options.memory)
    session = QemuSession(settings)
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-shell-") as logs:
        factory = VMFactory(session, Path(logs), session.snapshot_store())
        try:
            devices = [P9Directory(directory) for directory in options.share]
            vm = factory(
                devices=devices,
                arch=options.arch,
                userland=options.userland,
                image=options.image,
                kernel=options.kernel,
                initramfs=options.initramfs,
                kernel_args=_split(options.kernel_args),
                snapshot=None if options.snapshot == "on" else False,
            )
            for device in devices:
                print(f"pytest-qemu: {device.directory} is at {device.guest_path} in the guest")
            print(f"pytest-qemu: {vm!r} is up; Ctrl-] leaves and ends it", flush=True)
            # A guest whose commands run elsewhere (the host's root) starts the shell there.
            first = f"\n{vm.guest.console_shell}\n" if vm.guest.console_shell else "\n"
            vm.console.close()
            attach(vm.console.socket_path, first.encode())
        finally:
            factory.close()
    print()
    return 0


def _fetch(options: argparse.Namespace) -> int:
    wanted = names() if "all" in options.arch else options.arch
    for platform in dict.fromkeys(get_platform(name) for name in wanted):
        root = platform.system_root(default_cache_dir())
        print(f"pytest-qemu: {platform.name}: kernel and busybox ready in {root}")
    return 0


def _mb(size: int) -> str:
    return f"{size / 1e6:8.1f} MB"


def _cache(options: argparse.Namespace) -> int:
    from pytest_qemu.images.userlands import cache_parts, cached_userlands, prune_userlands

    cache_dir = default_cache_dir()
    if options.action == "prune":
        removed = prune_userlands(cache_dir, options.idle_days)
        for userland in removed:
            print(f"removed {_mb(userland.size)}  {userland.description}  ({userland.path.name})")
        print(f"pytest-qemu: removed {len(removed)} userland(s) from {cache_dir}")
        return 0
    print(f"pytest-qemu cache: {cache_dir} (PYTEST_QEMU_CACHE_DIR or --qemu-cache-dir moves it)")
    for name, size in cache_parts(cache_dir):
        print(f"{_mb(size)}  {name}")
    userlands = cached_userlands(cache_dir)
    if userlands:
        print("userlands (prune with `python -m pytest_qemu cache prune --idle-days N`):")
    for userland in userlands:
        idle = userland.idle_seconds / 86400
        print(f"{_mb(userland.size)}  {userland.description}  (unused for {idle:.1f} days; "
              f"{userland.path.name})")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line's entry point."""
    parser = argparse.ArgumentParser(prog="python -m pytest_qemu", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    shell = commands.add_parser("shell", help="boot a VM and open a shell on its console")
    shell.add_argument("--arch", help=f"{PLATFORMS.help()} (default: the host's)")
    shell.add_argument(
        "--userland", choices=GUEST_KINDS.names(), default=None, help=GUEST_KINDS.help()
    )
    shell.add_argument(
        "--share",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="share a host directory over 9p (repeatable)",
    )
    shell.add_argument("--image", type=Path, help="boot this disk image instead")
    shell.add_argument("--kernel", type=Path, help="boot this kernel (also with --image)")
    shell.add_argument("--initramfs", type=Path, help="with this initramfs (also with --image)")
    shell.add_argument(
        "--kernel-args",
        default="",
        metavar="ARGS",
        help="extra kernel arguments, split like a shell (also with --image)",
    )
    shell.add_argument(
        "--memory",
        type=int,
        default=None,
        help="guest memory in MiB (default: the project's qemu_memory)",
    )
    shell.add_argument(
        "--snapshot",
        choices=("on", "off"),
        default="on",
        help="off: boot instead of cloning a template, as snapshot=False",
    )
    shell.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_OPTIONS",
        help="pytest options that set the project's settings (--qemu-*, -c)",
    )
    console = commands.add_parser("console", help="attach to a VM's console socket")
    console.add_argument("socket", type=Path)
    fetch = commands.add_parser(
        "fetch", help="download and unpack foreign architectures' kernel and busybox"
    )
    fetch.add_argument("--arch", action="append", required=True,
                       help=f"one of {names()} or all (repeatable)")  # fmt: skip
    doctor = commands.add_parser("doctor", help="what this host can run, and what it lacks")
    doctor.add_argument("--arch", action="append", default=[],
                        help="check only this architecture, and fail if it cannot run "
                        "(repeatable; default: check all, fail if the host's cannot)")  # fmt: skip
    cache = commands.add_parser("cache", help="where the cache is, its sizes, pruning it")
    cache.add_argument("action", choices=("list", "prune"))
    cache.add_argument("--idle-days", type=float, default=30.0,
                       help="prune: remove the userlands unused for this many days "
                       "(default 30; 0: all)")  # fmt: skip
    options = parser.parse_args(argv)
    try:
        if options.command == "shell":
            return _shell(options)
        if options.command == "fetch":
            return _fetch(options)
        if options.command == "cache":
            return _cache(options)
        if options.command == "doctor":
            from pytest_qemu.doctor import main as run_doctor

            return run_doctor(options.arch)
        attach(options.socket)
        return 0
    except (QemuError, OSError) as error:
        print(f"pytest-qemu: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
