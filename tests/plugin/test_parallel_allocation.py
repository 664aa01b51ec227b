"""Leases under pytest-xdist and concurrent pytest runs: never handed out twice, never leaked.

The generated suites lease what a VM with networks leases, the way a VM start
does (building its QEMU command line), but start no QEMU: these tests boot no VM.
Each generated test records the ports, MACs, network ids and ``-netdev``
strings of its command line, and the time span during which it surely held
them; the outer test then checks that no two spans that overlap share a value.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_qemu.allocation import Allocator
from pytest_qemu.devices.network import mac_address
from tests.helpers import recorded_leases

RECORDS_ENV = "PYTEST_QEMU_TEST_RECORDS"
COUNT_ENV = "PYTEST_QEMU_TEST_COUNT"
RUN_ENV = "PYTEST_QEMU_TEST_RUN"
PEERS_ENV = "PYTEST_QEMU_TEST_PEERS"

# Each test leases two Networks (a multicast port and a network id each), one
# VM number per interface (three or four), and a UserNetwork (a VM number and
# two forwarded TCP ports), all through build_command_line as a VM start does.
LEASING_SUITE = '''
import json
import os
import re
import time
from pathlib import Path

import pytest

from pytest_qemu import Network, UserNetwork
from pytest_qemu.allocation.default import default_allocator
from pytest_qemu.vm.argv import MachineSpec, RuntimePaths, build_command_line

RECORDS = Path(os.environ["PYTEST_QEMU_TEST_RECORDS"])
COUNT = int(os.environ["PYTEST_QEMU_TEST_COUNT"])
RUN = os.environ["PYTEST_QEMU_TEST_RUN"]
PEERS = os.environ.get("PYTEST_QEMU_TEST_PEERS", "").split()
MCAST = re.compile(r"mcast=230\\.0\\.0\\.1:(\\d+)(?:,|$)")
HOSTFWD = re.compile(r"hostfwd=tcp:127\\.0\\.0\\.1:(\\d+)-:(\\d+)")
MAC = re.compile(r"(?:^|,)mac=([0-9a-f]{2}(?::[0-9a-f]{2}){5})(?:,|$)")


def option_values(argv, option):
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def meet_peers():
    """Wait until every peer run's first test holds its leases too, so the runs overlap."""
    (RECORDS / f"{RUN}.ready").touch()
    deadline = time.monotonic() + 60
    while not all((RECORDS / f"{peer}.ready").exists() for peer in PEERS):
        assert time.monotonic() < deadline, f"peer runs {PEERS} did not start within 60 s"
        time.sleep(0.01)


@pytest.mark.parametrize("index", range(COUNT))
def test_leases(index, qemu_network, tmp_path):
    second = Network()
    user = UserNetwork(forwards=[80, 443])
    try:
        interfaces = [qemu_network.new_vm() for _ in range(2 + index % 2)]
        interfaces.append(second.new_vm())
        assert user.host_port(80) != user.host_port(443)
        spec = MachineSpec(kernel=Path("/nonexistent/vmlinuz"), devices=[*interfaces, user])
        argv = build_command_line(spec, RuntimePaths.in_directory(tmp_path, tmp_path)).argv
        # Every lease is taken by now and none is given back before held_until.
        held_since = time.monotonic()
        if index == 0 and PEERS:
            meet_peers()

        netdevs = option_values(argv, "-netdev")
        nics = [d for d in option_values(argv, "-device") if d.startswith("virtio-net-pci,")]
        mcast_ports = {int(m.group(1)) for d in netdevs for m in MCAST.finditer(d)}
        forward_ports = {
            int(host): int(guest) for d in netdevs for host, guest in HOSTFWD.findall(d)
        }
        macs = [m.group(1) for d in nics for m in MAC.finditer(d)]

        # The command line says what the devices say.
        assert mcast_ports == {qemu_network.port, second.port}, netdevs
        assert forward_ports == {user.host_port(80): 80, user.host_port(443): 443}, netdevs
        assert sorted(macs) == sorted([i.mac for i in interfaces] + [user.mac]), nics
        assert len(set(macs)) == len(macs), f"one VM got a MAC twice: {macs}"
        assert len(mcast_ports | set(forward_ports)) == 4, f"a port leased twice: {argv}"
        assert qemu_network.network_id != second.network_id

        # The state file holds exactly this test's leases for this worker: none leaked
        # from its earlier tests, none missing.
        mine = sorted(
            (lease.kind.value, lease.value)
            for lease in default_allocator().leases()
            if lease.owner.pid == os.getpid()
        )
        vm_numbers = [int(mac.replace(":", "")[2:], 16) for mac in macs]
        expected = sorted(
            [("port", port) for port in mcast_ports | set(forward_ports)]
            + [("vm", number) for number in vm_numbers]
            + [("network", net.network_id) for net in (qemu_network, second)]
        )
        assert mine == expected

        time.sleep((0.0, 0.05, 0.1, 0.2)[index % 4])
        held_until = time.monotonic()
        record = {
            "name": f"{RUN}-{index}",
            "run": RUN,
            "pid": os.getpid(),
            "held_since": held_since,
            "held_until": held_until,
            "values": {
                "port": sorted(mcast_ports | set(forward_ports)),
                "mac": sorted(macs),
                "network": sorted({qemu_network.network_id, second.network_id}),
            },
            "netdevs": netdevs,
        }
        (RECORDS / f"{RUN}-{index}.json").write_text(json.dumps(record))
    finally:
        second.close()
        user.release()
'''

# One test leases and then hangs until its worker is killed; the other leases nothing.
HANGING_SUITE = """
import json
import os
import time
from pathlib import Path

from pytest_qemu import Network, UserNetwork

MARKER = Path(os.environ["PYTEST_QEMU_TEST_RECORDS"]) / "holding.json"


def test_hold():
    network = Network()
    interface = network.new_vm()
    user = UserNetwork(forwards=[80])
    held = {
        "pid": os.getpid(),
        "port": sorted([network.port, user.host_port(80)]),
        "mac": sorted([interface.mac, user.mac]),
        "network": [network.network_id],
    }
    MARKER.with_suffix(".tmp").write_text(json.dumps(held))
    MARKER.with_suffix(".tmp").rename(MARKER)
    time.sleep(120)


def test_quick():
    pass
"""

# Run after the killed one: leases again through the plugin, then gives everything back.
RELEASING_SUITE = """
import json
import os
from pathlib import Path


def test_lease_again(qemu_network):
    interface = qemu_network.new_vm()
    got = {"mac": interface.mac, "network": qemu_network.network_id, "port": qemu_network.port}
    (Path(os.environ["PYTEST_QEMU_TEST_RECORDS"]) / "again.json").write_text(json.dumps(got))
"""


@dataclass(frozen=True)
class Record:
    """What one generated test held, and a span of time during which it surely held it."""

    name: str
    run: str
    pid: int
    held_since: float
    held_until: float
    values: dict[str, frozenset[int | str]]
    netdevs: tuple[str, ...]

    def overlaps(self, other: Record) -> bool:
        return self.held_since < other.held_until and other.held_since < self.held_until


def load_records(directory: Path) -> list[Record]:
    records = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        records.append(
            Record(
                name=data["name"],
                run=data["run"],
                pid=data["pid"],
                held_since=data["held_since"],
                held_until=data["held_until"],
                values={kind: frozenset(values) for kind, values in data["values"].items()},
                netdevs=tuple(data["netdevs"]),
            )
        )
    return records


@dataclass
class OverlapCheck:
    """The pairs of records whose spans overlap, and those of them that shared a value."""

    overlapping: list[tuple[Record, Record]]
    conflicts: list[str]


def check_overlaps(records: list[Record]) -> OverlapCheck:
    overlapping: list[tuple[Record, Record]] = []
    conflicts: list[str] = []
    for position, first in enumerate(records):
        for second in records[position + 1 :]:
            if not first.overlaps(second):
                continue
            overlapping.append((first, second))
            for kind, values in first.values.items():
                shared = values & second.values[kind]
                if shared:
                    conflicts.append(
                        f"{kind} {sorted(shared, key=str)} held at once by {first.name} "
                        f"(pid {first.pid}) and {second.name} (pid {second.pid})"
                    )
    return OverlapCheck(overlapping, conflicts)


def assert_parallel_safe(records: list[Record], expected: int) -> OverlapCheck:
    """The checks every leasing run must pass; returns the overlaps for run-specific checks."""
    assert len(records) == expected, (
        f"expected {expected} test records, got {len(records)}: {[r.name for r in records]}"
    )
    for record in records:
        assert record.held_since <= record.held_until, record
        assert len(record.values["port"]) == 4, f"{record.name} holds ports {record.values}"
        assert len(record.values["mac"]) in (4, 5), f"{record.name} holds MACs {record.values}"
        assert len(record.values["network"]) == 2, f"{record.name} holds ids {record.values}"
        for netdev in record.netdevs:
            if "mcast=" in netdev:
                assert "localaddr=127.0.0.1" in netdev.split(","), (
                    f"{record.name}: multicast netdev {netdev!r} is not bound to loopback"
                )
        assert any("mcast=" in netdev for netdev in record.netdevs), record.netdevs
    check = check_overlaps(records)
    assert check.conflicts == [], "values handed out twice:\n" + "\n".join(check.conflicts)
    return check


def pytest_command(*args: str) -> list[str]:
    """A pytest run in a subprocess, as runpytest_subprocess would start it."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--qemu-accel=tcg", *args]


@pytest.fixture
def records_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = pytester.path / "records"
    directory.mkdir()
    monkeypatch.setenv(RECORDS_ENV, str(directory))
    return directory


def test_xdist_workers_never_share_a_lease(
    pytester: pytest.Pytester,
    isolated_state: Path,
    records_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    count = 40
    monkeypatch.setenv(COUNT_ENV, str(count))
    monkeypatch.setenv(RUN_ENV, "single")
    pytester.makepyfile(test_leasing=LEASING_SUITE)

    result = pytester.runpytest_subprocess(
        "-n", "4", "-p", "no:cacheprovider", "--qemu-accel=tcg", timeout=120
    )

    result.assert_outcomes(passed=count)
    records = load_records(records_dir)
    check = assert_parallel_safe(records, count)
    workers = {record.pid for record in records}
    assert len(workers) >= 2, f"all tests ran in one process {workers}: nothing ran in parallel"
    across_workers = [(a, b) for a, b in check.overlapping if a.pid != b.pid]
    assert across_workers, "no two workers held leases at the same time: nothing was tested"
    assert recorded_leases(isolated_state) == [], "leases left behind after the run"


def test_concurrent_runs_never_share_a_lease(
    pytester: pytest.Pytester,
    isolated_state: Path,
    records_dir: Path,
) -> None:
    count = 24
    pytester.makepyfile(test_leasing=LEASING_SUITE)
    runs = {"first": "second", "second": "first"}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for run, peer in runs.items():
            env = {**os.environ, COUNT_ENV: str(count), RUN_ENV: run, PEERS_ENV: peer}
            processes[run] = subprocess.Popen(
                pytest_command("-n", "2", f"--basetemp={pytester.path / ('tmp-' + run)}"),
                cwd=pytester.path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        outputs = {run: process.communicate(timeout=120)[0] for run, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    for run, process in processes.items():
        output = outputs[run].decode(errors="replace")
        assert process.returncode == 0, f"run {run!r} failed:\n{output}"
        assert f"{count} passed" in output, f"run {run!r}:\n{output}"
    records = load_records(records_dir)
    check = assert_parallel_safe(records, 2 * count)
    assert {record.run for record in records} == set(runs)
    across_runs = [(a, b) for a, b in check.overlapping if a.run != b.run]
    assert across_runs, "the two runs never held leases at the same time: nothing was tested"
    assert recorded_leases(isolated_state) == [], "leases left behind after the runs"


@pytest.fixture
def process_group() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started in their own session, killed with all their children at test end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_leases_of_a_killed_worker_are_reclaimed(
    pytester: pytest.Pytester,
    isolated_state: Path,
    records_dir: Path,
    process_group: list[subprocess.Popen[bytes]],
) -> None:
    pytester.makepyfile(test_hanging=HANGING_SUITE)
    marker = records_dir / "holding.json"
    process = subprocess.Popen(
        pytest_command("-n", "2", "test_hanging.py"),
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process_group.append(process)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, "pytest ended before test_hold leased:\n" + (
            process.communicate()[0].decode(errors="replace")
        )
        assert time.monotonic() < deadline, "test_hold did not lease within 60 s"
        time.sleep(0.05)
    held = json.loads(marker.read_text())
    worker = held["pid"]
    assert worker != process.pid, "test_hold ran in the controller, not in an xdist worker"

    # The state file names the worker as the holder of exactly what test_hold leased.
    raw = recorded_leases(isolated_state)
    by_worker = [lease for lease in raw if lease["pid"] == worker]
    assert by_worker == raw, f"leases of processes other than the worker {worker}: {raw}"
    dead = Held.from_records(by_worker)
    assert dead == Held(set(held["port"]), set(held["mac"]), set(held["network"])), (
        f"state file {raw} does not match what test_hold leased: {held}"
    )

    os.kill(worker, signal.SIGKILL)
    output = process.communicate(timeout=60)[0].decode(errors="replace")
    assert process.returncode == 1, f"pytest exited with {process.returncode}:\n{output}"
    assert "crashed while running" in output and "test_hold" in output, output
    assert "1 passed" in output, output  # test_quick

    # Nothing reclaimed the leases yet (nothing leased after the kill), or something did:
    # either way the file holds nothing but the dead worker's leases.
    left = recorded_leases(isolated_state)
    assert all(lease["pid"] == worker for lease in left), f"unexpected leases: {left}"
    assert Held.from_records(left).within(dead), f"{left} were not all held by {worker}: {dead}"

    # A following run reclaims them, gets the smallest network id and VM number (which
    # the dead worker held) again, and leaves nothing behind.
    pytester.makepyfile(test_again=RELEASING_SUITE)
    again = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--qemu-accel=tcg", "test_again.py", timeout=60
    )
    again.assert_outcomes(passed=1)
    assert recorded_leases(isolated_state) == [], "the following run did not reclaim or release"
    got = json.loads((records_dir / "again.json").read_text())
    assert got["network"] == min(dead.network_ids), f"network id {got} not reused from {dead}"
    assert got["mac"] == mac_address(min(dead.vm_numbers)), f"MAC {got} not reused from {dead}"

    # Every dead value can be leased again.
    allocator = Allocator(isolated_state)
    assert allocator.leases() == []
    for port in sorted(dead.ports):
        lease = Allocator(isolated_state, port_range=(port, port)).lease_port("tcp")
        assert lease.value == port, f"port {port} cannot be leased again"
        lease.release()
    # VM numbers and network ids are handed out smallest first: all up to the highest come back.
    vm_leases = [allocator.lease_vm_number() for _ in range(max(dead.vm_numbers))]
    network_leases = [allocator.lease_network_id() for _ in range(max(dead.network_ids))]
    assert {lease.value for lease in vm_leases} >= dead.vm_numbers
    assert {lease.value for lease in network_leases} >= dead.network_ids
    for lease in vm_leases + network_leases:
        lease.release()
    assert allocator.leases() == []


@dataclass
class Held:
    """Leased values by kind: ports, MACs (the marker's view of VM numbers), network ids."""

    ports: set[int]
    macs: set[str]
    network_ids: set[int]

    @classmethod
    def from_records(cls, leases: list[dict[str, object]]) -> Held:
        """The values of raw lease records, as read by :func:`recorded_leases`."""
        held = cls(set(), set(), set())
        for lease in leases:
            value = lease["value"]
            assert isinstance(value, int), lease
            if lease["kind"] == "port":
                held.ports.add(value)
            elif lease["kind"] == "vm":
                held.macs.add(mac_address(value))
            else:
                assert lease["kind"] == "network", lease
                held.network_ids.add(value)
        return held

    @property
    def vm_numbers(self) -> set[int]:
        return {int(mac.replace(":", ""), 16) & (2**40 - 1) for mac in self.macs}

    def within(self, other: Held) -> bool:
        return (
            self.ports <= other.ports
            and self.macs <= other.macs
            and self.network_ids <= other.network_ids
        )


def test_a_killed_workers_run_directory_is_removed_by_the_same_run(
    pytester: pytest.Pytester, isolated_state: Path, qemu_pids: Callable[[], set[int]]
) -> None:
    pytester.makepyfile(
        """
        import os
        import signal
        from pathlib import Path

        def test_killed(qemu_vm):
            qemu_vm.check("true")
            Path("worker.pid").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

        def test_quick():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--qemu-accel=tcg", "-p", "no:randomly")
    output = result.stdout.str()
    assert "crashed" in output, output
    worker = int((pytester.path / "worker.pid").read_text())
    # Not only at the next run: this run's controller removed it once the worker was gone.
    left = list(Path(tempfile.gettempdir()).glob(f"pytest-qemu-vm-{worker}-*"))
    assert left == [], f"run directories of the killed worker {worker} remain: {left}"
    assert qemu_pids() == set()
