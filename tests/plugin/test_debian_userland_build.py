"""Two pytest-xdist workers asking for the same Debian userland build it once.

The build itself is replaced by a stand-in that records each call and takes a few
seconds (the real one, minutes under emulation, is exercised by
``tests/integration/test_debian_userland.py``): what is tested here is the lock and
the atomic publication between real worker processes.
"""

from __future__ import annotations

import pytest

CONFTEST = """
import json, subprocess, time
from pathlib import Path

import pytest

from pytest_qemu.images import debian_root


def fake_build(cache_dir, work, platform, recipe, configure):
    with open(Path(cache_dir) / "builds.txt", "a") as record:
        record.write(recipe.name + "\\n")
    time.sleep(3)
    out = work / "out"
    out.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out / "disk.qcow2"), "1M"],
                   check=True)
    (out / debian_root.MANIFEST).write_text(json.dumps({
        "architecture": recipe.debian_arch, "suite": recipe.suite,
        "packages": list(recipe.packages), "installed": 1, "download_bytes": 0,
        "build_seconds": 3}))


@pytest.fixture(autouse=True)
def _fake_build(monkeypatch):
    monkeypatch.setattr(debian_root, "_build", fake_build)
"""

TESTS = """
import pytest
from pytest_qemu.guests import GUEST_KINDS


@pytest.mark.parametrize("n", range(2))
def test_userland(qemu_vm_factory, n):
    make = GUEST_KINDS.load("debian")
    guest = make(qemu_vm_factory.guest, [], packages=["python3", "hello"])
    built = guest.userland()
    assert built.disk.is_file()
    assert built.directory.name.startswith("debian-bookworm-")
"""


def test_two_workers_build_one_userland_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = pytester.path / "cache"
    monkeypatch.setenv("PYTEST_QEMU_CACHE_DIR", str(cache))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_userland=TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--qemu-accel=tcg")
    result.assert_outcomes(passed=2)
    builds = (cache / "builds.txt").read_text().splitlines()
    assert len(builds) == 1, builds
    userlands = sorted(path.name for path in (cache / "userlands").iterdir())
    # The one userland, the private apt state; no build directory or lock left behind.
    assert userlands == [builds[0]], userlands


@pytest.mark.timeout(3600)  # builds the userland if no other test did yet
def test_the_options_choose_the_debian_userland_and_its_packages(
    pytester: pytest.Pytester,
) -> None:
    """``--qemu-userland debian --qemu-packages`` for the run; a busybox VM of the same run
    (the marker's userland) ignores the run's packages."""
    pytester.makepyfile(
        test_options="""
        import pytest

        def test_debian(qemu_vm):
            assert qemu_vm.check("python3 -m pytest --version").startswith("pytest ")
            assert qemu_vm.check("dpkg --print-architecture") == "amd64\\n"

        @pytest.mark.qemu(userland="busybox")
        def test_busybox(qemu_vm):
            assert qemu_vm.run("command -v python3").returncode != 0
        """
    )
    result = pytester.runpytest_subprocess(
        "--qemu-userland=debian", "--qemu-packages=python3-pytest", "--qemu-arch=x86_64",
        "--qemu-accel=tcg", "-p", "no:randomly", "--timeout=3600",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
