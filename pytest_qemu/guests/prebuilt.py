"""The command agents prebuilt into the wheel, one per architecture, and when to use them.

The wheel's build step (``setup.py``) calls :func:`write_prebuilt`: it compiles
the agent for every platform of the registry into ``guests/prebuilt/`` and
records in ``manifest.json`` the source's hash, each compiler's version and each
binary's hash. At run time :func:`prebuilt_agent` hands out a binary only if it
was built from the very ``agent.c`` installed beside it; a source checkout has
none, and then the agent is compiled on first use (as it is with
``PYTEST_QEMU_AGENT=compile``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_qemu.errors import ConfigurationError
from pytest_qemu.guests.agent_compiler import (
    AGENT_SOURCE,
    FLAGS,
    compile_agent,
    compiler_version,
    find_compiler,
)
from pytest_qemu.platforms.base import Platform

#: The directory of ``pytest_qemu/guests`` that holds the prebuilt agents in a wheel.
PREBUILT_DIR = "prebuilt"
MANIFEST = "manifest.json"
#: The environment variable that chooses where the agent comes from.
MODE_VARIABLE = "PYTEST_QEMU_AGENT"
_MODES = ("auto", "compile")


def agent_file_name(platform: Platform) -> str:
    """The prebuilt agent's file name for *platform*."""
    return f"agent-{platform.name}"


def agent_mode() -> str:
    """``auto`` (the prebuilt agent if the package has one, else compile it) or ``compile``
    (always compile), from ``$PYTEST_QEMU_AGENT``.

    Raises:
        ConfigurationError: the variable holds anything else.
    """
    mode = os.environ.get(MODE_VARIABLE, "") or "auto"
    if mode not in _MODES:
        raise ConfigurationError(
            f"{MODE_VARIABLE}={mode!r} is not one of {', '.join(_MODES)}: 'auto' takes the "
            "agent prebuilt into the wheel (compiling it if there is none), 'compile' always "
            "compiles it with the platform's C compiler"
        )
    return mode


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _guests_dir() -> Path:
    return Path(str(resources.files("pytest_qemu.guests")))


def read_manifest(directory: Path | None = None) -> dict[str, Any] | None:
    """The manifest of the prebuilt agents in *directory* (the installed package's if None),
    or None if there is none."""
    directory = directory or _guests_dir() / PREBUILT_DIR
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest


def prebuilt_agent(platform: Platform) -> Path | None:
    """The agent prebuilt for *platform* into the installed package, or None: there is none,
    or it was built from another ``agent.c`` than the one installed (a changed checkout)."""
    guests = _guests_dir()
    manifest = read_manifest(guests / PREBUILT_DIR)
    if manifest is None or platform.name not in manifest.get("agents", {}):
        return None
    try:
        source = (guests / "files" / AGENT_SOURCE).read_bytes()
    except OSError:
        return None
    if manifest.get("source_sha256") != _sha256(source):
        return None
    agent = guests / PREBUILT_DIR / agent_file_name(platform)
    return agent if agent.is_file() else None


def write_prebuilt(directory: Path, platforms: Iterable[Platform], source: bytes) -> dict[str, Any]:
    """Compile the agent *source* for each of *platforms* into *directory*, with its manifest.

    Raises:
        SetupError: a compiler is missing (the message names its Debian packages) or fails.
    """
    directory.mkdir(parents=True, exist_ok=True)
    agents: dict[str, dict[str, str]] = {}
    for platform in platforms:
        compiler = find_compiler(platform.compiler, platform.name, platform.compiler_packages)
        output = directory / agent_file_name(platform)
        compile_agent(compiler, source, output, platform.compiler_packages)
        agents[platform.name] = {
            "file": output.name,
            "sha256": _sha256(output.read_bytes()),
            "compiler": compiler_version(compiler),
        }
    manifest = {"source_sha256": _sha256(source), "flags": list(FLAGS), "agents": agents}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
