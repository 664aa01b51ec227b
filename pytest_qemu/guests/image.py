"""Your own operating system image: a disk that boots by itself, reached through its agent.

The image is attached as ``/dev/vda`` behind a throwaway qcow2 overlay (or
written in place with ``persistent=True``) and boots through the firmware and
its own boot loader, or directly from a kernel given beside it. Commands go
through the QEMU guest agent the image runs (``channel="qga"``, the default),
a shell on its serial console (``channel="console"``) or its SSH server
(``channel="ssh"``). ``cloud_init`` gives the VM a cloud-init seed of its own
(a user with the session's SSH key, a host name), as cloud images need.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.cache import cache_key, file_fingerprint
from pytest_qemu.channels import CHANNELS, open_channel
from pytest_qemu.channels.base import CommandChannel
from pytest_qemu.channels.shell import set_clock_line
from pytest_qemu.channels.sshkeys import session_key
from pytest_qemu.devices.base import Device
from pytest_qemu.devices.cloudinit import CloudInitSeed
from pytest_qemu.devices.network import SSHForward
from pytest_qemu.devices.systemdisk import SystemDisk
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.guests.base import BootFiles, Guest
from pytest_qemu.guests.cloudinit import CloudInit, seed_documents, write_seed
from pytest_qemu.guests.initramfs import guest_script
from pytest_qemu.guests.overlays import create_overlay, image_format
from pytest_qemu.platforms import Platform
from pytest_qemu.registry import Registry

#: The channels an image can be reached through.
IMAGE_CHANNELS: Registry[type[CommandChannel]] = Registry(
    "channel", [CHANNELS.entry("qga"), CHANNELS.entry("console"), CHANNELS.entry("ssh")]
)
#: What a boot timeout means when the VM had a cloud-init seed.
_SEED_HINT = (
    "cloud-init did not pick up the seed, or the guest never became reachable: the image "
    "must run cloud-init with its NoCloud data source (a stock cloud image does; it reads "
    "the read-only CIDATA disk at first boot), and the console tail shows whether "
    "cloud-init ran at all"
)

#: Wait (a minute at most) until systemd has started everything it starts at boot, then
#: two seconds for what that leaves behind. A template saved as soon as the channel answers
#: has every clone finish that work first, its code translated anew in each QEMU: a
#: guest-agent clone was ready in 1.28 s instead of 0.47 s, and its guest CPU was 65 %
#: busy for seconds after (81 % idle once settled).
_STARTUP_FINISHED = (
    "if command -v systemctl >/dev/null; then timeout 60 systemctl is-system-running --wait; "
    "fi >/dev/null 2>&1; sleep 2; true"
)


class ImageGuest(Guest):
    """A VM booting the disk image *image* (see the module's docstring)."""

    reads_setup_from_kernel_command_line = False
    startup_finished_command = _STARTUP_FINISHED

    def __init__(
        self,
        platform: Platform,
        image: Path,
        *,
        kernel: Path | None = None,
        initramfs: Path | None = None,
        channel: str = "qga",
        persistent: bool = False,
        credentials: tuple[str, str] | None = None,
        cloud_init: CloudInit | None = None,
    ) -> None:
        if not image.is_file():
            raise ConfigurationError(f"disk image {str(image)!r}: no such file")
        IMAGE_CHANNELS.entry(channel)  # an unknown channel: an error naming the known ones
        if initramfs is not None and kernel is None:
            raise ConfigurationError(
                f"initramfs {str(initramfs)!r} was given without a kernel: an image boots "
                "through its own boot loader unless kernel= is given too"
            )
        if channel == "ssh" and credentials is None and cloud_init is None:
            raise ConfigurationError(
                "channel='ssh' needs a user and key to log in with: credentials=(user, "
                "private_key_file), or cloud_init=True to create a user with the session's key"
            )
        self.platform = platform
        self.image = image
        self.format = image_format(image)
        self.kernel = kernel
        self.initramfs = initramfs
        self.channel_name = channel
        self.persistent = persistent
        if channel == "ssh" and credentials is not None and not Path(credentials[1]).is_file():
            raise ConfigurationError(
                f"credentials={credentials!r}: the SSH private key file "
                f"{str(credentials[1])!r} does not exist"
            )
        if credentials is None and cloud_init is not None and channel == "ssh":
            credentials = (cloud_init.user, str(session_key().private_key))
        self.credentials = credentials
        self.cloud_init = cloud_init
        self._ssh_forward: SSHForward | None = None
        self._identity = file_fingerprint(image)

    def devices(self, requested: Sequence[Device], workdir: Path) -> list[Device]:
        if self.persistent:
            disk = SystemDisk(self.image, self.format, self._identity, persistent=True)
        else:
            overlay = create_overlay(self.image, self.format, workdir / "system-overlay.qcow2")
            disk = SystemDisk(overlay, "qcow2", self._identity, persistent=False)
        system: list[Device] = [disk]
        if self.channel_name == "ssh":
            self._ssh_forward = SSHForward()
            system.append(self._ssh_forward)
        if self.cloud_init is None:
            return [*system, *requested]
        # A host name and instance of its own: each VM is a new instance to cloud-init,
        # unless the user's meta-data names them (then the VMs can share a template).
        name = f"pytest-qemu-{secrets.token_hex(4)}"
        documents = seed_documents(self.cloud_init, session_key().public_key, name, name)
        pinned = {"instance-id", "local-hostname"} <= set(self.cloud_init.meta_data)
        identity = (
            cache_key([p for item in sorted(documents.items()) for p in item]) if pinned else None
        )
        seed = CloudInitSeed(write_seed(workdir / "cidata.img", documents), identity)
        return [*system, seed, *requested]

    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        if self.kernel is None:
            return BootFiles(None, None, ())
        # The user's kernel arguments come from the factory; the plugin adds only a console
        # and what the platform needs to boot under emulation.
        return BootFiles(
            self.kernel,
            self.initramfs,
            (f"console={self.platform.console}", *self.platform.kernel_args),
        )

    def channel(self, socket_dir: Path) -> CommandChannel:
        options: dict[str, object] = {"credentials": self.credentials}
        if self._ssh_forward is not None:
            options["port"] = self._ssh_forward.host_port
        return open_channel(self.channel_name, socket_dir, self.platform, **options)

    @property
    def boot_timeout_hint(self) -> str:
        hint = IMAGE_CHANNELS.entry(self.channel_name).boot_timeout_hint
        return hint if self.cloud_init is None else f"{_SEED_HINT}; {hint}"

    @property
    def default_cwd(self) -> str:
        # Over SSH, commands start in the login's home, as ssh runs them.
        return "" if self.channel_name == "ssh" else "/root"

    def personalise_command(
        self, setup_args: Sequence[str], with_devices: bool, clock_and_entropy: bool = True
    ) -> str:
        # The image has no pytest-qemu scripts: the setup script travels in the command.
        steps = []
        if clock_and_entropy:
            steps.append(f"{set_clock_line()}; head -c 64 >/dev/urandom")
        if setup_args:
            script = guest_script("setup").decode()
            arguments = " ".join(shlex.quote(argument) for argument in setup_args)
            steps.append(f"sh -c {shlex.quote(script)} pytest-qemu-setup {arguments}")
        return "; ".join(steps)

    @property
    def snapshot_key_parts(self) -> tuple[str, ...]:
        # How the template waited for the image's start-up: templates saved otherwise
        # (by an earlier version: at once) are not this one's.
        return ("image", self._identity, self.channel_name, self.startup_finished_command)

    def __repr__(self) -> str:
        return f"ImageGuest({str(self.image)!r}, channel={self.channel_name!r})"
