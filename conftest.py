"""The project's own test set-up, shared by ``tests/`` and ``examples/``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_qemu.cache import CACHEDIR_TAG

# tests.markdown_examples: the Python examples of README.md and docs/ run as tests.
pytest_plugins = ["pytester", "tests.markdown_examples"]


@pytest.fixture(scope="session", autouse=True)
def _private_caches_go_with_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The pytest-qemu caches tests made for themselves go once the run ends.

    pytester's runs (their HOME moved) and tests of the cache build caches of their own
    in pytest's temporary directory, which pytest keeps for three runs: with their
    templates' RAM files, several GB a run. The logs beside them stay.
    """
    yield
    caches = []
    # os.walk passes over what it cannot read; a cache found is not walked into.
    for directory, subdirectories, files in os.walk(tmp_path_factory.getbasetemp()):
        if "CACHEDIR.TAG" in files and _is_ours(Path(directory, "CACHEDIR.TAG")):
            caches.append(directory)
            subdirectories.clear()
    for cache in caches:
        shutil.rmtree(cache, ignore_errors=True)


def _is_ours(tag: Path) -> bool:
    try:
        return tag.read_bytes() == CACHEDIR_TAG
    except OSError:
        return False
