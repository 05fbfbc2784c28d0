"""Contributors at scale (issue 13): N ballots from N credentials into a collection at 3 nodes, then
a validated vote over all of them.

Every node is a separate `mpc node` process on 127.0.0.1 with a submission listener; the owner's
key, the credentials, the contributors (mpc.client.Contributor, batched) and the coordinator run in
this process. A bounded load: exactly N submissions, in batches of `batch` per call, `concurrency`
calls in flight; then the collection is closed at every node and one `collection-vote` runs.

Reported: issue_s (N credentials), submit_s and submissions_per_s (every node storing its share of
every submission, end to end), rss_before_mb / rss_after_mb per node (VmRSS, before the first and
after the last submission: no per-submission object is kept after storage), peak_rss_mb per node
(VmHWM after the vote: the range checks run in chunks of mpc/protocols/collection.py CHUNK_VALUES,
so the peak stays bounded), vote_s (the validated vote: key exchange, 2N 64-bit range checks, the
vote), vote_cpu_s (the nodes' CPU in it), passed
and ok (the result equals the plaintext's: at least half of the honest ballots are yes).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mpc import aio
from mpc.client import Contributor
from mpc.coordinator.client import Coordinator
from mpc.credentials import issue, new_owner_key
from mpc.localcluster import write_local_cluster
from mpc.store import CollectionSpec

from benchmarks.mpc_runner import _cpu_s, node_names, node_stores, running_nodes

COLLECTION = "referendum"


def _rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A process's resident set size in MiB, or with field "VmHWM" its peak (Linux /proc; else None)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_collection_vote(ballots: int = 100_000, parties: int = 3, batch: int = 5_000,
                        concurrency: int = 2) -> dict[str, object]:
    """Submit `ballots` ballots from as many credentials, close the collection, vote once.

    Returns: the figures of the module docstring, and "ballots", "parties", "batch".
    """
    if ballots < 1 or batch < 1 or concurrency < 1:
        raise ValueError("ballots, batch and concurrency must be at least 1")
    names = node_names(parties)
    owner = new_owner_key()
    spec = CollectionSpec(COLLECTION, "ballot", 0, 1, 1, min(100, ballots), "refuse", bytes(owner.verify_key),
                          tuple(sorted(names)))
    votes = [int(b) for b in np.frombuffer(os.urandom(ballots), dtype=np.uint8) & 1]

    def write(work: Path) -> Path:
        cluster_file = write_local_cluster(work, names, session_timeout_s=600.0, submit=True)
        for _, store in node_stores(cluster_file, names):
            with store:
                store.create_collection(spec)
        return cluster_file

    started = time.perf_counter()
    credentials = issue(owner, COLLECTION, ballots)
    issue_s = time.perf_counter() - started
    with running_nodes(names, write) as run:
        pids = {name: proc.pid for name, proc in run.nodes.procs.items()}
        rss_before = {name: _rss_mb(pid) for name, pid in pids.items()}

        async def submit_all() -> int:
            accepted = 0
            async with Contributor(run.cluster, timeout=120.0) as contributor:
                chunks = [list(zip(credentials[i:i + batch], ([v] for v in votes[i:i + batch])))
                          for i in range(0, ballots, batch)]
                for k in range(0, len(chunks), concurrency):
                    reports = await asyncio.gather(*(contributor.submit_many(COLLECTION, chunk, batch=batch)
                                                     for chunk in chunks[k:k + concurrency]))
                    accepted += sum(r.accepted for rs in reports for r in rs)
            return accepted

        started = time.perf_counter()
        accepted = aio.run(submit_all())
        submit_s = time.perf_counter() - started
        rss_after = {name: _rss_mb(pid) for name, pid in pids.items()}
        for _, store in node_stores(run.cluster_file, names):
            with store:
                store.close_collection(COLLECTION)

        async def vote() -> bool:
            async with Coordinator(run.cluster) as coordinator:
                return (await coordinator.collection_vote(COLLECTION, timeout_s=600.0)).passed

        cpu_before = _cpu_s(run.nodes)
        started = time.perf_counter()
        passed = aio.run(vote())
        vote_s = time.perf_counter() - started
        cpu_after = _cpu_s(run.nodes)
        peak = {name: _rss_mb(pid, "VmHWM") for name, pid in pids.items()}
    expected = 2 * sum(votes) >= ballots
    return {"ballots": ballots, "parties": parties, "batch": batch, "issue_s": issue_s, "submit_s": submit_s,
            "submissions_per_s": ballots / submit_s, "accepted": accepted, "vote_s": vote_s,
            "vote_cpu_s": None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
            "rss_before_mb": rss_before, "rss_after_mb": rss_after, "peak_rss_mb": peak, "passed": passed,
            "ok": passed == expected and accepted == ballots}


def collection_table(results: Sequence[dict[str, object]]) -> tuple[list[str], list[str]]:
    """Markdown rows and notes for run.py."""
    rows = ["| ballots | credentials issued (s) | submitted (s) | submissions/s | validated vote (s) | "
            "its node CPU (s) | node RSS before → after (MiB) | node peak RSS (MiB) | correct |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rss = ", ".join(f"{r['rss_before_mb'][n]:.0f} → {r['rss_after_mb'][n]:.0f}"   # type: ignore[index]
                        for n in r["rss_before_mb"])   # type: ignore[union-attr]
        peak = ", ".join(f"{v:.0f}" for v in r["peak_rss_mb"].values() if v is not None)   # type: ignore[union-attr]
        rows.append(f"| {r['ballots']:,} | {r['issue_s']:.1f} | {r['submit_s']:.1f} | {r['submissions_per_s']:,.0f} | "
                    f"{r['vote_s']:.1f} | {r['vote_cpu_s']:.1f} | {rss} | {peak} | {'yes' if r['ok'] else 'NO'} |")
    notes = []
    if results:
        last = results[-1]
        per = float(last["submit_s"]) / int(last["ballots"])   # type: ignore[arg-type]
        vote_per = float(last["vote_s"]) / int(last["ballots"])   # type: ignore[arg-type]
        notes.append(f"- at 10^6 ballots, from the per-submission costs measured at {last['ballots']:,}: about "
                     f"{per * 1e6:,.0f} s to submit and {vote_per * 1e6:,.0f} s for the vote on this machine")
    return rows, notes
