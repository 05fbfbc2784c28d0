"""A node's /metrics endpoint (mpc/node/metrics.py `serve`): real HTTP on loopback. It answers scrapes in
Prometheus' text format without a log line per scrape, names an address it cannot bind, and `close`
frees its port (a node stopping must not hold it, nor wait half a second for its serving thread)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from mpc.errors import ConfigError
from mpc.node.metrics import NodeMetrics


def _scrape(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("address, url_host", [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "[::1]")])
def test_metrics_are_served_quietly_and_close_frees_the_port(address: str, url_host: str,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    if url_host == "[::1]" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    metrics = NodeMetrics("alice")
    metrics.output_bytes.inc(8)
    port = metrics.serve(address)
    try:
        text = _scrape(url_host, port)
        assert "mpc_output_share_bytes_total 8.0" in text
    finally:
        metrics.close()
    metrics.close()   # a second close is a no-op
    assert capfd.readouterr().err == ""   # no access log line per scrape
    with pytest.raises(urllib.error.URLError):
        _scrape(url_host, port)
    family = socket.AF_INET6 if url_host == "[::1]" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as again:   # the port is free again, for a node started anew
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server sets it (TIME_WAIT)
        again.bind((url_host.strip("[]"), port))
        again.listen()


def test_an_address_in_use_is_named() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = NodeMetrics("alice")
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.serve(f"127.0.0.1:{port}")
        metrics.close()


@pytest.mark.parametrize("path", ["/", "/metricsx", "/favicon.ico", "/metrics/", "/other?name[]=x"])
def test_only_the_metrics_path_answers(path: str) -> None:
    metrics = NodeMetrics("alice")
    port = metrics.serve("127.0.0.1:0")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
        assert refused.value.code == 404
        assert b"mpc_" not in refused.value.read()
        assert "mpc_output_share_bytes_total" in _scrape("127.0.0.1", port)   # and /metrics still does
    finally:
        metrics.close()


def test_a_host_name_idna_refuses_is_named() -> None:
    metrics = NodeMetrics("alice")
    with pytest.raises(ConfigError, match=r"cannot serve metrics on a\.\.b:0"):
        metrics.serve("a..b:0")
