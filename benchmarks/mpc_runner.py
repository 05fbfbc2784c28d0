"""Run the mpc side of the benchmark: every node a separate `mpc node` process on 127.0.0.1,
mutual TLS on, the coordinator in this process (as `mpc sum` would be).

compute_s: median wall time of `Coordinator.sum` over `repeats` sessions once the nodes are up
and the channels are open (the analogue of MPyC's time after `mpc.start()`); first_s: the
first session, which also pays the TLS handshakes; end_to_end_s: spawning the node processes,
waiting for health, one sum, stopping them (the analogue of MPyC's spawn-to-exit).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mpc.config import load_cluster
from mpc.coordinator.client import Coordinator
from mpc.localcluster import NodeProcesses, write_local_cluster
from mpc.store import Store

NAMES = ("alice", "bob", "carlos", "david")
RAISES = (3800, 2514, 2982, 3390)


def _inputs(parties: int, length: int, raises: bool) -> list[np.ndarray]:
    if raises:
        return [np.array([r], dtype=np.int64) for r in RAISES]
    # The same arithmetic inputs as the MPyC programs (values < 2^32), so both check a sum.
    j = np.arange(length, dtype=np.int64)
    return [((i + 1) * 1_000_003 + j * 7919) % (1 << 32) for i in range(parties)]


def run_mpc_sum(length: int, parties: int = 3, *, raises: bool = False, repeats: int = 5) -> dict[str, object]:
    """Benchmark one secure sum configuration.

    Returns: {"compute_s", "first_s", "end_to_end_s", "L", "parties", "ok"}.
    """
    if raises:
        parties, length = 4, 1
    names = NAMES[:parties]
    values = _inputs(parties, length, raises)
    expected = np.sum(values, axis=0)
    with tempfile.TemporaryDirectory(prefix="mpc-bench-") as tmp:
        work = Path(tmp)
        cluster_file = write_local_cluster(work, names)
        cluster = load_cluster(cluster_file)
        for name, v in zip(names, values):
            data_dir = cluster.node(name).data_dir
            if data_dir is None:
                raise RuntimeError("write_local_cluster sets data_dir")
            with Store.open_dir(data_dir) as store:
                store.put_input("x", v, 0, raises)
        nodes = NodeProcesses(cluster_file, work / "logs")
        t0 = time.perf_counter()
        try:
            nodes.start_all(names)

            async def sessions() -> tuple[list[float], bool]:
                times = []
                ok = True
                async with Coordinator(cluster) as coordinator:
                    for _ in range(repeats + 1):
                        s = time.perf_counter()
                        opened = await coordinator.open(1, "x")
                        times.append(time.perf_counter() - s)
                        ok &= bool(np.array_equal(opened.total.view(np.int64), expected))
                return times, ok

            times, ok = asyncio.run(sessions())
        finally:
            nodes.stop_all()
        end_to_end = time.perf_counter() - t0 - sum(times[1:])
    return {"compute_s": statistics.median(times[1:]), "first_s": times[0], "end_to_end_s": end_to_end,
            "L": length, "parties": parties, "ok": ok}
