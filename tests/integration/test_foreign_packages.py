"""Downloading a foreign architecture's packages from Debian's archive (needs the mirror,
not QEMU): the host's apt configuration stays as it was."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pytest_qemu.errors import SetupError
from pytest_qemu.platforms.apt import PrivateApt


def _host_apt_state() -> tuple[str, list[str]]:
    foreign = subprocess.run(
        ["dpkg", "--print-foreign-architectures"], capture_output=True, text=True, check=True
    ).stdout
    lists = sorted(path.name for path in Path("/var/lib/apt/lists").glob("*"))
    return foreign, lists


@pytest.fixture(scope="module")
def armhf_apt(tmp_path_factory: pytest.TempPathFactory) -> PrivateApt:
    before = _host_apt_state()
    private = PrivateApt("bookworm", "armhf", tmp_path_factory.mktemp("apt"))
    private.update()
    assert _host_apt_state() == before, "the host's apt configuration or indexes changed"
    return private


def test_a_kernel_meta_package_resolves_and_downloads(
    armhf_apt: PrivateApt, tmp_path: Path
) -> None:
    kernel = armhf_apt.concrete_package("linux-image-armmp")
    assert kernel.startswith("linux-image-") and kernel.endswith("-armmp"), kernel
    assert armhf_apt.download_size(["busybox-static"]) > 100_000
    armhf_apt.download(["busybox-static"], tmp_path)
    (deb,) = tmp_path.glob("busybox-static_*_armhf.deb")
    assert deb.stat().st_size > 100_000


def test_an_unknown_package_names_itself_the_architecture_and_apt(
    armhf_apt: PrivateApt, tmp_path: Path
) -> None:
    with pytest.raises(SetupError) as raised:
        armhf_apt.download(["no-such-package-pytest-qemu"], tmp_path)
    message = str(raised.value)
    assert "armhf" in message and "no-such-package-pytest-qemu" in message
    assert "Unable to locate package" in message or "E:" in message
