"""Bounded load (issue 5): 1000 sequential and 50 concurrent secure sums against the same four
`mpc node` daemons, every result checked, each node's resident memory reported and bounded.

The daemons are subprocesses (NodeProcesses, stopped by PID) so that each node's RSS can be read
from /proc/PID/status. Growth is measured from the end of a warm-up (the first WARMUP sessions:
channels, TLS sessions, caches, SQLite pages) to the end of the run. `pytest -s` prints the table.
The whole file takes about 25 s on a 2-core machine; every wait has a deadline.
The owners raise their live-session limits (the default policy allows 16 per coordinator) so that
one coordinator may run 50 at once; at the end a Prepare beyond the raised limit is still refused.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from mpc.config import ClusterConfig, load_cluster
from mpc.coordinator.client import Coordinator
from mpc.localcluster import NodeProcesses, write_local_cluster
from mpc.store import Store
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import prepare_request

pytestmark = pytest.mark.slow

NAMES = ("alice", "bob", "carlos", "david")
SEQUENTIAL = 1000          # sessions one after the other (the warm-up included)
WARMUP = 100
CONCURRENT = 50            # sessions at once
MAX_GROWTH = 64 << 20      # bytes of RSS a node may gain after the warm-up
RUN_DEADLINE = 180.0       # the whole load must finish within this (it takes ~25 s)
# Five scalar inputs, different at every node, so that concurrent sessions cannot pass by cross-talk.
# The default policy allows 16 live sessions per coordinator (max_sessions_per_coordinator): this
# load test's owners raise their limits so that one coordinator may run CONCURRENT sessions at once.
LIMIT = 64
LIMITS = f"max_sessions = {LIMIT}\nmax_sessions_per_coordinator = {LIMIT}"
INPUTS = {f"load{k}": {n: (k + 1) * 1000 + 17 * i - 3 * k for i, n in enumerate(NAMES)} for k in range(5)}


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ClusterConfig, NodeProcesses]]:
    path = write_local_cluster(tmp_path, NAMES, session_timeout_s=30.0, every_policy=LIMITS)
    cluster = load_cluster(path)
    for name in NAMES:
        data_dir = cluster.node(name).data_dir
        assert data_dir is not None
        with Store.open_dir(data_dir) as store:
            for input_name, values in INPUTS.items():
                store.put_input(input_name, np.array([values[name]], dtype=np.int64), 0, True)
    procs = NodeProcesses(path, tmp_path / "logs")
    try:
        procs.start_all(NAMES, timeout=30.0)
        yield cluster, procs
    finally:
        procs.stop_all()


def test_1000_sequential_and_50_concurrent_sums_correct_with_bounded_memory(
        cluster: tuple[ClusterConfig, NodeProcesses]) -> None:
    config, procs = cluster
    pids = {n: procs.procs[n].pid for n in NAMES}
    expected = {name: sum(v.values()) for name, v in INPUTS.items()}
    names = list(INPUTS)
    rss: dict[str, dict[str, int]] = {}
    timing: dict[str, float] = {}

    def snapshot(label: str) -> None:
        for n, proc in procs.procs.items():
            assert proc.poll() is None, f"node {n} exited with {proc.returncode} during the load"
        rss[label] = {n: rss_bytes(pid) for n, pid in pids.items()}

    async def go() -> None:
        async with Coordinator(config) as c:
            snapshot("start")
            start = time.monotonic()
            wrong: list[tuple[int, str, object]] = []
            ids: set[str] = set()
            for i in range(SEQUENTIAL):
                name = names[i % len(names)]
                result = await c.sum(name, timeout_s=10)
                ids.add(result.session_id)
                if result.value != expected[name] or result.input_name != name:
                    wrong.append((i, name, result.value))
                if i + 1 == WARMUP:
                    snapshot("warm")
                    timing["warm"] = time.monotonic() - start
            timing["sequential"] = time.monotonic() - start
            assert not wrong, f"{len(wrong)} wrong sums, first: {wrong[:3]}"
            assert len(ids) == SEQUENTIAL
            snapshot("sequential")

            start = time.monotonic()
            jobs = [names[i % len(names)] for i in range(CONCURRENT)]
            results = await asyncio.wait_for(asyncio.gather(*(c.sum(n, timeout_s=30) for n in jobs)), 60)
            timing["concurrent"] = time.monotonic() - start
            for name, result in zip(jobs, results):
                assert result.input_name == name and result.value == expected[name], (name, result)
            assert len({r.session_id for r in results}) == CONCURRENT
            snapshot("concurrent")
            for st in await c.status():
                assert st.healthy and st.active_sessions == 0, st

            # The limit still exists: alice refuses a live session beyond it (Prepare only, nothing shared).
            alice = mpc_pb2_grpc.ControlStub(c.channels.channel("alice"))

            def prepare(sid: str) -> mpc_pb2.PrepareRequest:
                return prepare_request(sid, "sum", names[0], NAMES, timeout_ms=30_000)
            held = [os.urandom(16).hex() for _ in range(LIMIT)]
            await asyncio.gather(*(alice.Prepare(prepare(sid), timeout=10) for sid in held))
            probe_ids.update(held)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                extra = os.urandom(16).hex()
                probe_ids.add(extra)
                await alice.Prepare(prepare(extra), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "its limit (max_sessions" in (refused.value.details() or ""), refused.value.details()
            await asyncio.gather(*(alice.Abort(mpc_pb2.AbortRequest(session_id=sid, reason="limit probe"), timeout=10)
                                   for sid in held))
            for st in await c.status():
                assert st.healthy and st.active_sessions == 0, st

    probe_ids: set[str] = set()
    asyncio.run(asyncio.wait_for(go(), RUN_DEADLINE))

    # Every session is on record as done at every node, and nothing else is left over.
    for name in NAMES:
        data_dir = config.node(name).data_dir
        assert data_dir is not None
        with Store.open_dir(data_dir) as store:
            records = store.list_sessions(SEQUENTIAL + CONCURRENT + 2 * LIMIT)
        probes = [r for r in records if r.session_id in probe_ids]
        records = [r for r in records if r.session_id not in probe_ids]
        assert len(records) == SEQUENTIAL + CONCURRENT
        assert {r.status for r in records} == {"done"}
        # Only alice saw the limit probe's sessions: LIMIT of them, aborted (the one beyond was never recorded).
        assert len(probes) == (LIMIT if name == "alice" else 0)
        assert {r.status for r in probes} <= {"aborted"}

    mib = 1 << 20
    print(f"\n[load] {SEQUENTIAL} sequential sums in {timing['sequential']:.1f} s "
          f"({1000 * timing['sequential'] / SEQUENTIAL:.1f} ms each; first {WARMUP} in {timing['warm']:.1f} s), "
          f"{CONCURRENT} concurrent in {timing['concurrent']:.2f} s")
    print(f"[load] node RSS MiB: {'node':8} {'start':>8} {'warm':>8} {'1000 seq':>9} {'+50 conc':>9} "
          f"{'growth after warm-up':>21}")
    growth = {}
    for n in NAMES:
        growth[n] = rss["concurrent"][n] - rss["warm"][n]
        print(f"[load]               {n:8} {rss['start'][n] / mib:8.1f} {rss['warm'][n] / mib:8.1f} "
              f"{rss['sequential'][n] / mib:9.1f} {rss['concurrent'][n] / mib:9.1f} {growth[n] / mib:+21.1f}")
    too_much = {n: f"{g / mib:.1f} MiB" for n, g in growth.items() if g >= MAX_GROWTH}
    assert not too_much, f"resident memory grew by more than {MAX_GROWTH // mib} MiB after the warm-up: {too_much}"
