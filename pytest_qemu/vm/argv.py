"""Building a VM's QEMU command line. Nothing is started, and the only files read are
the boot files' sizes, to check that the guest's memory can hold them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.options import escape, option_string, validate_kernel_argument
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.platforms import Platform, get_platform

ACCELERATORS = ("tcg", "kvm")


@dataclass(frozen=True)
class MachineSpec:
    """Everything that decides a VM's command line."""

    #: The kernel to boot directly; None to boot through the firmware (a disk image's
    #: own boot loader).
    kernel: Path | None
    initramfs: Path | None = None
    kernel_args: Sequence[str] = ()
    devices: Sequence[Device] = ()
    #: The guest architecture: QEMU binary, machine and console come from it.
    platform: Platform = field(default_factory=get_platform)
    #: The QEMU binary; None for the platform's.
    qemu: str | None = None
    accelerator: str = "tcg"
    #: Guest memory in MiB.
    memory: int = 256
    cpus: int = 1
    #: Extra QEMU arguments, appended last.
    qemu_args: Sequence[str] = ()

    @property
    def has_guest_devices(self) -> bool:
        """Whether the guest drives any of :attr:`devices` (see ``Device.in_guest``)."""
        return any(device.in_guest for device in self.devices)

    @property
    def qemu_binary(self) -> str:
        """The QEMU binary to run."""
        return self.qemu or self.platform.qemu_binary

    def __post_init__(self) -> None:
        """Refuse what cannot boot, naming the value and what to give instead.

        Besides the types and ranges, memory is checked against what the
        kernel and initramfs need: their files are stat-ed, and the platform
        says what its kernel image format unpacks itself into.
        """
        if self.accelerator not in ACCELERATORS:
            raise ConfigurationError(
                f"accelerator {self.accelerator!r} is not supported: use one of {ACCELERATORS}"
            )
        check_cpus(self.cpus)
        check_memory(self.memory)

        def file_size(path: Path | None) -> int | None:
            try:
                return path.stat().st_size if path is not None and path.is_file() else None
            except OSError:
                return None

        # Measured under TCG with the default guest (6.1 kernel, 63 MiB vmlinux): the guest
        # boots from kernel + 2 x initramfs (the archive stays in memory while it is unpacked)
        # + about 17 MiB, plus about 1 MiB per CPU; 24 MiB leaves room to run commands.
        mib = 1024 * 1024
        kernel_bytes = (
            None if self.kernel is None else self.platform.kernel_memory_size(Path(self.kernel))
        )
        initramfs_bytes = file_size(None if self.initramfs is None else Path(self.initramfs))
        needed = (kernel_bytes or 0) + 2 * (initramfs_bytes or 0)
        minimum = -(-needed // mib) + 24 + self.cpus
        minimum = -(-minimum // 8) * 8
        if self.memory < minimum:
            parts = []
            if kernel_bytes is not None:
                parts.append(f"the kernel {self.kernel} needs {kernel_bytes / mib:.1f} MiB")
            if initramfs_bytes is not None:
                parts.append(
                    f"the initramfs {self.initramfs} twice its {initramfs_bytes / mib:.1f} MiB, "
                    "as the guest unpacks it"
                )
            parts.append(f"the running kernel about 24 MiB and 1 MiB per CPU ({self.cpus})")
            raise ConfigurationError(
                f"memory {self.memory} MiB is too little for this VM, which needs at least "
                f"{minimum} MiB: {'; '.join(parts)}. Give memory={minimum} or more "
                "(--qemu-memory for the whole run)"
            )

        check_devices(self.devices)

        if isinstance(self.kernel_args, (str, bytes)):
            raise ConfigurationError(
                f"kernel_args {self.kernel_args!r} is one string: give a list of arguments"
            )
        for argument in self.kernel_args:
            validate_kernel_argument(argument)
        _check_command_line_length(self.platform, self.kernel_args)


def check_devices(devices: object) -> list[Device]:
    """*devices* as a list, if it is a list of :class:`Device`; else a clear error."""
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
    return device_list


def check_cpus(cpus: object) -> None:
    """Refuse a CPU count that is not a number from 1 to 255."""
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 255:
        raise ConfigurationError(f"cpus {cpus!r} is not valid: give a number from 1 to 255")


def check_memory(memory: object) -> None:
    """Refuse a memory size that is not a whole number of MiB up to 1 TiB."""
    if isinstance(memory, bool) or not isinstance(memory, int) or not 0 < memory <= 1024 * 1024:
        raise ConfigurationError(
            f"memory {memory!r} MiB is not valid: give a whole number of MiB, at most 1048576"
        )


def _check_command_line_length(platform: Platform, kernel_args: Sequence[str]) -> None:
    # QEMU passes a longer -append on, and the guest then prints nothing and never boots.
    length = len(" ".join(kernel_args).encode())
    limit = platform.command_line_limit
    if length > limit:
        raise ConfigurationError(
            f"the kernel command line is {length} bytes long "
            f"({' '.join(kernel_args)[:60]!r}...): a {platform.name} kernel takes at most "
            f"{limit} ({limit + 1} with the terminating NUL); pass fewer or shorter kernel "
            "arguments"
        )


@dataclass(frozen=True)
class RuntimePaths:
    """Where one VM's sockets and logs live."""

    qmp_socket: Path
    console_socket: Path
    console_log: Path
    #: The gdb stub's socket, if the VM has one.
    gdb_socket: Path | None = None

    @classmethod
    def in_directory(cls, socket_dir: Path, log_dir: Path, gdb: bool = False) -> RuntimePaths:
        """The paths of a VM whose sockets are in *socket_dir* and logs in *log_dir*."""
        return cls(
            qmp_socket=socket_dir / "qmp.sock",
            console_socket=socket_dir / "console.sock",
            console_log=log_dir / "console.log",
            gdb_socket=socket_dir / "gdb.sock" if gdb else None,
        )


#: Kernel arguments read by the default guest's setup script, not by the kernel.
SETUP_ARGUMENT_PREFIX = "pytest_qemu."


@dataclass
class BuiltCommandLine:
    """A VM's command line and what goes with it."""

    argv: list[str]
    kernel_args: list[str]
    #: The ``pytest_qemu.*`` settings the guest's setup script applies (mounts, addresses).
    setup_args: list[str] = field(default_factory=list)
    #: What the guest sees of each device; None if a device cannot be snapshotted.
    device_layout: list[str] | None = None


def _check_guest_names(devices: Sequence[Device], ctx: DeviceContext) -> None:
    """Reject two devices that take one name in the guest: one would hide the other."""
    owners: dict[tuple[str, str], Device] = {}
    for device in devices:
        for kind, name in device.guest_names(ctx):
            if (kind, name) in owners:
                raise ConfigurationError(
                    f"two devices use the same {kind} {name!r}: give each a different one "
                    f"({owners[kind, name]!r} and {device!r})"
                )
            owners[kind, name] = device


@dataclass(frozen=True)
class SnapshotLayout:
    """What the guest sees of a VM's devices, for keying its template."""

    #: One part per device; None if a device cannot be carried into a clone.
    parts: list[str] | None
    #: The first device that cannot be carried into a clone, if any.
    blocker: Device | None


def snapshot_layout(devices: Sequence[Device], platform: Platform | None = None) -> SnapshotLayout:
    """What the guest sees of *devices* on *platform* (None: the host's), and the first
    one that cannot be snapshotted."""
    ctx = DeviceContext(platform)
    parts: list[str] = []
    for device in devices:
        part = device.snapshot_layout(ctx)
        if part is None:
            return SnapshotLayout(None, device)
        parts.append(part)
    return SnapshotLayout(parts, None)


def build_command_line(
    spec: MachineSpec,
    paths: RuntimePaths,
    *,
    channel_args: Sequence[str] = (),
    setup_on_kernel_command_line: bool = True,
    memory_file: Path | None = None,
    share_memory: bool = False,
    incoming_fd: int | None = None,
    qmp_listener_fd: int | None = None,
    layout: SnapshotLayout | None = None,
) -> BuiltCommandLine:
    """The QEMU argv for *spec*, with QMP and console on UNIX sockets at *paths*.

    *channel_args* are the command channel's own arguments (its transport).

    With ``setup_on_kernel_command_line=False`` the guest is booted without its
    per-VM settings (mounts, addresses), which the host then applies through
    the agent: that boot can be saved and restored for other VMs.

    *memory_file* backs the guest's RAM with a file: mapped shared
    (*share_memory*, a template being built, whose RAM is the file) or
    privately (a clone: copy-on-write over the template's RAM). *incoming_fd* is
    a file descriptor QEMU inherits, open on a saved device state to restore
    instead of booting: QEMU waits for QMP ``migrate-incoming`` with
    :func:`incoming_uri`.
    *qmp_listener_fd* is a UNIX socket already listening at ``paths.qmp_socket``,
    inherited by QEMU, so that the caller can connect without waiting for QEMU
    to create it. *layout* is the devices' :func:`snapshot_layout` if the caller has it.
    """
    ctx = DeviceContext(spec.platform)
    _check_guest_names(spec.devices, ctx)
    device_args: list[str] = []
    kernel_args = list(spec.kernel_args)
    setup_args: list[str] = []
    for device in spec.devices:
        device_args += device.qemu_args(ctx)
        for argument in device.kernel_args(ctx):
            validate_kernel_argument(argument, f"kernel argument of {device!r}")
            if argument.startswith(SETUP_ARGUMENT_PREFIX):
                setup_args.append(argument)
            else:
                kernel_args.append(argument)
    if setup_on_kernel_command_line:
        kernel_args += setup_args
    _check_command_line_length(spec.platform, kernel_args)

    def server_socket(chardev_id: str, path: Path, **options: str | bool) -> str:
        return option_string(
            "socket", id=chardev_id, path=str(path), server=True, wait=False, **options
        )

    argv = [
        spec.qemu_binary,
        "-name", "pytest-qemu",
        *spec.platform.machine_args,
        "-accel", spec.accelerator,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        # Guest reboot or panic ends QEMU, so a crashed guest is reported at once.
        "-no-reboot",
        "-m", str(spec.memory),
        "-smp", str(spec.cpus),
        *_memory_backend_args(spec.memory, memory_file, share_memory),
    ]  # fmt: skip
    if spec.kernel is not None:
        argv += ["-kernel", str(spec.kernel)]
        if spec.initramfs is not None:
            argv += ["-initrd", str(spec.initramfs)]
        if kernel_args:
            argv += ["-append", " ".join(kernel_args)]
    qmp_chardev = (
        server_socket("qmp", paths.qmp_socket)
        if qmp_listener_fd is None
        else option_string("socket", id="qmp", fd=str(qmp_listener_fd), server=True, wait=False)
    )
    argv += [
        "-chardev", qmp_chardev,
        "-mon", "chardev=qmp,mode=control",
        "-chardev", server_socket(
            # Appending lets a restored VM's log start with the boot it was saved from.
            "console", paths.console_socket, logfile=str(paths.console_log), logappend=True
        ),
        *spec.platform.console_args("console"),
    ]  # fmt: skip
    if paths.gdb_socket is not None:
        argv += ["-gdb", option_string(f"unix:{escape(str(paths.gdb_socket))}", server=True,
                                       wait=False)]  # fmt: skip
    _check_pci_slots(spec.platform, channel_args, device_args)
    argv += channel_args
    argv += device_args
    argv += list(spec.qemu_args)
    if incoming_fd is not None:
        # QEMU 7.2 has no command-line switch for x-ignore-shared: the caller sets it
        # over QMP, then starts the restore from the inherited descriptor.
        argv += ["-incoming", "defer"]
    layout = layout or snapshot_layout(spec.devices, spec.platform)
    return BuiltCommandLine(argv, kernel_args, setup_args, layout.parts)


def _pci_drivers(args: Sequence[str]) -> list[str]:
    """The ``-device`` drivers in *args* that sit on a PCI bus."""
    pairs = itertools.pairwise(args)
    drivers = [value.split(",")[0] for option, value in pairs if option == "-device"]
    return [driver for driver in drivers if driver.endswith("-pci")]


def _check_pci_slots(platform: Platform, channel: Sequence[str], devices: Sequence[str]) -> None:
    # Our own devices and the channel's (raw qemu_args are the user's business).
    own, theirs = _pci_drivers(channel), _pci_drivers(devices)
    if platform.pci_slots is not None and len(own) + len(theirs) > platform.pci_slots:
        raise ConfigurationError(
            f"{platform.name}'s machine ({' '.join(platform.machine_args)}) gives interrupts "
            f"to {platform.pci_slots} PCI devices only, and this VM's devices need "
            f"{len(theirs)} ({', '.join(theirs)}) beside the command channel's "
            f"{len(own)}: give a {platform.name} VM at most {platform.pci_slots - len(own)} "
            "virtio devices"
        )


def incoming_uri(incoming_fd: int) -> str:
    """The ``migrate-incoming`` URI of a state QEMU inherited as descriptor *incoming_fd*
    (no shell runs in QEMU, unlike an ``exec:`` URI)."""
    return f"fd:{incoming_fd}"


#: The QEMU id of the guest RAM's memory backend when it lives in a file.
MEMORY_BACKEND_ID = "pytest-qemu-ram"


def _memory_backend_args(memory: int, memory_file: Path | None, share: bool) -> list[str]:
    if memory_file is None:
        return []
    backend = option_string(
        "memory-backend-file",
        id=MEMORY_BACKEND_ID,
        size=f"{memory}M",
        share=share,
        **{"mem-path": str(memory_file)},
    )
    return ["-object", backend, "-machine", f"memory-backend={MEMORY_BACKEND_ID}"]
