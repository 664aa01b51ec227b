"""Tests of pytest_qemu.allocation: unique leases across threads and processes."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import filelock
import pytest

import pytest_qemu.allocation
from pytest_qemu.allocation import (
    AllocationError,
    Allocator,
    Lease,
    LeaseKind,
    Owner,
    default_state_dir,
)
from pytest_qemu.allocation.ports import port_is_free
from pytest_qemu.errors import ConfigurationError

SRC_DIR = Path(pytest_qemu.allocation.__file__).resolve().parents[2]

# A child that leases values, prints them as JSON, then waits for a line on
# stdin before releasing them (or until it is killed).
CHILD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from pytest_qemu.allocation import Allocator

    state_dir, count, low, high = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    allocator = Allocator(Path(state_dir), port_range=(low, high), lock_timeout=10)
    leases = []
    for i in range(count):
        leases.append(allocator.lease_vm_number(f"child vm {i}"))
        leases.append(allocator.lease_port("tcp" if i % 2 else "udp", f"child port {i}"))
        leases.append(allocator.lease_network_id(f"child net {i}"))
    print(json.dumps([[lease.kind.value, lease.value] for lease in leases]), flush=True)
    sys.stdin.readline()
    for lease in leases:
        lease.release()
    """
)


def start_child(state_dir: Path, count: int, port_range: tuple[int, int]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-c", CHILD_SCRIPT, str(state_dir), str(count), *map(str, port_range)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def child_leases(child: subprocess.Popen[str]) -> list[tuple[str, int]]:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"child exited early with status {child.wait()}"
    return [(kind, value) for kind, value in json.loads(line)]


def free_ports(count: int) -> int:
    """The first of *count* consecutive ports that nothing on the host holds right now.

    The search starts at a random place so that tests running in parallel
    (pytest-xdist) are unlikely to pick the same ports.
    """
    start = random.randrange(27000, 32000)
    for base in range(start, start + 1000):
        if all(port_is_free(port, p) for port in range(base, base + count) for p in ("tcp", "udp")):
            return base
    pytest.skip("no free ports found on this host")


def free_tcp_port() -> int:
    return free_ports(1)


def write_state(state_dir: Path, records: list[dict[str, object]], **extra: object) -> None:
    data = {"version": 1, "leases": records, **extra}
    (state_dir / "leases.json").write_text(json.dumps(data))


def record(kind: str, value: int, owner: Owner, purpose: str = "") -> dict[str, object]:
    return {
        "kind": kind,
        "value": value,
        "pid": owner.pid,
        "start_time": owner.start_time,
        "purpose": purpose,
    }


@pytest.fixture
def allocator(tmp_path: Path) -> Iterator[Allocator]:
    allocator = Allocator(tmp_path, port_range=(40000, 40999), lock_timeout=10)
    yield allocator
    for lease in allocator.leases():
        lease.release()


# --- distinct values ---------------------------------------------------------


def test_smallest_free_numbers_are_leased_in_order(allocator: Allocator) -> None:
    vms = [allocator.lease_vm_number(f"vm {i}") for i in range(5)]
    nets = [allocator.lease_network_id() for _ in range(3)]
    assert [lease.value for lease in vms] == [1, 2, 3, 4, 5]
    assert [lease.value for lease in nets] == [1, 2, 3]
    assert vms[0].kind is LeaseKind.VM_NUMBER and nets[0].kind is LeaseKind.NETWORK_ID
    assert vms[2].purpose == "vm 2"
    assert vms[0].owner == Owner.current()
    vms[1].release()
    assert allocator.lease_vm_number().value == 2  # the gap is reused first
    assert allocator.lease_vm_number().value == 6


def test_ports_are_distinct_and_in_range(allocator: Allocator) -> None:
    ports = [allocator.lease_port("tcp" if i % 2 else "udp").value for i in range(60)]
    assert len(set(ports)) == 60
    assert all(40000 <= port <= 40999 for port in ports)
    listed = {lease.value for lease in allocator.leases() if lease.kind is LeaseKind.PORT}
    assert listed == set(ports)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-allocator", "allocator-per-thread"])
def test_threads_get_distinct_values(tmp_path: Path, shared: bool) -> None:
    threads_count, per_thread = 8, 20
    common = Allocator(tmp_path, port_range=(40000, 40999))
    results: list[list[Lease]] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_count)

    def work(index: int) -> None:
        try:
            allocator = common if shared else Allocator(tmp_path, port_range=(40000, 40999))
            barrier.wait()
            for _ in range(per_thread):
                results[index].append(allocator.lease_vm_number())
                results[index].append(allocator.lease_port("tcp"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    leases = [lease for result in results for lease in result]
    vms = [lease.value for lease in leases if lease.kind is LeaseKind.VM_NUMBER]
    ports = [lease.value for lease in leases if lease.kind is LeaseKind.PORT]
    assert sorted(vms) == list(range(1, threads_count * per_thread + 1))
    assert len(set(ports)) == threads_count * per_thread
    assert len(common.leases()) == 2 * threads_count * per_thread
    for lease in leases:
        lease.release()
    assert common.leases() == []


def test_processes_get_distinct_values(tmp_path: Path) -> None:
    processes, per_process = 4, 25
    children = [start_child(tmp_path, per_process, (40000, 40999)) for _ in range(processes)]
    try:
        leased = [child_leases(child) for child in children]
        by_kind: dict[str, list[int]] = {"vm": [], "port": [], "network": []}
        for kind, value in (item for items in leased for item in items):
            by_kind[kind].append(value)
        total = processes * per_process
        assert sorted(by_kind["vm"]) == list(range(1, total + 1))
        assert sorted(by_kind["network"]) == list(range(1, total + 1))
        assert len(set(by_kind["port"])) == total
        allocator = Allocator(tmp_path)
        current = allocator.leases()
        assert len(current) == 3 * total
        assert {lease.owner.pid for lease in current} == {child.pid for child in children}
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.write("release\n")
            child.stdin.flush()
        statuses = [child.wait(timeout=20) for child in children]
    assert statuses == [0] * processes
    assert allocator.leases() == []
    assert allocator.reclaim_dead() == []  # released explicitly, not reclaimed


# --- dead owners ---------------------------------------------------------------


def stat_fields(pid: int) -> list[bytes]:
    """Fields 3 and up of /proc/<pid>/stat (state, ppid, ...; starttime is [19])."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rindex(b")") + 2 :].split()


def proc_state(pid: int) -> str:
    return stat_fields(pid)[0].decode()


def parent_owner() -> Owner:
    """A live process other than this one: our parent."""
    return Owner(os.getppid(), int(stat_fields(os.getppid())[19]))


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_leases_of_a_killed_process_are_reclaimed(tmp_path: Path, reaped: bool) -> None:
    port = free_tcp_port()
    child = start_child(tmp_path, 1, (port, port))
    leased = child_leases(child)
    assert sorted(leased) == [("network", 1), ("port", port), ("vm", 1)]
    allocator = Allocator(tmp_path, port_range=(port, port), lock_timeout=10)
    assert len(allocator.leases()) == 3  # alive: not reclaimed
    with pytest.raises(AllocationError, match="leased by pytest-qemu: 1"):
        allocator.lease_port("tcp")

    child.send_signal(signal.SIGKILL)
    if reaped:
        child.wait(timeout=10)
    else:
        deadline = time.monotonic() + 10
        while proc_state(child.pid) != "Z":
            assert time.monotonic() < deadline, "killed child did not become a zombie"
            time.sleep(0.01)
    try:
        reclaimed = allocator.reclaim_dead()
        assert sorted((lease.kind.value, lease.value) for lease in reclaimed) == sorted(leased)
        assert {lease.owner.pid for lease in reclaimed} == {child.pid}
        assert allocator.leases() == []
        assert allocator.lease_port("udp").value == port
        assert allocator.lease_vm_number().value == 1
        assert allocator.lease_network_id().value == 1
    finally:
        child.wait(timeout=10)


def test_owner_identity() -> None:
    me = Owner.current()
    assert me.pid == os.getpid()
    assert me.is_alive()
    assert not Owner(me.pid, me.start_time + 1).is_alive()
    assert not Owner(me.pid, me.start_time - 1).is_alive()
    assert not Owner(0, 0).is_alive()
    assert not Owner(2**31 - 1, me.start_time).is_alive()  # above any pid_max
    assert parent_owner().is_alive()


def test_reused_pid_is_not_the_owner(tmp_path: Path) -> None:
    me = Owner.current()
    impostor = Owner(me.pid, me.start_time + 12345)  # same pid, other process
    parent = parent_owner()
    write_state(
        tmp_path,
        [
            record("vm", 1, impostor, "stale"),
            record("vm", 2, parent, "live"),
            record("port", 40000, impostor),
        ],
    )
    allocator = Allocator(tmp_path, port_range=(40000, 40000))
    assert [(lease.value, lease.owner) for lease in allocator.leases()] == [(2, parent)]
    assert allocator.lease_vm_number().value == 1
    assert allocator.lease_vm_number().value == 3  # 2 is still held by the live parent
    if port_is_free(40000, "tcp"):
        assert allocator.lease_port("tcp").value == 40000


def test_reclaim_dead_returns_dead_leases_once(tmp_path: Path) -> None:
    me = Owner.current()
    dead = Owner(me.pid, me.start_time + 1)
    write_state(tmp_path, [record("network", 7, dead, "old net"), record("vm", 3, me)])
    allocator = Allocator(tmp_path)
    reclaimed = allocator.reclaim_dead()
    assert reclaimed == [Lease(LeaseKind.NETWORK_ID, 7, dead, "old net")]
    assert allocator.reclaim_dead() == []
    assert [lease.value for lease in allocator.leases()] == [3]


def test_state_of_a_previous_boot_is_dropped(tmp_path: Path) -> None:
    if not Path("/proc/sys/kernel/random/boot_id").exists():
        pytest.skip("kernel without boot_id")
    write_state(tmp_path, [record("vm", 1, Owner.current())], boot_id="not-this-boot")
    assert Allocator(tmp_path).leases() == []


# --- ports held by other programs ----------------------------------------------


def test_port_held_by_a_listener_is_never_leased(tmp_path: Path) -> None:
    base = free_ports(2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", base))
        listener.listen()
        allocator = Allocator(tmp_path, port_range=(base, base + 1))
        # The search starts at a random port of the range, so half the time at base.
        for _ in range(30):
            with allocator.lease_port("tcp") as lease:
                assert lease.value == base + 1
        with pytest.raises(AllocationError, match=f"{base}-{base}") as info:
            Allocator(tmp_path, port_range=(base, base)).lease_port("tcp")
        assert "in use by other programs on this host: 1" in str(info.value)


# 127.0.0.2 is only seen by the probe on 0.0.0.0.
@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "127.0.0.2"])
def test_bound_udp_port_is_not_leased(tmp_path: Path, address: str) -> None:
    port = free_tcp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((address, port))
        with pytest.raises(AllocationError, match=f"no free udp port in port_range {port}-{port}"):
            Allocator(tmp_path, port_range=(port, port)).lease_port("udp")
    assert Allocator(tmp_path, port_range=(port, port)).lease_port("udp").value == port


def test_fully_leased_port_range(tmp_path: Path) -> None:
    port = free_tcp_port()
    allocator = Allocator(tmp_path, port_range=(port, port))
    first = allocator.lease_port("tcp")
    with pytest.raises(AllocationError, match="leased by pytest-qemu: 1"):
        allocator.lease_port("udp")  # tcp and udp share the value space
    first.release()
    assert allocator.lease_port("udp").value == port


def test_exhausted_network_ids(tmp_path: Path) -> None:
    me = Owner.current()
    write_state(tmp_path, [record("network", value, me) for value in range(1, 2**16)])
    allocator = Allocator(tmp_path)
    with pytest.raises(AllocationError, match="all network ids 1-65535 are leased"):
        allocator.lease_network_id()
    assert allocator.lease_vm_number().value == 1


# --- release -------------------------------------------------------------------


def test_release_is_idempotent(allocator: Allocator) -> None:
    lease = allocator.lease_vm_number()
    other = allocator.lease_vm_number()
    lease.release()
    lease.release()
    allocator.release(lease)
    assert allocator.leases() == [other]


def test_stale_lease_does_not_release_a_new_grant(allocator: Allocator) -> None:
    old = allocator.lease_vm_number()
    old.release()
    new = allocator.lease_vm_number()
    assert new.value == old.value and new.owner == old.owner
    old.release()
    assert allocator.leases() == [new]


def test_context_manager_releases(allocator: Allocator) -> None:
    with allocator.lease_port("tcp", "ctx") as lease:
        assert allocator.leases() == [lease]
    assert allocator.leases() == []
    with pytest.raises(RuntimeError), allocator.lease_network_id():
        raise RuntimeError("boom")
    assert allocator.leases() == []


def test_release_of_another_process_lease_needs_exact_match(tmp_path: Path) -> None:
    parent = parent_owner()
    write_state(tmp_path, [record("vm", 5, parent), record("port", 40005, parent)])
    allocator = Allocator(tmp_path)
    allocator.release(Lease(LeaseKind.VM_NUMBER, 5, Owner(parent.pid, parent.start_time + 1), ""))
    allocator.release(Lease(LeaseKind.NETWORK_ID, 5, parent, ""))
    allocator.release(Lease(LeaseKind.VM_NUMBER, 6, parent, ""))
    assert len(allocator.leases()) == 2
    allocator.release(Lease(LeaseKind.VM_NUMBER, 5, parent, "whatever purpose"))
    assert [(lease.kind, lease.value) for lease in allocator.leases()] == [(LeaseKind.PORT, 40005)]
    [listed] = allocator.leases()
    listed.release()  # leases from leases() are attached to the allocator
    assert allocator.leases() == []


def test_detached_lease_cannot_release_itself() -> None:
    lease = Lease(LeaseKind.VM_NUMBER, 1, Owner.current(), "")
    with pytest.raises(AllocationError, match=r"Allocator\.release"):
        lease.release()


def test_lease_equality_ignores_allocator(allocator: Allocator) -> None:
    lease = allocator.lease_vm_number("p")
    assert lease == Lease(LeaseKind.VM_NUMBER, lease.value, lease.owner, "p")
    assert "allocator" not in repr(lease) and "token" not in repr(lease)
    assert hash(lease) == hash(Lease(LeaseKind.VM_NUMBER, lease.value, lease.owner, "p"))


# --- state file and directory --------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b'{"version": 1, "leases": [{"kind": "bogus", "value": 1}]}',
        b'{"version": 1, "leases": [{"kind": "vm", "value": "1", "pid": 1, "start_time": 1}]}',
        b'{"version": 99, "leases": []}',
        b"[]",
        b"",
    ],
)
def test_corrupt_state_is_set_aside(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "leases.json").write_bytes(content)
    allocator = Allocator(tmp_path)
    with pytest.warns(RuntimeWarning, match="unusable") as warned:
        assert allocator.leases() == []
    assert warned[0].filename == __file__  # points at the caller, not the allocator
    [aside] = tmp_path.glob("leases.json.corrupt-*")
    assert aside.read_bytes() == content
    assert str(aside) in str(warned[0].message)
    lease = allocator.lease_vm_number()
    assert lease.value == 1
    saved = json.loads((tmp_path / "leases.json").read_text())
    assert [(item["kind"], item["value"]) for item in saved["leases"]] == [("vm", 1)]


def test_state_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir = tmp_path / "new" / "state"
    monkeypatch.setenv("PYTEST_QEMU_STATE_DIR", str(state_dir))
    assert default_state_dir() == state_dir
    assert state_dir.stat().st_mode & 0o777 == 0o700
    Allocator().lease_vm_number()
    assert (state_dir / "leases.json").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_writable_state_dir_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(AllocationError, match=f"{shared}.*writable by group or others"):
        Allocator(shared)
    monkeypatch.setenv("PYTEST_QEMU_STATE_DIR", str(shared))
    with pytest.raises(AllocationError, match=str(shared)):
        default_state_dir()
    assert list(shared.iterdir()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give files to another user")
@pytest.mark.parametrize("planted", ["directory", "symlink"])
def test_state_dir_of_another_user_is_rejected(tmp_path: Path, planted: str) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    path = tmp_path / "planted"
    if planted == "directory":
        path.mkdir(mode=0o700)
    else:
        path.symlink_to(target)
    os.lchown(path, 65534, 65534)
    with pytest.raises(AllocationError, match=f"{path} is owned by uid 65534"):
        Allocator(path)


def test_default_state_dir_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_qemu.allocation.statedir.prepare_state_dir", lambda path: path)
    monkeypatch.delenv("PYTEST_QEMU_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_state_dir() == tmp_path / "pytest-qemu"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert default_state_dir() == Path(f"/tmp/pytest-qemu-{os.getuid()}")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_state_dir() == Path(f"/tmp/pytest-qemu-{os.getuid()}")
    monkeypatch.setenv("PYTEST_QEMU_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_dir() == tmp_path / "explicit"


def test_state_dir_removed_while_in_use(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    allocator = Allocator(state_dir, lock_timeout=2)
    allocator.lease_vm_number()
    for child in state_dir.iterdir():
        child.unlink()
    state_dir.rmdir()
    assert allocator.lease_vm_number().value == 1
    assert state_dir.stat().st_mode & 0o777 == 0o700


# --- locking and arguments -----------------------------------------------------


def test_lock_timeout_names_the_lock_and_its_holder(tmp_path: Path) -> None:
    allocator = Allocator(tmp_path, lock_timeout=0.2)
    held = filelock.FileLock(str(tmp_path / "leases.lock"))
    with held:
        started = time.monotonic()
        with pytest.raises(AllocationError) as info:
            allocator.lease_vm_number()
        assert 0.15 < time.monotonic() - started < 5
    message = str(info.value)
    assert str(tmp_path / "leases.lock") in message
    assert f"pid {os.getpid()}" in message
    assert allocator.lease_vm_number().value == 1


@pytest.mark.parametrize("protocol", ["sctp", "TCP", "", None])
def test_bad_protocol(allocator: Allocator, protocol: object) -> None:
    with pytest.raises(ConfigurationError, match=repr(protocol)):
        allocator.lease_port(protocol)  # type: ignore[arg-type]
    assert allocator.leases() == []


@pytest.mark.parametrize(
    ("port_range", "bad"),
    [
        ((30000, 20000), "30000"),
        ((0, 100), "0"),
        ((20000, 70000), "70000"),
        ((20000,), r"\(20000,\)"),
        (("20000", 20010), "'20000'"),
        ((True, 10), "True"),
    ],
)
def test_bad_port_range(tmp_path: Path, port_range: object, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        Allocator(tmp_path, port_range=port_range)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1, float("nan"), "5"])
def test_bad_lock_timeout(tmp_path: Path, timeout: object) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        Allocator(tmp_path, lock_timeout=timeout)  # type: ignore[arg-type]


def test_bad_purpose(allocator: Allocator) -> None:
    with pytest.raises(ValueError, match="purpose 42"):
        allocator.lease_vm_number(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, 0.5, float("inf")])
def test_lock_timeout_extremes_work(tmp_path: Path, timeout: float) -> None:
    allocator = Allocator(tmp_path, lock_timeout=timeout)
    with allocator.lease_vm_number() as lease:
        assert lease.value == 1
    assert allocator.leases() == []


def test_default_allocator_is_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_qemu.allocation import default

    monkeypatch.setenv("PYTEST_QEMU_STATE_DIR", str(tmp_path / "state"))
    first = default.default_allocator()
    assert default.default_allocator() is first
    assert first.state_dir == tmp_path / "state"
    monkeypatch.setenv("PYTEST_QEMU_STATE_DIR", str(tmp_path / "other"))
    assert default.default_allocator().state_dir == tmp_path / "other"
    with first.lease_network_id():
        assert [lease.kind for lease in Allocator(tmp_path / "state").leases()] == [
            LeaseKind.NETWORK_ID
        ]
