"""The host's userland in the guest: the default guest's kernel, the host's programs.

Commands run chrooted into the host's root file system, shared read-only,
so ``python3``, a binary the user just compiled, ``ip`` or ``modprobe`` run
as they do on the host. Directories that host and guest both work in
(pytest's temporary directory, holding every ``tmp_path``) are shared
read-write at the same paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.devices.base import Device
from pytest_qemu.devices.directories import writable_shares
from pytest_qemu.devices.hostroot import HOST_ROOT_GUEST_PATH, HostRoot
from pytest_qemu.errors import ConfigurationError
from pytest_qemu.guests.agent import AgentGuest
from pytest_qemu.guests.base import BootFiles
from pytest_qemu.guests.default import DefaultGuest


class HostUserlandGuest(AgentGuest):
    """The default guest's kernel and init, with commands run in the host's root.

    *writable* directories (they must exist) are shared read-write at the same
    path. Works only where the guest's architecture is the host's.
    """

    def __init__(self, base: DefaultGuest, writable: Sequence[Path] = ()) -> None:
        if not base.platform.is_host:
            raise ConfigurationError(
                f"userland='host' needs the host's architecture, and {base.platform.name} "
                "is not it: the host's programs cannot run in that guest"
            )
        super().__init__(base.platform)
        self._base = base
        self._writable = tuple(Path(directory).absolute() for directory in writable)

    def devices(self, requested: Sequence[Device], workdir: Path) -> list[Device]:
        # The root first: the writable shares are mounted inside it.
        return [
            HostRoot(),
            *writable_shares(self._writable, HOST_ROOT_GUEST_PATH),
            *requested,
        ]

    def boot_files(self, devices: Sequence[Device]) -> BootFiles:
        return self._base.boot_files(devices)

    command_root = HOST_ROOT_GUEST_PATH
    #: The shell on the console runs in the host's root too.
    console_shell = f"exec chroot {HOST_ROOT_GUEST_PATH} /bin/sh -l"

    @property
    def default_cwd(self) -> str:
        """Commands start in the directory pytest runs in, as on the host."""
        return os.getcwd()

    @property
    def snapshot_key_parts(self) -> tuple[str, ...]:
        return ("host-userland",)
