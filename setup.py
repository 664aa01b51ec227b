"""The wheel's build step: the guest's command agent, prebuilt for every architecture.

``build_py`` compiles ``pytest_qemu/guests/files/agent.c`` with each platform's
C compiler (``pytest_qemu.platforms``: ``gcc`` for x86_64,
``aarch64-linux-gnu-gcc`` for aarch64, and so on for all eight) into
``pytest_qemu/guests/prebuilt/`` of the wheel, so that users need no C compiler.
The binaries are guest files, not Python extensions: the wheel stays
``py3-none-any``.

Building a wheel (also from the sdist) therefore needs, on Debian 12 or Ubuntu::

    apt-get install gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
        gcc-i686-linux-gnu libc6-dev-i386-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
        gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross gcc-s390x-linux-gnu \
        libc6-dev-s390x-cross gcc-mips64el-linux-gnuabi64 libc6-dev-mips64el-cross \
        gcc-riscv64-linux-gnu libc6-dev-riscv64-cross

(the error names the packages of any compiler that is missing). An editable
install (``pip install -e .``) builds nothing: a source checkout compiles the
agent on first use.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithAgents(build_py):
    """``build_py``, then the agents for every platform of the registry into the build."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        sys.path.insert(0, str(HERE))
        try:
            from pytest_qemu.guests.prebuilt import PREBUILT_DIR, write_prebuilt
            from pytest_qemu.platforms import get_platform, names
        finally:
            sys.path.remove(str(HERE))
        source = (HERE / "pytest_qemu" / "guests" / "files" / "agent.c").read_bytes()
        target = Path(self.build_lib) / "pytest_qemu" / "guests" / PREBUILT_DIR
        manifest = write_prebuilt(target, [get_platform(name) for name in names()], source)
        for name, agent in sorted(manifest["agents"].items()):
            print(f"pytest-qemu: agent for {name}: sha256 {agent['sha256']} ({agent['compiler']})")


setup(cmdclass={"build_py": BuildPyWithAgents})
