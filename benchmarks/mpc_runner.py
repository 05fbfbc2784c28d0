"""Run the mpc side of the benchmark: every node a separate `mpc node` process on 127.0.0.1,
mutual TLS on, the coordinator in this process (as `mpc sum` would be).

compute_s: median wall time of `Coordinator.sum` over `repeats` sessions once the nodes are up
and the channels are open (the analogue of MPyC's time after `mpc.start()`); first_s: the
first session, which also pays the TLS handshakes; end_to_end_s: spawning the node processes,
waiting for health, one sum, stopping them (the analogue of MPyC's spawn-to-exit).

Comparisons, votes and auctions need Beaver bit triples from OT; the first such session
between two nodes runs 128 Chou-Orlandi base OTs in each direction of every pair, which the
nodes keep for their lifetime, so later sessions reuse them. run_mpc_compare, run_mpc_vote and
run_mpc_auction therefore report that first session separately (first_s, setup_s) from the
median of the later ones (compute_s); run_mpc_base_ot times the base OTs of one pair in-process.

Node names: node_names(n) (the four NAMES first, as every 3- and 4-node figure uses them).
Node CPU: _cpu_by_node / _cpu_s read utime + stime from /proc/<pid>/stat (Linux), in clock
ticks (usually 10 ms); _timed_sessions reports both the total and each node's share per session.
"""

from __future__ import annotations

import asyncio
import compileall
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import mpc
from mpc import aio
from mpc.config import NODE_NAME, ClusterConfig, load_cluster
from mpc.coordinator.client import Coordinator
from mpc.localcluster import NodeProcesses, write_local_cluster
from mpc.ot.base import BASE_OTS, ChouOrlandiReceiver, ChouOrlandiSender
from mpc.ot.triples import OtReady, PairwiseOtSetup
from mpc.prg import SystemRng
from mpc.protocols.catalogue import SumParams, entry
from mpc.protocols.compare import triple_words
from mpc.protocols.contribution import COMPARE_BITS, COMPARE_BOUND, vote_bits
from mpc.store import Store

from benchmarks.ot_micro import run_router

NAMES = ("alice", "bob", "carlos", "david")
# Names of nodes 5 to 16 (as benchmarks/ot_micro.py and the tests' harness begin them); node17 on after them.
MORE_NAMES = ("erin", "frank", "grace", "heidi", "ivan", "judy", "ken", "laura", "mallory", "niaj", "olivia",
              "peggy")
RAISES = (3800, 2514, 2982, 3390)


def node_names(parties: int) -> tuple[str, ...]:
    """The names of a benchmark cluster of `parties` nodes: NAMES (alice, bob, carlos, david)
    first, then MORE_NAMES, then node17, node18, ...; each valid as mpc.config.NODE_NAME.

    Returns: `parties` distinct names.
    """
    if parties < 1:
        raise ValueError("need at least one node")
    known = NAMES + MORE_NAMES
    names = known[:parties] + tuple(f"node{i + 1}" for i in range(len(known), parties))
    if not all(NODE_NAME.match(name) for name in names):
        raise ValueError("benchmark node names must match mpc.config.NODE_NAME")
    return names


async def raises_sum(coordinator: Coordinator) -> bool:
    """One session of the 4-party scalar sum over input "x" (the raises, as `_running` stores them
    from `_inputs(4, 1, True)`). Returns: whether it opened their sum."""
    opened = await coordinator.open(entry("sum"), SumParams(), "x")
    return int(opened.words.view(np.int64)[0]) == sum(RAISES)


def _inputs(parties: int, length: int, raises: bool) -> list[np.ndarray]:
    if raises:
        return [np.array([r], dtype=np.int64) for r in RAISES]
    # The same arithmetic inputs as the MPyC programs (values < 2^32), so both check a sum.
    j = np.arange(length, dtype=np.int64)
    return [((i + 1) * 1_000_003 + j * 7919) % (1 << 32) for i in range(parties)]


def run_mpc_sum(length: int, parties: int = 3, *, raises: bool = False, repeats: int = 5,
                keyed: bool = True, one_round: bool = True) -> dict[str, object]:
    """Benchmark one secure sum configuration. The first session is unkeyed (it leaves the pair
    keys); later ones are keyed (no message between the nodes) unless keyed=False, and run in one
    round (one message per node, mpc/coordinator/client.py) unless one_round=False.

    Returns: {"compute_s", "first_s", "end_to_end_s", "L", "parties", "ok", "keyed", "one_round",
    "compute_cpu_s", "coordinator_cpu_s"}: the nodes' and the coordinator's CPU per session (median).
    """
    if raises:
        parties, length = 4, 1
    names = node_names(parties)
    values = _inputs(parties, length, raises)
    expected = np.sum(values, axis=0)
    own: list[float] = []
    later: list[float] = []

    async def add(coordinator: Coordinator) -> bool:
        opened = await coordinator.open(entry("sum"), SumParams(), "x")
        return bool(np.array_equal(opened.words.view(np.int64), expected))

    with _running(names, {"x": values}, (0, 1 << 32)) as run:   # the inputs are below 2^32
        times, cpu, ok, _ = aio.run(_timed_sessions(run.cluster, run.nodes, repeats, add, keyed=keyed,
                                                        one_round=one_round, coordinator_cpu=own, after_first=later))
    end_to_end = run.stopped - run.started - later[0]
    return {"compute_s": statistics.median(times[1:]), "first_s": times[0], "end_to_end_s": end_to_end,
            "L": length, "parties": parties, "ok": ok, "keyed": keyed, "one_round": one_round, **_cpu_fields(cpu),
            "coordinator_cpu_s": statistics.median(own[1:])}


# --------------------------------------------------------------------------- comparisons and votes

# Session deadline for the benchmark clusters: the first comparison session also runs the base
# OTs, which on a loaded machine can take several seconds.
_SESSION_TIMEOUT_S = 300.0


def compare_inputs(parties: int, count: int) -> list[np.ndarray]:
    """Deterministic inputs of the comparison benchmark: `count` integers per node, each within
    +-(2^30 // parties) so that a total over the nodes stays in the 32-bit comparison's range.
    Every 7th element gets a total of exactly 0 (a tie with the threshold 0) where that fits.

    Returns: one int64 vector per node.
    """
    limit = COMPARE_BOUND // parties
    j = np.arange(count, dtype=np.int64)
    values = [((i + 1) * 1_000_003 + j * 2_654_435_761 * (2 * i + 1)) % (2 * limit + 1) - limit
              for i in range(parties)]
    others = np.sum(values[:-1], axis=0)
    tie = (j % 7 == 0) & (np.abs(others) <= limit)
    values[-1] = np.where(tie, -others, values[-1])
    return values


def vote_ballots(ballots: int, parties: int) -> list[np.ndarray]:
    """Deterministic 0/1 ballots, split into `parties` contiguous chunks (sizes differ by <= 1).

    The same formula as benchmarks/mpyc_programs/vote.py, so both sides count the same ballots.
    Returns: one int64 vector per node.
    """
    j = np.arange(ballots, dtype=np.int64)
    every = ((j * 7919 + 13) % 100 < 52).astype(np.int64)  # about 52 % yes
    return [np.ascontiguousarray(chunk) for chunk in np.array_split(every, parties)]


def _write_cluster(work: Path, names: Sequence[str], inputs: Mapping[str, Sequence[np.ndarray]],
                   bounds: tuple[int, int] | None,
                   input_bounds: Mapping[str, tuple[int, int] | None] | None = None, pool: bool = True) -> Path:
    """A local cluster file with `inputs[input_name][i]` stored at node names[i], declared with
    `input_bounds[input_name]` where given, else `bounds` ("ballots" as ballots, "bids" as bids).
    The default policy applies: every benchmark repeats one query of each input. Each node serves
    its metrics (for the triple pools' levels); pool=False: the nodes keep no triple pools."""
    cluster_file = write_local_cluster(work, names, session_timeout_s=_SESSION_TIMEOUT_S, metrics=True,
                                       extra_node_keys=None if pool else {"triple_pool": "0"})
    for i, store in node_stores(cluster_file, names):
        with store:
            for input_name, per_node in inputs.items():
                kind = {"ballots": "ballots", "bids": "bids"}.get(input_name, "number")
                declared = (input_bounds or {}).get(input_name, bounds)
                store.put_input(input_name, per_node[i], 0, False, bounds=declared, kind=kind)
    return cluster_file


def node_stores(cluster_file: Path, names: Sequence[str]) -> Iterator[tuple[int, Store]]:
    """Each node's store in a cluster file write_local_cluster wrote, in `names` order (close each)."""
    cluster = load_cluster(cluster_file)
    for i, name in enumerate(names):
        data_dir = cluster.node(name).data_dir
        if data_dir is None:
            raise RuntimeError("write_local_cluster sets data_dir")
        yield i, Store.open_dir(data_dir)

@dataclass
class _Running:
    """A benchmark cluster: its file and config, the node processes, and when they were spawned
    and stopped (for end-to-end times)."""

    cluster_file: Path
    cluster: ClusterConfig
    nodes: NodeProcesses
    started: float
    stopped: float = 0.0


@contextmanager
def _running(names: Sequence[str], inputs: Mapping[str, Sequence[np.ndarray]],
             bounds: tuple[int, int] | None = None, *,
             input_bounds: Mapping[str, tuple[int, int] | None] | None = None, pool: bool = True,
             ) -> Iterator[_Running]:
    """Node processes holding `inputs` (declared as _write_cluster says), in a temporary
    directory; stopped (by PID) on exit."""
    with running_nodes(names, lambda work: _write_cluster(work, names, inputs, bounds, input_bounds, pool)) as run:
        yield run


@functools.cache
def compile_mpc() -> None:
    """Write mpc's bytecode next to its sources (mpc/**/__pycache__; what is up to date is skipped).

    An installed mpc has its bytecode (pip writes it at install time), as does any module Python
    imports where PYTHONDONTWRITEBYTECODE is unset. This checkout's editable install has none, and
    on a machine that sets PYTHONDONTWRITEBYTECODE (as this project's CI machine does) every node
    and `mpc` command the benchmark starts would compile ~100 modules again: about 0.2 s of CPU
    per node, 0.6-0.7 s of the 4-node scalar sum's end to end (1.88-1.96 s against 1.21-1.37 s to
    start the nodes, three starts each), which MPyC's processes, loading its installed bytecode,
    never pay.
    """
    compileall.compile_dir(str(Path(mpc.__file__).resolve().parent), quiet=1)


@contextmanager
def running_nodes(names: Sequence[str], write: Callable[[Path], Path]) -> Iterator[_Running]:
    """Node processes for the cluster file `write` makes in a temporary directory (returning its
    path), mpc's bytecode written first (`compile_mpc`); stopped (by PID) on exit."""
    compile_mpc()
    with tempfile.TemporaryDirectory(prefix="mpc-bench-") as tmp:
        work = Path(tmp)
        cluster_file = write(work)
        nodes = NodeProcesses(cluster_file, work / "logs")
        run = _Running(cluster_file, load_cluster(cluster_file), nodes, time.perf_counter())
        try:
            nodes.start_all(names)
            yield run
        finally:
            nodes.stop_all()
            run.stopped = time.perf_counter()



def _clock_tick() -> int:
    """Clock ticks per second of /proc/<pid>/stat's times (usually 100)."""
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_ticks(nodes: NodeProcesses) -> dict[str, int] | None:
    """Clock ticks of CPU (user + system) each node process has used so far, by node name
    (Linux /proc; else None)."""
    ticks = {}
    for name, proc in nodes.procs.items():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        ticks[name] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks


def _cpu_by_node(nodes: NodeProcesses) -> dict[str, float] | None:
    """CPU seconds (user + system) each node process has used so far, by node name (Linux /proc; else None)."""
    ticks = _cpu_ticks(nodes)
    return None if ticks is None else {name: t / _clock_tick() for name, t in ticks.items()}


def _cpu_s(nodes: NodeProcesses) -> float | None:
    """CPU seconds (user + system) the node processes have used so far (Linux /proc; else None)."""
    ticks = _cpu_ticks(nodes)
    return None if ticks is None else sum(ticks.values()) / _clock_tick()


def _cpu_fields(cpu: list[float | None]) -> dict[str, float | None]:
    """first_cpu_s / compute_cpu_s / compute_cpu_mean_s: CPU seconds of all node processes together in
    the first session and (median, mean) in a later one; None where /proc is not available."""
    later = [c for c in cpu[1:] if c is not None]
    return {"first_cpu_s": cpu[0], "compute_cpu_s": statistics.median(later) if later else None,
            # /proc counts in clock ticks (10 ms): for sessions of a few ms only the mean is meaningful
            "compute_cpu_mean_s": statistics.fmean(later) if later else None}


def _cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


_POOL_LEVEL = re.compile(r'^mpc_triple_pool_words\{peer="([^"]+)",role="receiver"\} (\S+)$', re.M)
POOL_WAIT_S = 300.0


def pool_levels(cluster: ClusterConfig, name: str) -> dict[str, int]:
    """Node `name`'s triple pool with each peer, as receiver, in words (from its metrics endpoint)."""
    address = cluster.node(name).metrics
    if address is None:
        raise RuntimeError(f"node {name} serves no metrics")
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:   # noqa: S310 - 127.0.0.1
        text = reply.read().decode()
    return {peer: int(float(value)) for peer, value in _POOL_LEVEL.findall(text)}


async def wait_for_pools(cluster: ClusterConfig, names: Sequence[str], words: int) -> None:
    """Wait (at most POOL_WAIT_S) until every node holds `words` words of random OTs with every
    peer: the fills the nodes make between sessions (mpc/ot/pool.py) are done.

    Raises: TimeoutError naming the nodes still short.
    """
    deadline = time.monotonic() + POOL_WAIT_S
    while True:
        short = [(n, p) for n in names for p, level in (await asyncio.to_thread(pool_levels, cluster, n)).items()
                 if p in names and level < words]
        if not short:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"triple pools still short after {POOL_WAIT_S:.0f} s: {short[:6]}")
        await asyncio.sleep(0.25)   # a benchmark's poll of the nodes' metrics, not a test's wait


async def _timed_sessions(cluster: ClusterConfig, nodes: NodeProcesses, repeats: int,
                          session: Callable[[Coordinator], Awaitable[bool]], *, keyed: bool = True,
                          one_round: bool = True, between: Callable[[], Awaitable[None]] | None = None,
                          coordinator_cpu: list[float] | None = None, after_first: list[float] | None = None,
                          ) -> tuple[list[float], list[float | None], bool, list[dict[str, float] | None]]:
    """Run `session` repeats + 1 times through one coordinator, timing each and the nodes' CPU
    (keyed=False: the coordinator never takes the keyed path, mpc/protocols/pairing.py; one_round=False:
    it always prepares, then computes). coordinator_cpu, if given, gets this process's CPU seconds
    per session; after_first, if given, the seconds from the end of the first session to the end of
    the last (the later sessions and whatever ran between them: what an end-to-end figure "as if
    one computation had been made" leaves out).
    `between`, if given, runs untimed before each session after the first (e.g. wait_for_pools).

    Returns: (wall seconds per session, CPU seconds of all node processes together per session,
    all sessions correct, CPU seconds of each node process per session by node name); the CPU
    entries are None where /proc is not available.
    """
    times: list[float] = []
    cpu: list[float | None] = []
    by_node: list[dict[str, float] | None] = []
    ok = True
    tick = _clock_tick()
    first_end = end = 0.0
    async with Coordinator(cluster, keyed=keyed, one_round=one_round) as coordinator:
        for i in range(repeats + 1):
            if i and between is not None:
                await between()
            before = _cpu_ticks(nodes)
            start, own = time.perf_counter(), time.process_time()
            correct = await session(coordinator)
            end = time.perf_counter()
            times.append(end - start)
            first_end = end if i == 0 else first_end
            if coordinator_cpu is not None:
                coordinator_cpu.append(time.process_time() - own)
            after = _cpu_ticks(nodes)
            if before is None or after is None:
                cpu.append(None)
                by_node.append(None)
            else:
                cpu.append((sum(after.values()) - sum(before.values())) / tick)
                by_node.append({name: (after[name] - before[name]) / tick for name in before})
            ok &= correct
    if after_first is not None:
        after_first.append(end - first_end)
    return times, cpu, ok, by_node


def run_mpc_compare(M: int = 1000, parties: int = 3, repeats: int = 5, threshold: int = 0,
                    pool: bool = True) -> dict[str, object]:
    """M batched 32-bit comparisons [sum over nodes >= threshold] (`Coordinator.at_least`).

    first_s: the first session on fresh nodes (base OTs of every pair + TLS handshakes + the M
    comparisons, its triples made by IKNP in the session); compute_s: median of `repeats` later
    sessions (the setup reused). pool=True: each later session starts once the nodes have made
    its random OTs between sessions (mpc/ot/pool.py; they do so after every session, while idle),
    and fill_cpu_s is the nodes' CPU while waiting for that, averaged over the sessions (it
    includes the first top-up to twice a session's demand); pool=False: the nodes keep no pools,
    and every session makes its triples by IKNP while it runs;
    setup_s = first_s - compute_s, the one-off; end_to_end_s: spawning the nodes, waiting for
    health, the first session, stopping them. ok: every session's bits equal the plaintext's.

    first_cpu_s / compute_cpu_s: CPU seconds of the node processes together (Linux).

    Returns: {"compute_s", "first_s", "setup_s", "end_to_end_s", "comparisons_per_s", "M",
    "parties", "threshold", "ok", "repeats", "first_cpu_s", "compute_cpu_s"}.
    """
    if M < 1 or repeats < 1:
        raise ValueError("M and repeats must be at least 1")
    names = node_names(parties)
    values = compare_inputs(parties, M)
    expected = (np.sum(values, axis=0) >= threshold).tolist()
    async def compare(coordinator: Coordinator) -> bool:
        return bool((await coordinator.at_least("x", threshold)).bits == expected)

    limit = (COMPARE_BOUND - 1) // parties
    words = triple_words(parties, COMPARE_BITS, M)
    fill_cpu: list[float] = []
    later: list[float] = []
    with _running(names, {"x": values}, (-limit, limit), pool=pool) as run:
        async def filled() -> None:
            before = _cpu_s(run.nodes)
            await wait_for_pools(run.cluster, names, words)
            spent = _cpu_delta(before, _cpu_s(run.nodes))
            if spent is not None:
                fill_cpu.append(spent)

        times, cpu, ok, _ = aio.run(_timed_sessions(run.cluster, run.nodes, repeats, compare,
                                                        between=filled if pool else None, after_first=later))
    end_to_end = run.stopped - run.started - later[0]
    compute = statistics.median(times[1:])
    return {"compute_s": compute, "first_s": times[0], "setup_s": times[0] - compute, "end_to_end_s": end_to_end,
            "comparisons_per_s": M / compute, "M": M, "parties": parties, "threshold": threshold, "ok": ok,
            "repeats": repeats, "pool": pool, "triple_words": words,
            "fill_cpu_s": statistics.mean(fill_cpu) if fill_cpu else None, **_cpu_fields(cpu)}


def _cli_vote(cluster_file: Path, input_name: str, timeout: float = 120.0) -> tuple[float, bool]:
    """Run `mpc vote NAME --json` as a user would (a fresh Python process) against running nodes,
    with mpc's bytecode written (`running_nodes` compiles it, as pip does for an installed mpc).

    Returns: (wall seconds, passed).
    """
    cmd = [sys.executable, "-m", "mpc", "vote", input_name, "--cluster", str(cluster_file), "--json"]
    s = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    dt = time.perf_counter() - s
    if proc.returncode != 0:
        raise RuntimeError(f"mpc vote exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
    return dt, json.loads(proc.stdout)["result"] == "YES"


def run_mpc_vote(ballots: int = 1000, parties: int = 3, repeats: int = 5,
                 cli_repeats: int = 3, pool: bool = True, one_round: bool = True) -> dict[str, object]:
    """A vote over `ballots` 0/1 ballots split across the nodes (rule: at least half are 1).

    pool=True: each later vote starts once the nodes hold its random OTs (made between
    sessions, mpc/ot/pool.py); pool=False: the nodes keep no pools (IKNP in every vote).
    one_round=False: every vote is prepared, then computed (two coordinator round trips).

    first_s: the first vote on fresh nodes (includes the base OTs of every pair); compute_s:
    median of `repeats` later votes through the coordinator API; cli_s: median of
    `cli_repeats` runs of the `mpc vote` command (a new Python process: start-up, imports, TLS
    to every node, the vote) on the already running nodes, after the setup and after one untimed
    run (mpc's bytecode is written beforehand, `compile_mpc`); end_to_end_s:
    spawning the nodes, the first vote, stopping them. ok: every result equals the plaintext's.

    first_cpu_s / compute_cpu_s: CPU seconds of the node processes together (Linux).

    Returns: {"compute_s", "first_s", "setup_s", "cli_s", "end_to_end_s", "ballots", "parties",
    "passed", "ok", "repeats", "first_cpu_s", "compute_cpu_s"}.
    """
    if ballots < parties or repeats < 1:
        raise ValueError("need at least one ballot per node and one repeat")
    names = node_names(parties)
    split = vote_ballots(ballots, parties)
    expected = 2 * int(sum(int(b.sum()) for b in split)) >= ballots
    async def vote(coordinator: Coordinator) -> bool:
        return (await coordinator.vote("ballots")).passed == expected

    cli_times: list[float] = []
    cli_spent = 0.0
    words = triple_words(parties, vote_bits(parties), 1)
    later: list[float] = []
    with _running(names, {"ballots": split}, pool=pool) as run:
        async def filled() -> None:
            await wait_for_pools(run.cluster, names, words)

        times, cpu, ok, _ = aio.run(_timed_sessions(run.cluster, run.nodes, repeats, vote, one_round=one_round,
                                                        between=filled if pool else None, after_first=later))
        for i in range(cli_repeats + 1 if cli_repeats else 0):
            dt, passed = _cli_vote(run.cluster_file, "ballots")
            cli_spent += dt
            if i:   # the first run is untimed: it brings the command's files into the page cache
                cli_times.append(dt)
            ok &= passed == expected
    end_to_end = run.stopped - run.started - later[0] - cli_spent
    compute = statistics.median(times[1:])
    return {"compute_s": compute, "first_s": times[0], "setup_s": times[0] - compute,
            "cli_s": statistics.median(cli_times) if cli_times else None, "end_to_end_s": end_to_end,
            "ballots": ballots, "parties": parties, "passed": expected, "ok": ok, "repeats": repeats,
            "pool": pool, **_cpu_fields(cpu)}


# The bids of the auction benchmark: |bid| <= 2^30 - 1, the most for which MPyC's SecInt(32)
# compares two bids exactly (their difference must fit in signed 32 bits); mpc takes any int32.
# The same limit as benchmarks/mpyc_programs/auction.py BID_LIMIT.
AUCTION_BID_LIMIT = (1 << 30) - 1


def auction_bids(bids: int, parties: int) -> list[np.ndarray]:
    """Deterministic bids, split into `parties` contiguous chunks (sizes differ by <= 1): values
    in +-AUCTION_BID_LIMIT (negative ones too), every 13th bid a repeat of the one before it,
    and the top value AUCTION_BID_LIMIT planted at global indices bids//2, bids//2 + 2 and
    bids - 1, so the maximum is tied within a node and across nodes (with 3 nodes).

    The same formula as benchmarks/mpyc_programs/auction.py, so both sides hold the same bids.
    Returns: one int64 vector per node.
    """
    j = np.arange(bids, dtype=np.int64)
    every = (j * 2_654_435_761 + 12_345) % (2 * AUCTION_BID_LIMIT + 1) - AUCTION_BID_LIMIT
    every[13::13] = every[12:-1:13]  # ties below the top
    every[[bids // 2, min(bids // 2 + 2, bids - 1), bids - 1]] = AUCTION_BID_LIMIT  # the top, tied
    return [np.ascontiguousarray(chunk) for chunk in np.array_split(every, parties)]


def auction_expected(split: Sequence[np.ndarray], second_price: bool) -> tuple[int, int, int]:
    """The plaintext auction under mpc's rule: the highest bid wins, among equal highest bids the
    first in (node order, index at the node); the price is that bid, or with second_price the
    highest of the others (equal to the winner's when the top is tied).

    Returns: (winning node's position, index at that node, price).
    """
    every = np.concatenate(split)
    winner = int(np.argmax(every))  # the first occurrence of the maximum
    price = int(np.max(np.delete(every, winner))) if second_price else int(every[winner])
    starts = np.cumsum([0] + [len(chunk) for chunk in split])
    node = int(np.searchsorted(starts, winner, side="right")) - 1
    return node, winner - int(starts[node]), price


def run_mpc_auction(bids: int = 1000, parties: int = 3, second_price: bool = False,
                    repeats: int = 5) -> dict[str, object]:
    """A sealed-bid auction over `bids` bids split across the nodes (`Coordinator.auction`): only
    the winner (node and index there) and the price are opened; with second_price the price is
    the second-highest bid.

    first_s: the first auction on fresh nodes (includes the base OTs of every pair); compute_s:
    median of `repeats` later auctions; setup_s = first_s - compute_s; end_to_end_s: spawning
    the nodes, the first auction, stopping them. ok: every result equals the plaintext's
    (auction_expected).

    first_cpu_s / compute_cpu_s: CPU seconds of the node processes together (Linux).

    Returns: {"compute_s", "first_s", "setup_s", "end_to_end_s", "bids", "parties", "second_price",
    "winner_node", "winner_index", "price", "ok", "repeats", "first_cpu_s", "compute_cpu_s"}.
    """
    if bids < max(parties, 2) or repeats < 1:
        raise ValueError("need at least one bid per node, two bids and one repeat")
    names = node_names(parties)
    split = auction_bids(bids, parties)
    node, index, price = auction_expected(split, second_price)
    async def auction(coordinator: Coordinator) -> bool:
        result = await coordinator.auction("bids", second_price=second_price)
        return (result.winner_node, result.winner_index, result.price) == (names[node], index, price)

    later: list[float] = []
    with _running(names, {"bids": split}, (-AUCTION_BID_LIMIT, AUCTION_BID_LIMIT)) as run:
        times, cpu, ok, _ = aio.run(_timed_sessions(run.cluster, run.nodes, repeats, auction, after_first=later))
    end_to_end = run.stopped - run.started - later[0]
    compute = statistics.median(times[1:])
    return {"compute_s": compute, "first_s": times[0], "setup_s": times[0] - compute, "end_to_end_s": end_to_end,
            "bids": bids, "parties": parties, "second_price": second_price, "winner_node": names[node],
            "winner_index": index, "price": price, "ok": ok, "repeats": repeats, **_cpu_fields(cpu)}


def _timed(fn: Callable[[], Any]) -> float:
    s = time.perf_counter()
    fn()
    return time.perf_counter() - s


def run_mpc_base_ot(repeats: int = 5) -> dict[str, object]:
    """The one-off base OTs of one pair of nodes, in this process, no network (as ot_micro.py).

    one_direction_s: 128 Chou-Orlandi OTs, one party the sender and the other the receiver
    (sender's A, receiver's B's and keys, sender's key pairs); both_directions_s: the whole
    pairwise setup the nodes run (mpc.ot.triples.PairwiseOtSetup: a batch each way), both
    parties' work added up. Medians of `repeats` after one untimed warm-up. In the cluster the
    two parties of a pair work in parallel, but each node also sets up with every other peer
    (and one node handles one base-OT message at a time).

    Returns: {"one_direction_s", "both_directions_s", "ots", "repeats"}.
    """
    rng = SystemRng()

    def one_direction() -> None:
        choices = [b & 1 for b in os.urandom(BASE_OTS)]
        sender = ChouOrlandiSender(rng)
        receiver = ChouOrlandiReceiver(choices, rng)
        sender.finish(receiver.respond(sender.first_message()))
        receiver.keys()

    def both_directions() -> None:
        pair = ("alice", "bob")
        results = run_router({p: PairwiseOtSetup(p, pair, rng, "bench-base-ot") for p in pair})
        if not all(isinstance(results.get(p), OtReady) for p in pair):
            raise RuntimeError("pairwise OT setup did not finish")

    one_direction()  # warm-up: the first power of g in a process builds its comb table
    one = [_timed(one_direction) for _ in range(repeats)]
    both = [_timed(both_directions) for _ in range(repeats)]
    return {"one_direction_s": statistics.median(one), "both_directions_s": statistics.median(both),
            "ots": BASE_OTS, "repeats": repeats}
