"""Starting VMs for tests: the default guest, the run's settings, and teardown."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from pytest_qemu.devices.base import Device
from pytest_qemu.errors import ConfigurationError, concise_traceback
from pytest_qemu.guest.default import DEFAULT_KERNEL_ARGS, DefaultGuest
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.machine import VM
from pytest_qemu.vm.snapshot import SnapshotStore


class VMFactory:
    """Starts VMs on the default guest, or your own kernel and initramfs.

    :meth:`close` ends every VM it started.

    Call it as ``qemu_vm_factory(devices=[...], memory=..., kernel=..., initramfs=...,
    kernel_args=[...], qemu_args=[...], cpus=..., boot_timeout=...)``.
    """

    def __init__(
        self,
        guest: DefaultGuest,
        qemu: str,
        accelerator: str,
        log_root: Path,
        memory_mb: int = 256,
        boot_timeout: float = 120.0,
        kernel: Path | None = None,
        initramfs: Path | None = None,
        kernel_args: Sequence[str] = (),
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self._guest = guest
        self._snapshots = snapshots
        self._qemu = qemu
        self._accelerator = accelerator
        self._log_root = log_root
        self._memory_mb = memory_mb
        self._boot_timeout = boot_timeout
        self._kernel = kernel
        self._initramfs = initramfs
        self._kernel_args = tuple(kernel_args)
        self._lock = threading.Lock()
        self.vms: list[VM] = []

    @concise_traceback
    def __call__(
        self,
        devices: Iterable[Device] = (),
        memory: int | None = None,
        kernel: str | os.PathLike[str] | None = None,
        initramfs: str | os.PathLike[str] | None = None,
        kernel_args: Iterable[str] = (),
        qemu_args: Iterable[str] = (),
        cpus: int = 1,
        boot_timeout: float | None = None,
        snapshot: bool | None = None,
    ) -> VM:
        """Start a VM with *devices* and return it once its command agent answers.

        ``snapshot=False`` boots it even when snapshots are on for the run.
        """
        if isinstance(kernel_args, str) or isinstance(qemu_args, str):
            raise ConfigurationError(
                "kernel_args and qemu_args take a list of arguments, not one string: "
                f"got {kernel_args!r} / {qemu_args!r}"
            )
        # Checked before the guest's files are built, so a typo fails at once.
        if isinstance(devices, (str, bytes)) or not isinstance(devices, Iterable):
            raise ConfigurationError(
                f"devices {devices!r} is not a list of devices: give a list of "
                "pytest_qemu Device instances, such as [VirtioRandom()]"
            )
        device_list = list(devices)
        for device in device_list:
            if not isinstance(device, Device):
                raise ConfigurationError(
                    f"{device!r} is not a pytest_qemu Device: devices must be Device instances"
                )
        if memory is not None and (
            isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0
        ):
            raise ConfigurationError(
                f"memory {memory!r} MiB is not valid: give a whole number of MiB, at most 1048576"
            )
        if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 255:
            raise ConfigurationError(f"cpus {cpus!r} is not valid: give a number from 1 to 255")
        if boot_timeout is not None and (
            isinstance(boot_timeout, bool)
            or not isinstance(boot_timeout, (int, float))
            or not 0 < boot_timeout < float("inf")
        ):
            raise ConfigurationError(
                f"boot_timeout {boot_timeout!r} is not valid: give a number of seconds "
                "greater than 0, such as boot_timeout=60"
            )
        for name, arguments in (("kernel_args", kernel_args), ("qemu_args", qemu_args)):
            if not isinstance(arguments, Iterable):
                raise ConfigurationError(
                    f"{name} {arguments!r} is not a list of arguments: give a list of str"
                )
        kernel_args, qemu_args = list(kernel_args), list(qemu_args)
        for argument in [*kernel_args, *qemu_args]:
            if not isinstance(argument, str):
                raise ConfigurationError(
                    f"argument {argument!r} is not a string: kernel_args and qemu_args "
                    "take a list of str"
                )
        kernel_path, initramfs_path, all_kernel_args = self._boot_files(
            device_list, kernel, initramfs, list(kernel_args)
        )
        spec = MachineSpec(
            qemu=self._qemu,
            accelerator=self._accelerator,
            memory_mb=self._memory_mb if memory is None else memory,
            cpus=cpus,
            devices=device_list,
            extra_args=list(qemu_args),
            kernel=kernel_path,
            initramfs=initramfs_path,
            kernel_args=all_kernel_args,
        )
        with self._lock:
            log_dir = self._log_root / f"vm{len(self.vms)}"
            vm = VM(
                spec,
                log_dir=log_dir,
                boot_timeout=self._boot_timeout if boot_timeout is None else boot_timeout,
                snapshots=self._snapshots if snapshot in (None, True) else None,
            )
            self.vms.append(vm)
        vm.start()
        return vm

    def _boot_files(
        self,
        devices: list[Device],
        kernel: str | os.PathLike[str] | None,
        initramfs: str | os.PathLike[str] | None,
        kernel_args: list[str],
    ) -> tuple[Path, Path, list[str]]:
        kernel_path = _existing(kernel, "kernel") or self._kernel
        initramfs_path = _existing(initramfs, "initramfs") or self._initramfs
        modules = [module for device in devices for module in device.guest_modules]
        if initramfs_path is None:
            # The default initramfs carries the host kernel's modules: they fit no other kernel.
            initramfs_path = self._guest.initramfs(modules if kernel_path is None else None)
        return (
            kernel_path or self._guest.kernel_image(),
            initramfs_path,
            [*DEFAULT_KERNEL_ARGS, *self._kernel_args, *kernel_args],
        )

    @property
    def guest(self) -> DefaultGuest:
        """The default guest this factory boots (its kernel and initramfs builder)."""
        return self._guest

    def close(self) -> None:
        """Shut down every VM this factory started."""
        with self._lock:
            vms, self.vms = list(self.vms), []
        for vm in vms:
            vm.shutdown(timeout=5)


def _existing(path: str | os.PathLike[str] | None, what: str) -> Path | None:
    if path is None:
        return None
    resolved = Path(path).expanduser().absolute()
    if not resolved.is_file():
        raise ConfigurationError(f"{what} {str(path)!r}: no such file")
    return resolved
