"""Wiring of one node daemon: store, core, gRPC server with Control, Peer and Health services, and,
for a node with a `submit` address, a second server with the contributors' Submit service."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mpc.config import ClusterConfig
from mpc.errors import AuthError, ConfigError, MpcError
from mpc.node.core import NodeCore, PeerObserver
from mpc.node.metrics import NodeMetrics
from mpc.ot.pool import POOL_CHANNEL
from mpc.pki import Identity, cert_not_after, identity_from_pem
from mpc.prg import Rng
from mpc.store import Store
from mpc.transport.peers import PeerClient
from mpc.node.servicer import ControlService, MalformedRequestInterceptor, PeerService
from mpc.node.submissions import SubmitService
from mpc.transport.tls import SERVER_OPTIONS, TlsMaterial
from mpc.v1 import mpc_pb2_grpc

log = logging.getLogger("mpc.node")
# The submission listener is open to anyone. Its calls have no cap of their own: a cap on calls counts
# calls whose request is still arriving, so an outsider holding a few half-sent requests open would
# have every contributor refused (a "slowloris"). Instead each connection carries a few calls at a time,
# no connection outlives SUBMIT_CONNECTION_AGE_MS (plus a grace for the calls on it), and the node
# bounds the work (SubmitService: batches checked at once, and waiting).
SUBMIT_STREAMS_PER_CONNECTION = 4
SUBMIT_CONNECTION_AGE_MS = 60_000
SUBMIT_CONNECTION_GRACE_MS = 30_000
SUBMIT_SERVER_OPTIONS: list[tuple[str, int | str]] = [
    *SERVER_OPTIONS,
    ("grpc.max_concurrent_streams", SUBMIT_STREAMS_PER_CONNECTION),
    ("grpc.max_connection_age_ms", SUBMIT_CONNECTION_AGE_MS),
    ("grpc.max_connection_age_grace_ms", SUBMIT_CONNECTION_GRACE_MS),
]
LOCK_FILE = "node.lock"   # in the data directory: held (flock) while a daemon runs on it


def lock_data_dir(name: str, data_dir: Path) -> int:
    """Take the data directory for this daemon alone: a second daemon on it (the same node started
    twice) would mark the first one's live sessions interrupted and share its store.

    Returns: the lock file's descriptor (closing it releases the lock; so does the process ending).
    Raises: ConfigError naming the directory if another daemon holds it, or if it cannot be locked.
    """
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"node {name}: cannot create the lock file {str(path)!r}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"node {name}: data directory {str(data_dir)!r} is in use by another running node "
                          f"daemon (it holds {LOCK_FILE}); stop that one first") from None
    return fd


class NodeServer:
    """One running node: call `start`, then `stop` (or use `serve_forever`)."""

    def __init__(self, cluster: ClusterConfig, name: str, *, observer: PeerObserver | None = None,
                 rng: Rng | None = None, metrics_address: str | None = None) -> None:
        """Args:
            metrics_address: serve Prometheus metrics on this host:port (overrides the
                cluster file's `metrics`; neither set: not served).
        """
        self.cluster = cluster
        self.config = cluster.node(name)
        self.metrics_address = metrics_address or self.config.metrics
        self.metrics = NodeMetrics(name)
        self.metrics_port = 0
        if self.config.data_dir is None:
            raise ConfigError(f"{cluster.path}: node {name!r} has no data_dir")
        self.tls = TlsMaterial.load(cluster.ca, self.config.cert, self.config.key)
        self.tls.check_pair(self.config.cert, self.config.key)
        try:
            own = identity_from_pem(self.tls.cert)
        except AuthError as exc:
            raise ConfigError(f"node {name}: certificate {self.config.cert}: {exc}") from None
        if own != Identity("node", name):   # its peers and coordinators would refuse it at every call
            raise ConfigError(f"node {name}: certificate {self.config.cert} is {own.uri()}'s, not node {name}'s")
        self.store = Store.open_dir(self.config.data_dir)
        try:
            self._lock_fd: int | None = lock_data_dir(name, self.config.data_dir)
        except ConfigError:
            self.store.close()
            raise
        interrupted = self.store.mark_unfinished_interrupted()
        if interrupted:
            log.warning("node %s: %d session(s) were interrupted by a restart", name, interrupted)
        self.peers = PeerClient(cluster, name, self.tls)
        self.core = NodeCore(cluster, self.config, self.store, self.peers, rng=rng, observer=observer,
                             cert_not_after=cert_not_after(self.tls.cert).isoformat(), metrics=self.metrics)
        self.peers.on_refusal = self.core.peer_refused
        self.peers.one_round = self.core.is_one_round
        self.peers.acknowledged = frozenset({POOL_CHANNEL})
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[MalformedRequestInterceptor()])
        # Both end their long-lived streams when the node stops (`closing`), once what runs on them is done.
        self.closing = asyncio.Event()
        mpc_pb2_grpc.add_ControlServicer_to_server(ControlService(self.core, self.closing), self.server)
        mpc_pb2_grpc.add_PeerServicer_to_server(PeerService(self.core, self.closing), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = 0
        # Contributors' submissions: a server of its own, with the Submit service alone, on TLS that
        # authenticates the node only (mpc/node/submissions.py); none if the node has no `submit` address.
        self.submit_server: grpc.aio.Server | None = None
        self.submit_port = 0
        if self.config.submit is not None:
            # Anyone may reach this listener: see SUBMIT_SERVER_OPTIONS above.
            self.submit_server = grpc.aio.server(options=SUBMIT_SERVER_OPTIONS,
                                                 interceptors=[MalformedRequestInterceptor()])
            mpc_pb2_grpc.add_SubmitServicer_to_server(SubmitService(self.store, name), self.submit_server)

    async def start(self) -> int:
        """Bind the listen address with mutual TLS and start serving.

        Returns: the bound port.
        Raises: ConfigError if the address cannot be bound.
        """
        try:
            self.port = self.server.add_secure_port(self.config.listen, self.tls.server_credentials())
        except RuntimeError as exc:
            raise ConfigError(f"node {self.config.name}: cannot listen on {self.config.listen}: {exc}") from None
        if self.port == 0:
            raise ConfigError(f"node {self.config.name}: cannot listen on {self.config.listen} (in use?)")
        if self.submit_server is not None:
            listen = self.config.submit_listen or self.config.submit
            try:
                self.submit_port = self.submit_server.add_secure_port(listen, self.tls.submission_server_credentials())
            except RuntimeError as exc:
                raise ConfigError(f"node {self.config.name}: cannot listen for submissions on {listen}: {exc}") from None
            if self.submit_port == 0:
                raise ConfigError(f"node {self.config.name}: cannot listen for submissions on {listen} (in use?)")
            await self.submit_server.start()
        if self.metrics_address:
            self.metrics_port = self.metrics.serve(self.metrics_address)
            host = self.metrics_address.rpartition(":")[0]
            log.info("node %s serves metrics on http://%s:%d/metrics", self.config.name, host, self.metrics_port)
        await self.server.start()
        self.core.start_pool_filler()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("mpc.v1.Control", health_pb2.HealthCheckResponse.SERVING)
        log.info("node %s listening on %s (port %d)", self.config.name, self.config.listen, self.port)
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls, let running ones finish for `grace` seconds, close everything."""
        await self.health.enter_graceful_shutdown()
        self.closing.set()   # the Run and peer streams take nothing more and end once their work is done
        await self.core.stop_pool_filler()
        if self.submit_server is not None:
            await self.submit_server.stop(grace)
        await self.server.stop(grace)
        await asyncio.to_thread(self.metrics.close)   # the HTTP server's shutdown blocks briefly
        await self.peers.close()
        self.core.close()
        try:
            self.store.close()   # writes the records it deferred (a repeated query's)
        except MpcError as exc:
            log.error("node %s: %s", self.config.name, exc)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("node %s stopped", self.config.name)

    async def serve_forever(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly; `on_ready(port)` once serving."""
        port = await self.start()
        if on_ready is not None:
            on_ready(port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()
