"""The Debian userland's recipe, its errors and the cache listing, without building one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_qemu import ConfigurationError, SetupError
from pytest_qemu.guests.debian_userland import dpkg_failure
from pytest_qemu.images.debian_root import (
    MANIFEST,
    DebianRootRecipe,
    debian_root_image,
    userlands_dir,
)
from pytest_qemu.images.userlands import cached_userlands, prune_userlands
from pytest_qemu.platforms import get_platform
from pytest_qemu.plugin.keywords import check_keywords, check_marker


def test_the_key_is_the_architecture_suite_and_sorted_package_set() -> None:
    x86, arm = get_platform("x86_64"), get_platform("aarch64")
    one = DebianRootRecipe.of(x86, "bookworm", ["python3-pytest", "python3", "python3"])
    assert one.packages == ("python3", "python3-pytest")
    assert one == DebianRootRecipe.of(x86, "bookworm", ["python3", "python3-pytest"])
    assert one.key != DebianRootRecipe.of(arm, "bookworm", one.packages).key
    assert one.key != DebianRootRecipe.of(x86, "trixie", one.packages).key
    assert one.key != DebianRootRecipe.of(x86, "bookworm", ["python3"]).key
    assert one.name.startswith("debian-bookworm-amd64-")


@pytest.mark.parametrize("bad", ["", "-o=x", "python3,gcc", "a b", "../x"])
def test_a_bad_package_name_is_refused_by_name(bad: str) -> None:
    with pytest.raises(SetupError, match="is not a Debian package name"):
        DebianRootRecipe.of(get_platform("x86_64"), "bookworm", [bad])


def test_packages_and_suite_are_checked_as_keywords_and_marker_keywords() -> None:
    check_marker((), {"userland": "debian", "packages": ["python3"], "suite": "trixie"})
    with pytest.raises(ConfigurationError, match="list of Debian package names"):
        check_keywords({"packages": "python3"})
    with pytest.raises(ConfigurationError, match="suite"):
        check_keywords({"suite": ""})


def test_dpkg_failure_shows_the_failing_package_and_its_script_output() -> None:
    output = "\n".join(
        [*(f"Setting up lib{i} ..." for i in range(50)),
         "my-postinst: cannot reach the frobnicator",
         "dpkg: error processing package badpkg (--configure):",
         " installed badpkg package post-installation script subprocess returned error exit "
         "status 1", *(f"Setting up more{i} ..." for i in range(50)),
         "Errors were encountered while processing:", " badpkg"]
    )  # fmt: skip
    shown = dpkg_failure(output)
    assert "cannot reach the frobnicator" in shown
    assert "dpkg: error processing package badpkg (--configure):" in shown
    assert shown.endswith(" badpkg")
    assert "Setting up lib0" not in shown


def test_cache_list_and_prune(tmp_path: Path) -> None:
    for name, idle_days in (("debian-bookworm-amd64-old", 40), ("debian-bookworm-arm64-new", 1)):
        directory = userlands_dir(tmp_path) / name
        directory.mkdir(parents=True)
        (directory / "disk.qcow2").write_bytes(b"x" * 8192)
        (directory / MANIFEST).write_text(
            json.dumps({"suite": "bookworm", "architecture": name.split("-")[2],
                        "packages": ["python3"]})
        )  # fmt: skip
        then = os.stat(directory).st_mtime - idle_days * 86400
        os.utime(directory, (then, then))
    listed = cached_userlands(tmp_path)
    assert [u.description for u in listed] == [
        "debian bookworm amd64: python3",
        "debian bookworm arm64: python3",
    ]
    assert all(u.size >= 8192 for u in listed)
    removed = prune_userlands(tmp_path, idle_days=30)
    assert [u.path.name for u in removed] == ["debian-bookworm-amd64-old"]
    assert [u.path.name for u in cached_userlands(tmp_path)] == ["debian-bookworm-arm64-new"]
    prune_userlands(tmp_path, idle_days=0)
    assert cached_userlands(tmp_path) == []


def test_no_reachable_archive_fails_clearly_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    monkeypatch.setenv("PYTEST_QEMU_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    platform = get_platform("x86_64")
    # A suite nobody else uses here: the host's security mirror has no index for it.
    recipe = DebianRootRecipe.of(platform, "pytest-qemu-nosuch", ["python3"])

    def configure(disk: Path) -> None:
        raise AssertionError("nothing to configure without packages")

    with pytest.raises(SetupError, match="no Debian archive answered") as raised:
        debian_root_image(tmp_path, platform, recipe, configure)
    assert "amd64" in str(raised.value) and "pytest-qemu-nosuch" in str(raised.value)
    userlands = userlands_dir(tmp_path)
    assert [path.name for path in userlands.iterdir()] == [".apt"]
