"""Compiling the guest's command agent (``files/agent.c``) into a static binary.

The default guest has no C library, so the agent is linked statically. It is
built once per source and compiler and kept in the build cache.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

from pytest_qemu.cache import BuildCache, cache_key, file_fingerprint
from pytest_qemu.errors import SetupError
from pytest_qemu.guests.initramfs import guest_script
from pytest_qemu.platforms import Platform

AGENT_SOURCE = "agent.c"
_FLAGS = ("-static", "-O2", "-Wall", "-s")


def build_agent(cache: BuildCache, platform: Platform) -> Path:
    """The agent binary for *platform*, compiled with its C compiler if not cached."""
    compiler = platform.compiler
    found = shutil.which(compiler)
    if found is None:
        raise SetupError(
            f"the C compiler {compiler!r} for {platform.name} guests was not found: the "
            "default guest's command agent is compiled on first use; install it with "
            f"`apt-get install {' '.join(platform.compiler_packages)}`"
        )
    compiler_path = Path(found).resolve()
    source = guest_script(AGENT_SOURCE)
    key = cache_key(["1", platform.name, source, file_fingerprint(compiler_path), *_FLAGS])

    def build(out: BinaryIO) -> None:
        out.close()
        source_path = Path(out.name).with_suffix(".c")
        source_path.write_bytes(source)
        try:
            result = subprocess.run(
                [str(compiler_path), *_FLAGS, "-o", out.name, str(source_path)],
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            source_path.unlink(missing_ok=True)
        if result.returncode != 0:
            if "No space left on device" in result.stderr:
                # The cache's file system is full: BuildCache says so, naming the directory.
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), out.name)
            raise SetupError(
                f"compiling the guest agent with {compiler_path} failed (a static C library is "
                f"needed: `apt-get install {' '.join(platform.compiler_packages)}`):\n"
                + result.stderr.strip()[-3000:]
            )

    return cache.get("agents", key, "", build)
