"""The guest's command agent for a platform: prebuilt, or compiled on first use.

An installed wheel carries the agent prebuilt for every architecture
(:mod:`pytest_qemu.guests.prebuilt`). Without one (a source checkout), or with
``PYTEST_QEMU_AGENT=compile``, it is compiled with the platform's C compiler
once per source and compiler and kept in the build cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from pytest_qemu.cache import BuildCache, cache_key, file_fingerprint
from pytest_qemu.guests.agent_compiler import AGENT_SOURCE, FLAGS, compile_agent, find_compiler
from pytest_qemu.guests.initramfs import guest_script
from pytest_qemu.guests.prebuilt import agent_mode, prebuilt_agent
from pytest_qemu.platforms import Platform


def agent_origin(platform: Platform) -> tuple[Path, bool]:
    """Where *platform*'s agent comes from: ``(the prebuilt agent, True)``, or
    ``(the compiler that builds it, False)``.

    Raises:
        SetupError: neither is there; the message names the compiler's packages.
    """
    if agent_mode() == "auto" and (prebuilt := prebuilt_agent(platform)) is not None:
        return prebuilt, True
    return find_compiler(platform.compiler, platform.name, platform.compiler_packages), False


def build_agent(cache: BuildCache, platform: Platform) -> Path:
    """The agent binary for *platform*: the prebuilt one, else compiled if not cached."""
    found, prebuilt = agent_origin(platform)
    if prebuilt:
        return found
    compiler = found
    source = guest_script(AGENT_SOURCE)
    key = cache_key(["1", platform.name, source, file_fingerprint(compiler), *FLAGS])

    def build(out: BinaryIO) -> None:
        out.close()
        compile_agent(compiler, source, Path(out.name), platform.compiler_packages)

    return cache.get("agents", key, "", build)
