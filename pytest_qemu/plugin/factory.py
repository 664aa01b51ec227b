"""Starting VMs for tests: which guest, the run's settings, and teardown."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from pytest_qemu.devices.base import Device
from pytest_qemu.errors import ConfigurationError, concise_traceback
from pytest_qemu.guests import GUEST_KINDS
from pytest_qemu.guests.base import Guest
from pytest_qemu.guests.cloudinit import CloudInit, cloud_init_setting
from pytest_qemu.guests.firmware import check_firmware, check_secure_direct_boot, uefi_flash
from pytest_qemu.guests.image import ImageGuest
from pytest_qemu.guests.own import OwnBootFilesGuest
from pytest_qemu.plugin.keywords import check_keywords
from pytest_qemu.plugin.options import optional_str
from pytest_qemu.plugin.session import QemuSession, basetemp_of
from pytest_qemu.vm.argv import MachineSpec, check_devices
from pytest_qemu.vm.launcher import Launcher
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore
from pytest_qemu.vm.start import Ahead, strategy_for
from pytest_qemu.vm.start.prepared import LaunchedAhead, VMPool


class VMFactory:
    """Starts VMs: ``factory(devices=[...], ...)`` returns a running :class:`VM`.

    The keywords (all optional) are those of :class:`MachineSpec` where they
    overlap: ``devices``, ``memory`` (MiB), ``cpus``, ``kernel_args`` and
    ``qemu_args``; plus ``arch`` (a name in ``--qemu-arch``'s help), ``userland``
    (``"busybox"``, ``"host"`` or ``"debian"``, the last with ``packages`` and
    ``suite``), ``kernel`` and ``initramfs`` (your own),
    ``image`` (a disk image to boot, with ``persistent``, ``channel`` = ``"qga"``,
    ``"console"`` or ``"ssh"``, ``credentials`` = ``(user, password)`` for a console
    login or ``(user, private_key_file)`` for SSH, and ``cloud_init`` = ``True`` or a
    :class:`~pytest_qemu.guests.cloudinit.CloudInit` for a seed of the VM's own),
    ``firmware`` (``"bios"``, QEMU's default, or ``"uefi"``: OVMF or AAVMF, with
    ``secure_boot=True`` for the variable store with Microsoft's keys),
    ``boot_timeout`` (seconds) and ``snapshot`` (``False`` to boot even when
    snapshots are on). Defaults come from the run's ``--qemu-*`` options.

    :meth:`close` shuts down every VM it started. Build one outside the
    fixtures with :meth:`from_config`.
    """

    def __init__(
        self,
        session: QemuSession,
        log_root: Path,
        snapshots: SnapshotStore | None = None,
        defaults: dict[str, object] | None = None,
        shared_directories: Iterable[Path] = (),
        pool: VMPool[LaunchedAhead] | None = None,
    ) -> None:
        self._session = session
        self._pool = pool
        #: Whether a VM without devices it starts is followed by another like it, prepared
        #: ahead in the *pool* (the ``qemu_vm`` fixture sets it when the next test wants one).
        self.prepare_next = False
        self._shared_directories = tuple(shared_directories)
        self._log_root = log_root
        self._snapshots = snapshots
        self._defaults = dict(defaults or {})
        self._lock = threading.Lock()
        #: The guest of each kind, architecture and options, made once.
        self._guests: dict[tuple[object, ...], Guest] = {}
        self._started = 0
        #: The VMs started so far, in order (the fixtures report their consoles on failure).
        self.vms: list[VM] = []

    @classmethod
    def from_config(
        cls,
        config: pytest.Config,
        log_root: Path,
        snapshots: bool = True,
        defaults: dict[str, object] | None = None,
        pool: VMPool[LaunchedAhead] | None = None,
    ) -> VMFactory:
        """A factory using *config*'s ``--qemu-*`` settings, logging under *log_root*.

        ``snapshots=False`` boots every VM even when the run uses snapshots.
        Host-userland VMs share pytest's temporary directory read-write. *pool*
        holds VMs prepared ahead (``--qemu-prepare-ahead``).
        """
        session = QemuSession.of(config)
        basetemp = basetemp_of(config)
        return cls(
            session,
            log_root,
            session.snapshot_store() if snapshots else None,
            defaults,
            shared_directories=[basetemp] if basetemp is not None else (),
            pool=pool,
        )

    @property
    def guest(self) -> Guest:
        """The default guest of the run's default architecture."""
        return self._session.default_guest()

    @concise_traceback
    def __call__(
        self,
        devices: Iterable[Device] = (),
        memory: int | None = None,
        kernel: str | os.PathLike[str] | None = None,
        initramfs: str | os.PathLike[str] | None = None,
        kernel_args: Iterable[str] = (),
        qemu_args: Iterable[str] = (),
        cpus: int | None = None,
        boot_timeout: float | None = None,
        snapshot: bool | None = None,
        arch: str | None = None,
        userland: str | None = None,
        image: str | os.PathLike[str] | None = None,
        persistent: bool = False,
        channel: str | None = None,
        credentials: tuple[str, str] | None = None,
        packages: Iterable[str] | None = None,
        suite: str | None = None,
        cloud_init: bool | CloudInit | None = None,
        firmware: str | None = None,
        secure_boot: bool = False,
    ) -> VM:
        """Start a VM and return it once its command channel answers."""
        check_keywords(
            {
                "memory": memory,
                "cpus": cpus,
                "boot_timeout": boot_timeout,
                "snapshot": snapshot,
                "arch": arch,
                "userland": userland,
                "packages": list(packages) if isinstance(packages, Iterable) else packages,
                "suite": suite,
            }
        )
        check_firmware(firmware, secure_boot)
        arch = arch if arch is not None else optional_str(self._defaults.get("arch"))
        userland = userland or optional_str(self._defaults.get("userland"))
        package_list = _package_list(packages, self._defaults.get("packages"))
        suite = suite or optional_str(self._defaults.get("suite"))
        vcpus = cpus if cpus is not None else self._defaults.get("cpus", 1)
        device_list, kernel_arg_list, qemu_arg_list = _checked_arguments(
            devices, kernel_args, qemu_args
        )
        assert isinstance(vcpus, int)  # checked with the marker (plugin/keywords.py)
        settings = self._session.settings
        kernel_path = _existing(kernel, "kernel") or settings.kernel
        initramfs_path = _existing(initramfs, "initramfs") or settings.initramfs
        image_path = Path(image).expanduser().absolute() if image is not None else settings.image
        with self._lock:
            log_dir = self._log_root / f"vm{self._started}"
            self._started += 1
        log_dir.mkdir(parents=True, exist_ok=True)
        guest: Guest
        if image_path is not None:
            guest = ImageGuest(
                self._session.platform(arch),
                image_path,
                kernel=kernel_path,
                initramfs=initramfs_path,
                channel=channel or "qga",
                persistent=persistent,
                credentials=credentials,
                cloud_init=cloud_init_setting(cloud_init),
            )
        else:
            if channel is not None or persistent or credentials is not None or cloud_init:
                raise ConfigurationError(
                    "channel=, persistent=, credentials= and cloud_init= are for VMs booting "
                    "an image: give image= too"
                )
            guest = self._guest(
                arch,
                userland or settings.userland,
                kernel_path,
                initramfs_path,
                package_list,
                suite or settings.suite,
            )
        platform = guest.platform
        all_devices = guest.devices(device_list, log_dir)
        if firmware == "uefi":
            all_devices.append(uefi_flash(platform, secure_boot, log_dir))
        boot = guest.boot_files(all_devices)
        check_secure_direct_boot(platform, secure_boot, boot.kernel)
        spec = MachineSpec(
            kernel=boot.kernel,
            initramfs=boot.initramfs,
            kernel_args=[
                *boot.kernel_args,
                *settings.kernel_args,
                # A debugger needs the kernel where its symbols say it is.
                *(["nokaslr"] if settings.gdb and boot.kernel is not None else []),
                *kernel_arg_list,
            ],
            devices=all_devices,
            platform=platform,
            qemu=settings.resolved_binary(platform),
            accelerator=self._session.accelerator(platform).accelerator,
            memory=settings.memory if memory is None else memory,
            cpus=vcpus,
            qemu_args=qemu_arg_list,
        )
        timeout = settings.boot_timeout if boot_timeout is None else boot_timeout
        snapshots = self._snapshots if snapshot in (None, True) else None

        # Only VMs without devices are prepared ahead: devices hold host resources (ports,
        # directories) of the test that asked for them.
        poolable = not all_devices and snapshots is not None and not settings.gdb
        pool = self._pool if poolable else None
        with self._lock:
            vm = VM(
                spec,
                log_dir=log_dir,
                boot_timeout=timeout,
                snapshots=snapshots,
                guest=guest,
                gdb=settings.gdb,
            )
            self.vms.append(vm)
        ahead = None
        if pool is not None:

            def make_next(directory: Path) -> Launcher:
                return Launcher.create(spec, guest, directory, timeout, snapshots, settings.gdb)

            key = (repr(spec), type(guest).__name__, guest.snapshot_key_parts, timeout)
            ahead = Ahead(pool, key, make_next if self.prepare_next else None)
        vm.start(strategy_for(vm.plan, ahead))
        self._session.stats.record(vm)
        return vm

    def _guest(
        self,
        arch: str | None,
        userland: str,
        kernel: Path | None,
        initramfs: Path | None,
        packages: tuple[str, ...] | None = None,
        suite: str | None = None,
    ) -> Guest:
        """The guest of kind *userland*; *packages* are a VM's own (its call's or marker's),
        None to take the run's ``--qemu-packages``, which other kinds ignore."""
        entry = GUEST_KINDS.entry(userland)
        options: dict[str, object] = {}
        if "packages" in entry.options:
            chosen = packages if packages is not None else self._session.settings.packages
            options = {"packages": chosen, "suite": suite}
        elif packages:
            raise ConfigurationError(
                f"packages={list(packages)!r} installs Debian packages, which "
                f"userland={userland!r} does not have: use userland='debian'"
            )
        base = self._session.default_guest(self._session.platform(arch))
        if kernel is not None or initramfs is not None:
            if "kernel" not in entry.options:
                raise ConfigurationError(
                    f"userland={userland!r} boots the default guest's kernel and initramfs: "
                    "it cannot be combined with your own kernel or initramfs"
                )
            return OwnBootFilesGuest(base, kernel, initramfs)
        with self._lock:
            key = (userland, base.platform.name, *sorted(options.items(), key=str))
            if key not in self._guests:
                make = GUEST_KINDS.load(userland)
                self._guests[key] = make(base, self._shared_directories, **options)
            return self._guests[key]

    def close(self) -> None:
        """Shut down every VM this factory started."""
        with self._lock:
            vms, self.vms = list(self.vms), []
        for vm in vms:
            vm.shutdown(timeout=5)


def _checked_arguments(
    devices: object,
    kernel_args: object,
    qemu_args: object,
) -> tuple[list[Device], list[str], list[str]]:
    """Check the factory's list arguments before any guest file is built: a typo fails at
    once (its single values are checked by :func:`check_keywords`, as the marker's are)."""
    if isinstance(kernel_args, str) or isinstance(qemu_args, str):
        raise ConfigurationError(
            "kernel_args and qemu_args take a list of arguments, not one string: "
            f"got {kernel_args!r} / {qemu_args!r}"
        )
    device_list = check_devices(devices)
    lists: list[list[str]] = []
    for name, arguments in (("kernel_args", kernel_args), ("qemu_args", qemu_args)):
        if not isinstance(arguments, Iterable):
            raise ConfigurationError(
                f"{name} {arguments!r} is not a list of arguments: give a list of str"
            )
        lists.append(list(arguments))
    for argument in [*lists[0], *lists[1]]:
        if not isinstance(argument, str):
            raise ConfigurationError(
                f"argument {argument!r} is not a string: kernel_args and qemu_args "
                "take a list of str"
            )
    return device_list, lists[0], lists[1]


def _package_list(given: Iterable[str] | None, default: object) -> tuple[str, ...] | None:
    """The Debian packages a VM asks for (sorted, once each), the factory's argument
    before the marker's; None if neither names any."""
    chosen = given if given is not None else default
    if chosen is None:
        return None
    if isinstance(chosen, str) or not isinstance(chosen, Iterable):
        raise ConfigurationError(
            f"packages {chosen!r} is not a list of package names: give a list of str, "
            "such as packages=['python3']"
        )
    return tuple(sorted({str(name) for name in chosen}))


def _existing(path: str | os.PathLike[str] | None, what: str) -> Path | None:
    if path is None:
        return None
    resolved = Path(path).expanduser().absolute()
    if not resolved.is_file():
        raise ConfigurationError(f"{what} {str(path)!r}: no such file")
    return resolved
