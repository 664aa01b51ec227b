"""``python -m pytest_qemu shell`` gives the VM a test of the project would get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pytest_qemu.__main__ as command
from pytest_qemu.plugin.options import QemuSettings


class _Stop(Exception):
    pass


def _record_factory_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[QemuSettings, Any]]:
    """Replace the shell's VMFactory: record the settings and arguments, start nothing."""
    calls: list[tuple[QemuSettings, Any]] = []

    class Factory:
        def __init__(self, session: Any, *args: Any) -> None:
            self.settings = session.settings

        def __call__(self, **kwargs: Any) -> None:
            calls.append((self.settings, kwargs))
            raise _Stop

        def close(self) -> None:
            pass

    monkeypatch.setattr(command, "VMFactory", Factory)
    return calls


def test_the_shell_takes_the_projects_ini_settings(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nqemu_memory = 512\nqemu_kernel_args = loglevel=7\n")
    monkeypatch.chdir(pytester.path)
    calls = _record_factory_calls(monkeypatch)
    with pytest.raises(_Stop):
        command.main(["shell"])
    settings, _ = calls[0]
    assert settings.memory == 512
    assert settings.kernel_args == ("loglevel=7",)
    # Options after -- are read as pytest reads them; the shell's own options win.
    with pytest.raises(_Stop):
        command.main(["shell", "--memory", "384", "--", "--qemu-boot-timeout=300"])
    settings, _ = calls[1]
    assert (settings.memory, settings.boot_timeout) == (384, 300.0)


def test_the_shell_passes_kernel_initramfs_and_arguments_with_an_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(b"x")
    calls = _record_factory_calls(monkeypatch)
    with pytest.raises(_Stop):
        command.main(
            [
                "shell",
                "--image", "disk.qcow2",
                "--kernel", "vmlinuz",
                "--initramfs", "initrd.img",
                "--kernel-args", "root=/dev/vda2 rw",
                "--snapshot", "off",
            ]
        )  # fmt: skip
    _, arguments = calls[0]
    assert arguments["image"] == Path("disk.qcow2")
    assert arguments["kernel"] == Path("vmlinuz")
    assert arguments["initramfs"] == Path("initrd.img")
    assert arguments["kernel_args"] == ["root=/dev/vda2", "rw"]
    assert arguments["snapshot"] is False


def test_bad_shell_settings_are_reported_plainly(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makeini("[pytest]\nqemu_memory = lots\n")
    monkeypatch.chdir(pytester.path)
    _record_factory_calls(monkeypatch)
    assert command.main(["shell"]) == 1
    assert "--qemu-memory 'lots' is not a number" in capsys.readouterr().err
