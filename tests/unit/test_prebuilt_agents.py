"""The agents prebuilt into the wheel: reproducible, and used only when they match the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qemu.errors import ConfigurationError, SetupError
from pytest_qemu.guests import agent_build, prebuilt
from pytest_qemu.guests.agent_compiler import AGENT_SOURCE
from pytest_qemu.guests.initramfs import guest_script
from pytest_qemu.platforms import get_platform, names


def test_two_builds_give_the_same_bytes_for_every_platform(tmp_path: Path) -> None:
    """The wheel's build step compiles the same agent bytes twice (here in two directories,
    with the source at different times: nothing of the build's place or time gets in)."""
    platforms = [get_platform(name) for name in names()]
    source = guest_script(AGENT_SOURCE)
    first = prebuilt.write_prebuilt(tmp_path / "one", platforms, source)
    second = prebuilt.write_prebuilt(tmp_path / "two" / "deeper", platforms, source)
    assert first == second
    assert sorted(first["agents"]) == names()
    assert all("gcc" in agent["compiler"] for agent in first["agents"].values())
    for platform in platforms:
        name = prebuilt.agent_file_name(platform)
        assert (tmp_path / "one" / name).read_bytes() == (
            tmp_path / "two" / "deeper" / name
        ).read_bytes()


def _fake_package(root: Path, source: bytes, built_from: bytes) -> Path:
    """A ``pytest_qemu/guests`` directory with *source* installed and agents built from
    *built_from*."""
    (root / "files").mkdir(parents=True)
    (root / "files" / AGENT_SOURCE).write_bytes(source)
    platform = get_platform("x86_64")
    prebuilt.write_prebuilt(root / prebuilt.PREBUILT_DIR, [platform], built_from)
    return root


def test_a_prebuilt_agent_is_used_only_if_built_from_the_installed_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = guest_script(AGENT_SOURCE)
    matching = _fake_package(tmp_path / "same", source, source)
    monkeypatch.setattr(prebuilt, "_guests_dir", lambda: matching)
    found = prebuilt.prebuilt_agent(get_platform("x86_64"))
    assert found == matching / prebuilt.PREBUILT_DIR / "agent-x86_64"
    # Not built for this platform:
    assert prebuilt.prebuilt_agent(get_platform("aarch64")) is None
    stale = _fake_package(tmp_path / "stale", source + b"\n/* changed */\n", source)
    monkeypatch.setattr(prebuilt, "_guests_dir", lambda: stale)
    assert prebuilt.prebuilt_agent(get_platform("x86_64")) is None


def test_a_source_checkout_has_no_prebuilt_agent() -> None:
    assert prebuilt.read_manifest() is None
    assert prebuilt.prebuilt_agent(get_platform()) is None


class _NoCache:
    root = Path("/nonexistent")

    def get(self, *args: object) -> Path:
        raise AssertionError("nothing should be compiled")


def test_build_agent_takes_the_prebuilt_one_unless_told_to_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = guest_script(AGENT_SOURCE)
    package = _fake_package(tmp_path / "pkg", source, source)
    monkeypatch.setattr(prebuilt, "_guests_dir", lambda: package)
    platform = get_platform("x86_64")
    monkeypatch.delenv(prebuilt.MODE_VARIABLE, raising=False)
    assert agent_build.build_agent(_NoCache(), platform).parent.name == "prebuilt"  # type: ignore[arg-type]
    monkeypatch.setenv(prebuilt.MODE_VARIABLE, "compile")
    with pytest.raises(AssertionError, match="nothing should be compiled"):
        agent_build.build_agent(_NoCache(), platform)  # type: ignore[arg-type]


def test_without_a_compiler_the_error_names_the_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv(prebuilt.MODE_VARIABLE, "compile")
    with pytest.raises(SetupError, match="apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64"):
        agent_build.build_agent(_NoCache(), get_platform("aarch64"))  # type: ignore[arg-type]


def test_a_bad_agent_mode_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(prebuilt.MODE_VARIABLE, "prebuild")
    with pytest.raises(ConfigurationError, match="PYTEST_QEMU_AGENT='prebuild'"):
        prebuilt.agent_mode()
