"""NodeProcesses (mpc/localcluster.py), as `mpc demo`, the benchmarks and these tests run daemons: real `mpc
node` processes with mutual TLS and metrics on loopback. `stop_all` signals every node first and then waits
for each, so that they stop side by side; each is signalled once and stops cleanly (exit 0), its sessions
recorded, the repeats' deferred records included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpc import aio
from mpc.config import load_cluster
from mpc.coordinator.client import Coordinator
from mpc.localcluster import NodeProcesses, write_local_cluster
from mpc.protocols.catalogue import SumParams, entry
from mpc.store import Store

NAMES = ("alice", "bob", "carlos")
VALUES = {"alice": 3800, "bob": 2514, "carlos": 2982}
SUMS = 6   # the first prepares; the later ones run in one round from the nodes' plans (deferred records)


def _data_dir(cluster_file: Path, name: str) -> Path:
    data_dir = load_cluster(cluster_file).node(name).data_dir
    assert data_dir is not None
    return Path(data_dir)


def test_stop_all_stops_every_node_cleanly_with_its_records(tmp_path: Path) -> None:
    cluster_file = write_local_cluster(tmp_path, NAMES, metrics=True)
    for name in NAMES:
        with Store.open_dir(_data_dir(cluster_file, name)) as store:
            store.put_input("raise", np.array([VALUES[name]], dtype=np.int64), 0, True, bounds=(0, 10_000))
    nodes = NodeProcesses(cluster_file, tmp_path / "logs")

    async def sums() -> list[tuple[str, int]]:
        async with Coordinator(load_cluster(cluster_file), keyed=True, one_round=True) as coordinator:
            opened = [await coordinator.open(entry("sum"), SumParams(), "raise") for _ in range(SUMS)]
        return [(o.session_id, int(o.words.view(np.int64)[0])) for o in opened]

    nodes.start_all(NAMES)
    try:
        done = aio.run(sums())
    finally:
        codes = nodes.stop_all()
    assert [total for _, total in done] == [sum(VALUES.values())] * SUMS
    assert codes == {name: 0 for name in NAMES}, (codes, {n: (tmp_path / "logs" / f"{n}.log").read_text()[-2000:]
                                                          for n in NAMES})
    assert nodes.procs == {} and nodes.stop_all() == {}
    for name in NAMES:
        with Store.open_dir(_data_dir(cluster_file, name)) as store:
            missing = [sid for sid, _ in done if not store.has_session(sid)]
        assert missing == [], (name, missing)
