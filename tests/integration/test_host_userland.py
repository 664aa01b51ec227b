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


def test_programs_see_a_normal_linux(qemu_vm: VM) -> None:
    mounts = {
        fields[1]: fields[2]
        for fields in (line.split() for line in qemu_vm.check("cat /proc/mounts").splitlines())
    }
    expected = {"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts"}
    expected |= {"/dev/shm": "tmpfs", "/run": "tmpfs", "/tmp": "overlay"}
    assert {path: mounts.get(path) for path in expected} == expected
    assert "processor" in qemu_vm.check("cat /proc/cpuinfo")
    assert qemu_vm.check("grep ^Name: /proc/self/status") == "Name:\tgrep\n"
    assert "devices" in qemu_vm.check("ls /sys").split()
    for writable in ("/tmp", "/run", "/dev/shm"):
        assert qemu_vm.check(f"echo hi > {writable}/probe && cat {writable}/probe") == "hi\n"
    # The host's users and groups, by name.
    assert qemu_vm.check("getent passwd") == _host("getent", "passwd")
    assert qemu_vm.check("getent group") == _host("getent", "group")
    assert qemu_vm.check("id -un") == _host("id", "-un")
    # procps, util-linux and iproute2 as on the host.
    assert qemu_vm.check("ps -o comm= -p 1") == "init\n"
    assert qemu_vm.check("ps -e -o pid=").split().count("1") == 1
    assert " /proc " in qemu_vm.check("mount")
    assert "Tasks:" in qemu_vm.check("top -b -n 1")
    assert "LOOPBACK,UP" in qemu_vm.check("ip -o link show lo")
    assert "127.0.0.1/8" in qemu_vm.check("ip -o addr show lo")
    # Process substitution needs /dev/fd; multiprocessing's locks need /dev/shm.
    assert qemu_vm.check("bash -c 'cat <(echo substituted)'") == "substituted\n"
    pool = "import multiprocessing as m; print(m.Pool(2).map(abs, [-1, -2]))"
    assert qemu_vm.check(f"python3 -c '{pool}'") == "[1, 2]\n"


def _host(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_host_file_systems_with_the_same_inode_numbers_stay_apart(qemu_vm: VM) -> None:
    # On the host, /proc, /sys and /dev are three file systems whose roots are all inode 1:
    # shared as one tree, their numbers collide unless the export remaps them.
    roots = [os.stat(path) for path in ("/proc", "/sys", "/dev")]
    assert len({root.st_ino for root in roots}) == 1
    assert len({root.st_dev for root in roots}) == 3
    # A plain bind mount of the guest's root shows the shared tree without the guest's
    # own /proc, /sys and /dev mounted over it.
    bare = "/run/bare-root"
    listing = qemu_vm.check(
        f"mkdir {bare} && mount --bind / {bare} && "
        f"stat -c %i {bare}/proc {bare}/sys {bare}/dev && "
        # Looked up by name: each tree holds its own entries and not the other's.
        f"for entry in proc/cpuinfo proc/block sys/block sys/cpuinfo; do "
        f"test -e {bare}/$entry && echo $entry; done; umount {bare}"
    ).split()
    inodes, found = listing[:3], listing[3:]
    assert len(set(inodes)) == 3, f"the guest sees the host's /proc, /sys, /dev as {inodes}"
    assert found == ["proc/cpuinfo", "sys/block"]


def test_a_plain_vm_gives_no_warning(qemu_vm_factory: VMFactory) -> None:
    vm = qemu_vm_factory(snapshot=False)
    vm.check("true")
    console = vm.console_log.read_text(errors="replace")
    assert "warning" not in vm.stderr_log.read_text(errors="replace").lower()
    assert "warning" not in console.lower()
    assert "pytest-qemu: cannot" not in console


@pytest.mark.qemu(cpus=2)
def test_two_cpus_run_at_once_in_clones_too(qemu_vm_factory: VMFactory) -> None:
    booted = qemu_vm_factory()
    cloned = qemu_vm_factory()
    assert cloned.restored_from is not None
    for vm in (booted, cloned):
        assert vm.check("nproc") == "2\n"
        # Multi-threaded TCG: each vCPU has a host thread of its own, so two busy guest
        # threads run at once (one shared thread would take turns).
        assert len({cpu["thread-id"] for cpu in vm.qmp("query-cpus-fast")}) == 2
        # Field 39 of /proc/self/stat: the CPU the process runs on.
        on_cpu = "awk '{print $39}' /proc/self/stat"
        assert vm.check(f"taskset -c 0 {on_cpu}; taskset -c 1 {on_cpu}") == "0\n1\n"
