"""Compiling the guest's command agent (``files/agent.c``) into a static binary.

The default guest has no C library, so the agent is linked statically. It is
built once per source and compiler and kept in the build cache.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

from pytest_qemu.errors import SetupError
from pytest_qemu.guest.cache import BuildCache, cache_key, file_fingerprint
from pytest_qemu.guest.initramfs import guest_script

AGENT_SOURCE = "agent.c"
_FLAGS = ("-static", "-O2", "-Wall", "-s")


def build_agent(cache: BuildCache, compiler: str = "cc") -> Path:
    """The agent binary for the host's architecture, compiled with *compiler* if not cached."""
    found = shutil.which(compiler)
    if found is None:
        raise SetupError(
            f"the C compiler {compiler!r} was not found: the default guest's command agent is "
            "compiled on first use; install it with `apt-get install gcc libc6-dev`"
        )
    compiler_path = Path(found).resolve()
    source = guest_script(AGENT_SOURCE)
    key = cache_key(["1", source, file_fingerprint(compiler_path), *_FLAGS])

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
            raise SetupError(
                f"compiling the guest agent with {compiler_path} failed (a static C library is "
                "needed: `apt-get install libc6-dev`):\n" + result.stderr.strip()[-3000:]
            )

    return cache.get("agents", key, "", build)
