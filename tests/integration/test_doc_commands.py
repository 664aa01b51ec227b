"""The command examples of the documentation, run as written (where they take seconds).

The set-up (``./scripts/setup.sh``) and the README's test command are what CI itself
runs (see ``.ci/run``); the Python examples run through ``tests/markdown_examples.py``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_qemu.images import DebianImage, build_debian_image
from pytest_qemu.plugin.session import QemuSession
from tests.markdown_examples import code_blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _command(page: str, starts: str) -> list[str]:
    """The one command line of *page*'s ```sh blocks that starts with *starts*, split
    like a shell, with its trailing comment dropped."""
    lines = [
        line
        for block in code_blocks((DOCS / page).read_text())
        if block.language == "sh"
        for line in block.source.splitlines()
        if line.startswith(starts)
    ]
    assert len(lines) == 1, f"{page}: {lines}"
    return shlex.split(lines[0], comments=True)


def _python(argv: list[str]) -> list[str]:
    """*argv* with its Python (``python``, ``.venv/bin/python``) replaced by this one."""
    assert argv[0].endswith("python"), argv
    return [sys.executable, *argv[1:]]


def test_listing_the_leases(tmp_path: Path) -> None:
    argv = _python(_command("parallel.md", "python -c "))
    state = {**os.environ, "PYTEST_QEMU_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(argv, env=state, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def debian(pytestconfig: pytest.Config) -> DebianImage:
    """The Debian test image (built once per machine, shared with test_images.py)."""
    return build_debian_image(QemuSession.of(pytestconfig).cache_dir)


@pytest.mark.vm
def test_building_the_debian_image_ahead_of_time(
    debian: DebianImage, pytestconfig: pytest.Config
) -> None:
    argv = _command("images.md", "sudo ")
    assert argv[0] == "sudo" and os.geteuid() == 0  # the image tests run as root
    cache = QemuSession.of(pytestconfig).cache_dir
    environment = {**os.environ, "PYTEST_QEMU_CACHE_DIR": str(cache)}
    result = subprocess.run(
        _python(argv[1:]), env=environment, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert Path(printed["disk"]) == debian.disk and debian.disk.is_file()
