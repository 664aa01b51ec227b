"""UEFI firmware in a VM's flash: its code read-only, a variable store of the VM's own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytest_qemu.devices.base import Device, DeviceContext
from pytest_qemu.devices.options import option_string


class UefiFlash(Device):
    """The firmware *code* in flash unit 0 (read-only) and the VM's variable store
    *variables* (a qcow2 overlay over the firmware's template, written by the
    guest) in unit 1; *machine_args* are what the firmware needs of the machine
    (secure boot on x86: SMM on q35). *identity* names the firmware's files for
    templates: a template keeps its variable store, and each clone writes to a new
    overlay over it, as with a system disk.
    """

    in_guest = False

    def __init__(
        self, code: Path, variables: Path, identity: str, machine_args: Sequence[str] = ()
    ) -> None:
        self.code = code
        self.variables = variables
        self.identity = identity
        self.machine_args = tuple(machine_args)

    def qemu_args(self, ctx: DeviceContext) -> list[str]:
        flash = [
            ("raw", self.code, True),
            ("qcow2", self.variables, None),
        ]
        args: list[str] = []
        for unit, (format, file, readonly) in enumerate(flash):
            args += [
                "-drive",
                option_string(
                    "if=pflash",
                    unit=unit,
                    format=format,
                    readonly=readonly,
                    **{"file.driver": "file", "file.filename": str(file)},
                ),
            ]
        return [*args, *self.machine_args]

    def snapshot_layout(self, ctx: DeviceContext) -> str | None:
        return f"uefi:{self.identity}:{' '.join(self.machine_args)}"

    def template_file(self) -> Path | None:
        """The variable store a template keeps (its overlay)."""
        return self.variables

    def use_template_file(self, overlay: Path) -> None:
        """Run a clone on *overlay*, a new overlay over a template's variable store."""
        self.variables = overlay

    def __repr__(self) -> str:
        return f"UefiFlash({str(self.code)!r})"
