"""Real node daemons (grpc.aio, mutual TLS, SQLite) in the test's own event loop, on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpc.aio import settle_grpc
from mpc.config import ClusterConfig, load_cluster
from mpc.localcluster import write_local_cluster
from mpc.node.daemon import NodeServer
from mpc.ot.pool import POOL_CHANNEL
from mpc.protocols.catalogue import entry
from mpc.store import Store
from mpc.v1 import mpc_pb2

NAMES = ("alice", "bob", "carlos", "david", "erin", "frank", "grace")
# For tests of other things than the rules across sessions (test_across_sessions.py tests those):
# every node lets any participant set run any number of distinct queries on an input version.
ANY_QUERIES = 'participants = "any"\nmax_releases = 1000000'



@dataclass
class Recorder:
    """Everything the nodes receive from peers, keyed by receiving node."""

    received: dict[str, list[tuple[str, str, str, bytes]]] = field(default_factory=dict)

    def for_node(self, name: str):  # type: ignore[no-untyped-def]
        self.received.setdefault(name, [])

        def observe(session: str, sender: str, step: str, payload: bytes) -> None:
            self.received[name].append((session, sender, step, payload))
        return observe

    def counts(self) -> dict[str, int]:
        """How many session messages each node received so far. Pool fills are left out: nodes send
        them in the background between sessions, whenever a pool runs low."""
        return {n: sum(1 for m in v if m[0] != POOL_CHANNEL) for n, v in self.received.items()}


@dataclass
class LocalCluster:
    """A running cluster: its config, its servers, and what the nodes received."""

    cluster: ClusterConfig
    servers: dict[str, NodeServer]
    recorder: Recorder

    def put(self, name: str, input_name: str, values: Sequence[int] | np.ndarray, *, frac_bits: int = 0,
            scalar: bool = False, overwrite: bool = False, bounds: tuple[int, int] | None = None,
            ballots: bool = False, kind: str = "number") -> int:
        """Store an encoded input at one node, as `mpc input put` would on that node's machine.

        Returns: its new version.
        """
        data_dir = self.cluster.node(name).data_dir
        assert data_dir is not None
        with Store.open_dir(data_dir) as store:
            return store.put_input(input_name, np.asarray(values, dtype=np.int64), frac_bits, scalar,
                                   overwrite=overwrite, bounds=bounds, ballots=ballots, kind=kind)

    def store(self, name: str) -> Store:
        """A node's store, opened as another process opens it (`mpc audit` on its machine), once the
        node, if it runs, has written what it defers: a repeated query's records, which another
        process sees within 50 ms otherwise (mpc/store/base.py `_defer`)."""
        server = self.servers.get(name)
        if server is not None:
            server.store.write_deferred()
        data_dir = self.cluster.node(name).data_dir
        assert data_dir is not None
        return Store.open_dir(data_dir)

    async def stop(self, name: str) -> None:
        """Stop one node (as if its machine went down)."""
        server = self.servers.pop(name)
        await server.stop(0)


def make_cluster_file(tmp: Path, n: int, **kwargs: object) -> Path:
    """Certificates and cluster file for the first n NAMES."""
    return write_local_cluster(tmp, NAMES[:n], **kwargs)  # type: ignore[arg-type]


# How many clusters of running_cluster run on each event loop (a module's loop may hold two).
_running: dict[asyncio.AbstractEventLoop, int] = {}


@asynccontextmanager
async def running_cluster(tmp: Path, n: int = 3, *, min_participants: int | None = None,
                          session_timeout_s: float = 30.0, start: Sequence[str] | None = None,
                          policies: Mapping[str, str] | None = None, every_policy: str = "",
                          metrics: bool = False, triple_pool: int | None = None,
                          submit: bool = False) -> AsyncIterator[LocalCluster]:
    """Start n node servers (or only `start`), yield, then stop them all.

    metrics: each node serves Prometheus metrics on a free loopback port (server.metrics_port).
    triple_pool: every node's `triple_pool` (None: the default; 0: sessions make their triples by
        IKNP while they run, so that a test can fix which messages a session sends).
    submit: each node takes contributors' submissions on a free loopback port (its `submit` address).
    """
    path = make_cluster_file(tmp, n, min_participants=min_participants, session_timeout_s=session_timeout_s,
                             policies=policies, every_policy=every_policy,
                             extra_node_keys=None if triple_pool is None else {"triple_pool": str(triple_pool)},
                             submit=submit)
    cluster = load_cluster(path)
    recorder = Recorder()
    servers: dict[str, NodeServer] = {}
    local = LocalCluster(cluster, servers, recorder)
    loop = asyncio.get_running_loop()
    _running[loop] = _running.get(loop, 0) + 1
    try:
        for name in start if start is not None else NAMES[:n]:
            server = NodeServer(cluster, name, observer=recorder.for_node(name),
                                metrics_address="127.0.0.1:0" if metrics else None)
            await server.start()
            servers[name] = server
        yield local
    finally:
        for server in list(servers.values()):
            await server.stop(0)
        _running[loop] -= 1
        if not _running[loop]:   # the last cluster on this loop: gRPC answers the peer streams the stops cut
            del _running[loop]   # now, not on another loop (mpc/aio.py); a cluster still running keeps its own
            await settle_grpc()


def input_map(values: Mapping[str, int]) -> dict[str, list[int]]:
    """Scalars as one-element lists (helper for tables of inputs)."""
    return {k: [v] for k, v in values.items()}


WireParam = bool | int | Sequence[int] | mpc_pb2.Param


def wire_param(value: WireParam) -> mpc_pb2.Param:
    """One PrepareRequest parameter: a bool as `flag`, an int as `integer`, a sequence as `integers`
    (a Param passes through, e.g. one with no value set)."""
    if isinstance(value, mpc_pb2.Param):
        return value
    if isinstance(value, bool):
        return mpc_pb2.Param(flag=value)
    if isinstance(value, int):
        return mpc_pb2.Param(integer=value)
    return mpc_pb2.Param(integers=mpc_pb2.IntegerList(values=list(value)))


def wire_id(protocol: str | int) -> int:
    """A protocol's wire id: by catalogue name, or a raw id as is (e.g. one no entry has)."""
    return protocol if isinstance(protocol, int) else entry(protocol).wire_id


def prepare_request(session_id: str, protocol: str | int, input_name: str, participants: Sequence[str], *,
                    timeout_ms: int = 10_000, params: Mapping[str, WireParam | None] | None = None
                    ) -> mpc_pb2.PrepareRequest:
    """A PrepareRequest as the coordinator would send it, with typed parameters (None: left out).

    protocol: a catalogue name ("sum", "vote", ...) or a raw wire id.
    """
    wire = {k: wire_param(v) for k, v in (params or {}).items() if v is not None}
    return mpc_pb2.PrepareRequest(session_id=session_id, protocol=wire_id(protocol), input_name=input_name,
                                  participants=list(participants), timeout_ms=timeout_ms, params=wire)
