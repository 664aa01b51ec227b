"""Debian packages of any architecture, downloaded through a private apt configuration.

The host's apt configuration is never changed (no ``dpkg --add-architecture``: enabling a
foreign architecture there has dropped another's index before). Instead every call gives
apt its own sources list, index and cache directories and architecture, under a state
directory of ours; from the host's apt only the Debian mirror it uses is looked up.
Nothing here needs root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.errors import SetupError

#: Used when the host's apt names no Debian mirror (an Ubuntu host, or no apt at all).
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Debian's archive keys (package ``debian-archive-keyring``, on Ubuntu too).
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

_TIMEOUT = 600


def host_mirrors() -> dict[str, str]:
    """The Debian mirrors the host's apt uses: ``{"archive": URI, "security": URI}``, each
    only where found; ``$PYTEST_QEMU_DEBIAN_MIRROR`` overrides the archive."""
    mirrors: dict[str, str] = {}
    if configured := os.environ.get("PYTEST_QEMU_DEBIAN_MIRROR"):
        mirrors["archive"] = configured
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        return mirrors
    try:
        listed = subprocess.run(
            [apt_get, "indextargets", "--format", "$(ORIGIN)|$(LABEL)|$(REPO_URI)"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return mirrors
    for line in listed.splitlines():
        origin, label, uri = [*line.split("|"), "", ""][:3]
        if origin != "Debian" or not uri:
            continue
        kind = "security" if label == "Debian-Security" else "archive"
        mirrors.setdefault(kind, uri.rstrip("/"))
    return mirrors


def sources_list(
    suite: str, debian_arch: str, mirrors: dict[str, str], keyring: Path | None = None
) -> str:
    """The sources list of *suite* for *debian_arch*: the release, its updates, and its
    security updates where the host knows a security mirror; checked with *keyring*
    where given (else with apt's trusted keys)."""
    archive = mirrors.get("archive", DEFAULT_MIRROR)
    options = f"arch={debian_arch}" + (f" signed-by={keyring}" if keyring else "")
    lines = [
        f"deb [{options}] {archive} {suite} main",
        f"deb [{options}] {archive} {suite}-updates main",
    ]
    if "security" in mirrors:
        lines.append(f"deb [{options}] {mirrors['security']} {suite}-security main")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PrivateApt:
    """apt for one Debian *suite* and architecture, all of its state under *state_dir*."""

    suite: str
    debian_arch: str
    state_dir: Path

    def options(self) -> list[str]:
        """The ``-o`` options that keep apt off the host's configuration and state."""
        state = self.state_dir
        options = {
            "Dir::Etc::sourcelist": str(state / "sources.list"),
            "Dir::Etc::sourceparts": "-",
            "Dir::Etc::preferences": "-",
            "Dir::Etc::preferencesparts": "-",
            "Dir::State::Lists": str(state / "lists"),
            "Dir::State::status": "/dev/null",
            "Dir::Cache": str(state / "cache"),
            "APT::Architecture": self.debian_arch,
            "APT::Architectures::": self.debian_arch,
            "Debug::NoLocking": "1",
        }
        if os.geteuid() == 0:
            # apt drops to its own user to download, which cannot write into our
            # directories; as root, download as root instead (quietly).
            options["APT::Sandbox::User"] = "root"
        return [argument for key, value in options.items() for argument in ("-o", f"{key}={value}")]

    def update(self) -> None:
        """Write the sources list and download the package indexes."""
        for directory in ("lists/partial", "cache/archives/partial"):
            (self.state_dir / directory).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "sources.list").write_text(
            sources_list(
                self.suite,
                self.debian_arch,
                host_mirrors(),
                DEBIAN_KEYRING if DEBIAN_KEYRING.exists() else None,
            )
        )
        self._apt("apt-get", ["update", "-q"], "updating the package indexes")

    def concrete_package(self, package: str) -> str:
        """*package*, or the versioned kernel package a kernel meta-package depends on
        (``linux-image-arm64`` → ``linux-image-6.1.0-57-arm64``)."""
        depends = self._apt("apt-cache", ["depends", package], f"looking up {package}")
        for line in depends.splitlines():
            name = line.strip().removeprefix("Depends: ")
            if line.strip().startswith("Depends: linux-image-") and name != package:
                return name
        return package

    def download_size(self, packages: Sequence[str]) -> int:
        """The bytes that downloading *packages* fetches."""
        shown = self._apt(
            "apt-cache", ["show", "--no-all-versions", *packages], "looking up package sizes"
        )
        return sum(
            int(line.split(":", 1)[1]) for line in shown.splitlines() if line.startswith("Size:")
        )

    def essential_packages(self) -> list[str]:
        """The suite's packages marked ``Essential: yes`` (what every Debian system has)."""
        available = self._apt("apt-cache", ["dumpavail"], "listing the essential packages")
        names = []
        for stanza in available.split("\n\n"):
            fields = dict(
                line.split(": ", 1)
                for line in stanza.splitlines()
                if line[:1].strip() and ": " in line
            )
            if fields.get("Essential") == "yes" and "Package" in fields:
                names.append(fields["Package"])
        return sorted(set(names))

    def resolve(self, packages: Sequence[str]) -> list[str]:
        """*packages* and everything they depend on (recommendations left out), as apt
        would install them on an empty system, in apt's installation order."""
        simulated = self._apt(
            "apt-get",
            ["install", "--simulate", "--no-install-recommends", "-q", *packages],
            "resolving the dependencies of " + " ".join(packages),
        )
        return [line.split()[1] for line in simulated.splitlines() if line.startswith("Inst ")]

    def download(self, packages: Sequence[str], destination: Path) -> None:
        """Download the ``.deb`` files of *packages* into *destination*."""
        destination.mkdir(parents=True, exist_ok=True)
        self._apt("apt-get", ["download", "-q", *packages], "downloading", cwd=destination)

    def _apt(self, tool: str, arguments: list[str], what: str, cwd: Path | None = None) -> str:
        executable = shutil.which(tool)
        if executable is None:
            raise SetupError(
                f"{what} of Debian's {self.debian_arch} packages needs {tool} (a Debian or "
                "Ubuntu host); elsewhere, download the .deb files yourself"
            )
        try:
            result = subprocess.run(
                [executable, *self.options(), *arguments],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired:
            raise SetupError(
                f"{what} of Debian {self.suite}'s {self.debian_arch} packages took over "
                f"{_TIMEOUT} s: is a Debian mirror reachable?"
            ) from None
        if result.returncode != 0:
            raise SetupError(
                f"{what} of Debian {self.suite}'s {self.debian_arch} packages "
                f"({' '.join(arguments)}) failed: {result.stderr.strip()[-2000:]}"
            )
        return result.stdout
