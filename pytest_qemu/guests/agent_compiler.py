"""How the guest's command agent (``files/agent.c``) becomes a static binary.

One compiler command for both places that compile it: the wheel's build step
(``setup.py``, every architecture, into the wheel) and the first use in a source
checkout (:mod:`pytest_qemu.guests.agent_build`, into the build cache). Standard
library only, so that the build step can import it.

The output depends only on the source and the compiler: no paths, dates or
symbols end up in it (``-s`` strips them), so two builds give the same bytes.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pytest_qemu.errors import SetupError

#: The agent's source, in ``pytest_qemu/guests/files``.
AGENT_SOURCE = "agent.c"
#: Static (the default guest has no C library), optimised, stripped.
FLAGS = ("-static", "-O2", "-Wall", "-s")


def install_hint(packages: tuple[str, ...]) -> str:
    """The command that installs a compiler and its static C library (Debian and Ubuntu)."""
    return f"apt-get install {' '.join(packages)}"


def find_compiler(compiler: str, arch: str, packages: tuple[str, ...]) -> Path:
    """The full path of *compiler*, which builds static binaries for *arch*.

    Raises:
        SetupError: it is not on ``PATH``; the message names the packages to install.
    """
    found = shutil.which(compiler)
    if found is None:
        raise SetupError(
            f"the C compiler {compiler!r} for {arch} guests was not found: the "
            "default guest's command agent is compiled on first use when the installed "
            "package carries no prebuilt one (a source checkout, or PYTEST_QEMU_AGENT=compile); "
            f"install it with `{install_hint(packages)}`"
        )
    return Path(found).resolve()


def compile_agent(compiler: Path, source: bytes, output: Path, packages: tuple[str, ...]) -> None:
    """Compile *source* with *compiler* into the static executable *output*."""
    with tempfile.TemporaryDirectory(prefix="pytest-qemu-agent-") as directory:
        source_path = Path(directory) / AGENT_SOURCE
        source_path.write_bytes(source)
        result = subprocess.run(
            [str(compiler), *FLAGS, "-o", str(output.absolute()), AGENT_SOURCE],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=300,
        )
    if result.returncode != 0:
        if "No space left on device" in result.stderr:
            # The output's file system is full: the build cache says so, naming its
            # directory (CacheFull), where a compiler error would blame the C library.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(output))
        raise SetupError(
            f"compiling the guest agent with {compiler} failed (a static C library is "
            f"needed: `{install_hint(packages)}`):\n" + result.stderr.strip()[-3000:]
        )


def compiler_version(compiler: Path) -> str:
    """The first line of ``compiler --version``, as the wheel's manifest records it."""
    result = subprocess.run(
        [str(compiler), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout.splitlines()[0] if result.stdout else str(compiler)
