"""The private apt configuration that downloads foreign architectures' packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qemu.errors import SetupError
from pytest_qemu.platforms import apt
from pytest_qemu.platforms.apt import PrivateApt, sources_list


def test_sources_list_names_the_suite_its_updates_and_security() -> None:
    listed = sources_list(
        "trixie",
        "riscv64",
        {"archive": "http://mirror.example/debian", "security": "http://sec.example/ds"},
    )
    assert listed.splitlines() == [
        "deb [arch=riscv64] http://mirror.example/debian trixie main",
        "deb [arch=riscv64] http://mirror.example/debian trixie-updates main",
        "deb [arch=riscv64] http://sec.example/ds trixie-security main",
    ]


def test_sources_list_checks_with_debians_keyring_where_given() -> None:
    listed = sources_list("bookworm", "i386", {}, Path("/k.gpg"))
    assert listed.startswith(f"deb [arch=i386 signed-by=/k.gpg] {apt.DEFAULT_MIRROR} bookworm ")


def test_sources_list_falls_back_to_debians_mirror() -> None:
    assert sources_list("bookworm", "s390x", {}).startswith(
        f"deb [arch=s390x] {apt.DEFAULT_MIRROR} bookworm main\n"
    )


def test_every_apt_path_and_the_architecture_are_private(tmp_path: Path) -> None:
    options = PrivateApt("bookworm", "armhf", tmp_path).options()
    settings = dict(value.split("=", 1) for value in options[1::2])
    assert set(options[0::2]) == {"-o"}
    for key in ("Dir::Etc::sourcelist", "Dir::State::Lists", "Dir::Cache"):
        assert settings[key].startswith(str(tmp_path)), key
    # Neither the host's sources nor its dpkg status (and foreign architectures) count.
    assert settings["Dir::Etc::sourceparts"] == "-"
    assert settings["Dir::State::status"] == "/dev/null"
    assert settings["APT::Architecture"] == settings["APT::Architectures::"] == "armhf"


def test_the_mirror_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_QEMU_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    assert apt.host_mirrors()["archive"] == "http://127.0.0.1:9/debian"


def test_a_missing_apt_is_a_setup_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError, match="armhf packages needs apt-get"):
        PrivateApt("bookworm", "armhf", tmp_path).update()
