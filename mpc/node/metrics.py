"""A node's Prometheus metrics: sessions, traffic per peer, round latency, triples.

Every node counts; only a node whose owner sets a metrics address (`metrics = "HOST:PORT"` in
its cluster-file section, or `mpc node --metrics HOST:PORT`) serves them, over plain HTTP at
/metrics. Nothing here is secret: names of peers and protocols, counts, sizes and times. Bind
it to loopback or a management network all the same; it says who computed with whom and when.

Each node has its own registry, so several nodes in one process (the tests) keep apart.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric

from mpc import __version__
from mpc.config import split_address
from mpc.errors import ConfigError

# How often the serving thread looks for close(): close() waits up to this long. (prometheus_client's
# start_http_server serves with the standard library's default of 0.5 s, which made stopping a node
# take half a second.)
POLL_S = 0.05

# One peer message takes ~1 ms on loopback, a base-OT batch ~1 s, a 10^7-element share seconds.
_ROUND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class PeerMetrics:
    """One peer's children of the per-peer counters."""

    sent_bytes: Any
    sent_messages: Any
    received_bytes: Any
    received_messages: Any
    round_seconds: Any


class NodeMetrics:
    """The counters one node keeps (cheap enough to keep always; served only on request)."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("mpc_node", "This node's name and mpc version.", registry=r).info({"node": node, "version": __version__})
        self.sessions = Counter("mpc_sessions", "Sessions at this node by protocol and outcome "
                                "(done, failed, aborted, refused).", ["protocol", "outcome"], registry=r)
        self.active = Gauge("mpc_active_sessions", "Sessions prepared or computing right now.", registry=r)
        self.sent_bytes = Counter("mpc_peer_sent_bytes", "Protocol payload bytes sent to each peer node.",
                                  ["peer"], registry=r)
        self.received_bytes = Counter("mpc_peer_received_bytes", "Protocol payload bytes received from each "
                                      "peer node.", ["peer"], registry=r)
        self.sent_messages = Counter("mpc_peer_sent_messages", "Protocol messages sent to each peer node.",
                                     ["peer"], registry=r)
        self.received_messages = Counter("mpc_peer_received_messages", "Protocol messages received from "
                                         "each peer node.", ["peer"], registry=r)
        self.output_bytes = Counter("mpc_output_share_bytes", "Bytes of output shares sent to coordinators.",
                                    registry=r)
        self.round_seconds = Histogram("mpc_peer_round_seconds", "Time to hand one protocol message to a "
                                       "peer (its stream took it, or its own call was acknowledged).",
                                       ["peer"], buckets=_ROUND_BUCKETS, registry=r)
        self.triples_generated = Counter("mpc_triples_generated", "Bit triples (AND gates) sessions made with "
                                         "peers, from random OTs made in the session or taken from the triple "
                                         "pools (mpc_triple_pool_words says how many the pools hold).", registry=r)
        self.triples_consumed = Counter("mpc_triples_consumed", "Bit triples used by comparison circuits.",
                                        registry=r)
        self.pool_sent_bytes = Counter("mpc_pool_sent_bytes", "Bytes of triple pool fills sent to each peer "
                                       "(random OTs made between sessions; not in the sessions' traffic).",
                                       ["peer"], registry=r)
        self.pool_received_bytes = Counter("mpc_pool_received_bytes", "Bytes of triple pool fills received from "
                                           "each peer.", ["peer"], registry=r)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._peers: dict[str, PeerMetrics] = {}

    def peer(self, name: str) -> PeerMetrics:
        """The per-peer counters of one peer (looked up once: a vote sends dozens of messages)."""
        found = self._peers.get(name)
        if found is None:
            found = self._peers[name] = PeerMetrics(
                self.sent_bytes.labels(name), self.sent_messages.labels(name), self.received_bytes.labels(name),
                self.received_messages.labels(name), self.round_seconds.labels(name))
        return found

    def watch_pools(self, levels: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """Report the triple pools (mpc/ot/pool.py) as read at each scrape: `levels()` gives
        (peer, role, words) with role "receiver" (we choose) or "sender"."""

        class _Pools:
            def collect(self) -> Iterator[Metric]:
                gauge = GaugeMetricFamily("mpc_triple_pool_words", "Words (64 AND gates each) of random OTs made "
                                          "ahead of time with each peer and not spent yet.", labels=["peer", "role"])
                for peer, role, words in levels():
                    gauge.add_metric([peer, role], words)
                yield gauge

        self.registry.register(_Pools())

    def serve(self, address: str) -> int:
        """Serve /metrics over HTTP on `address` ("HOST:PORT"; port 0 picks one).

        Returns: the bound port.
        Raises: ConfigError if the address is malformed or cannot be bound.
        """
        host, port = split_address(address, "metrics", any_port=True)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server: WSGIServer = make_server(host, port, _metrics_only(make_wsgi_app(self.registry)),
                                             type("_MetricsServer", (_ThreadingServer,), {"address_family": family}),
                                             handler_class=_QuietHandler)
        except (OSError, UnicodeError) as exc:   # socket.gaierror: a host that does not resolve; UnicodeError: "a..b"
            raise ConfigError(f"cannot serve metrics on {address}: {exc}") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_S},
                                        name="metrics", daemon=True)
        self._thread.start()
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving (if serving); the counters stay readable."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A WSGI server answering each scrape in a thread of its own, as prometheus_client's does."""

    daemon_threads = True


def _metrics_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """`app` at /metrics, 404 anywhere else (prometheus_client's app answers every path)."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: this node serves /metrics only\n"]
        return app(environ, start_response)

    return serve


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape, and no thread held by a client that connects and says nothing."""

    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002  (the standard library's name)
        pass
