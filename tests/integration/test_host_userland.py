"""The host's userland in the guest: host programs, shared temporary files, a read-only root."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_qemu import VM, ConfigurationError, VMFactory

pytestmark = [pytest.mark.vm, pytest.mark.qemu(userland="host")]


@pytest.fixture(scope="module")
def arch() -> str:
    """The host's programs run only on the host's architecture."""
    return platform.machine()


def test_python_and_a_program_compiled_on_the_host_run(qemu_vm: VM, tmp_path: Path) -> None:
    assert qemu_vm.check("python3 -c 'import json, sys; print(json.dumps(sys.argv))' a") == (
        '["-c", "a"]\n'
    )
    compiler = shutil.which("cc")
    assert compiler is not None
    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\nint main(void) { puts("dynamic hello"); }\n')
    subprocess.run([compiler, "-o", str(tmp_path / "hello"), str(source)], check=True)
    assert (
        "libc.so"
        in subprocess.run(
            ["ldd", str(tmp_path / "hello")], capture_output=True, text=True, check=True
        ).stdout
    ), "the test program must be dynamically linked"
    assert qemu_vm.check(str(tmp_path / "hello")) == "dynamic hello\n"


def test_tmp_path_is_shared_both_ways(qemu_vm: VM, tmp_path: Path) -> None:
    (tmp_path / "from-host.txt").write_text("written on the host\n")
    assert qemu_vm.check(f"cat {tmp_path}/from-host.txt") == "written on the host\n"
    written = tmp_path / "from-guest.txt"
    qemu_vm.check(f"echo written in the guest > {written}; chmod 640 {written}")
    assert written.read_text() == "written in the guest\n"
    assert written.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / ".virtfs_metadata").exists()


def test_the_host_root_is_read_only_and_scratch_space_is_private(
    qemu_vm: VM, tmp_path: Path
) -> None:
    refused = qemu_vm.run("touch /usr/pytest-qemu-was-here")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert not Path("/usr/pytest-qemu-was-here").exists()
    # Scratch directories take writes in guest memory and still show the host's files.
    qemu_vm.check("echo private > /root/.pytest-qemu-scratch; echo private > /var/tmp/scratch")
    assert not Path("/root/.pytest-qemu-scratch").exists()
    assert qemu_vm.run("ls /etc/os-release").returncode == 0


def test_commands_start_in_the_directory_pytest_runs_in(qemu_vm: VM) -> None:
    assert qemu_vm.check("pwd") == f"{os.getcwd()}\n"
    assert (
        qemu_vm.check("cat pyproject.toml | head -1")
        == Path("pyproject.toml").read_text().splitlines(keepends=True)[0]
    )


def test_a_second_vm_is_restored_from_a_snapshot(
    qemu_vm_factory: VMFactory, tmp_path: Path
) -> None:
    first = qemu_vm_factory()
    second = qemu_vm_factory()
    assert second.restored_from is not None or first.restored_from is not None
    (tmp_path / "shared.txt").write_text("seen by both")
    for vm in (first, second):
        assert vm.check(f"cat {tmp_path}/shared.txt") == "seen by both"
        assert vm.check("python3 -c 'print(6 * 7)'") == "42\n"


def test_another_architecture_is_refused_plainly(qemu_vm_factory: VMFactory) -> None:
    with pytest.raises(ConfigurationError, match="userland='host' needs the host's architecture"):
        qemu_vm_factory(arch="aarch64")
