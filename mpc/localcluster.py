"""A whole cluster on one machine's loopback: certificates, cluster file, node processes.

Used by `mpc demo` and by the tests. Every process it starts is remembered by PID and
stopped by PID (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mpc import aio
from mpc.config import ClusterConfig, load_cluster
from mpc.errors import PeerUnavailable
from mpc.pki import init_cluster_certs
from mpc.transport.peers import Channels
from mpc.transport.tls import TlsMaterial


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel reports free on `host` right now.

    Returns: `count` distinct port numbers.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_local_cluster(workdir: Path, names: Sequence[str], *, min_participants: int | None = None,
                        extra_node_keys: Mapping[str, str] | None = None, session_timeout_s: float = 30.0,
                        policies: Mapping[str, str] | None = None, every_policy: str = "",
                        metrics: bool = False, submit: bool = False) -> Path:
    """Issue certificates and write a cluster file for nodes on 127.0.0.1.

    Args:
        policies: raw TOML for a node's policy table, by node.
        every_policy: raw TOML keys added to every node's policy table (before its own).
        metrics: serve each node's Prometheus metrics on a free port of 127.0.0.1.
        submit: give each node a submission address (mpc submit) on a free port of 127.0.0.1.

    Returns: the cluster file's path (workdir/cluster.toml).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    init_cluster_certs(workdir / "certs", {n: [n] for n in names}, ["coordinator"])
    ports = free_ports(3 * len(names))   # each node's address, then its metrics and submission ports
    lines = ["[cluster]", 'name = "local"', 'ca = "certs/ca.pem"', f"session_timeout_s = {session_timeout_s}",
             "connect_timeout_s = 5", "", "[coordinator]", 'name = "coordinator"',
             'cert = "certs/coordinator-coordinator.pem"', 'key = "certs/coordinator-coordinator.key"']
    for name, port in zip(names, ports):
        lines += ["", f"[nodes.{name}]", f'address = "127.0.0.1:{port}"', f'host = "{name}"',
                  f'cert = "certs/{name}.pem"', f'key = "certs/{name}.key"', f'data_dir = "data/{name}"']
        for key, value in (extra_node_keys or {}).items():
            lines.append(f"{key} = {value}")
        if metrics:
            lines.append(f'metrics = "127.0.0.1:{ports[len(names) + names.index(name)]}"')
        if submit:
            lines.append(f'submit = "127.0.0.1:{ports[2 * len(names) + names.index(name)]}"')
        policy = (policies or {}).get(name)
        if min_participants is not None or policy or every_policy:
            lines.append(f"[nodes.{name}.policy]")
        if min_participants is not None:
            lines.append(f"min_participants = {min_participants}")
        if every_policy:
            lines.append(every_policy)
        if policy:
            lines.append(policy)  # raw TOML for this node's policy table (tests)
    path = workdir / "cluster.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def wait_healthy(cluster: ClusterConfig, names: Sequence[str], timeout: float = 20.0,
                       tls: TlsMaterial | None = None) -> None:
    """Wait until every named node answers the gRPC health check with SERVING.

    Args:
        tls: the identity to call with (default: the cluster's coordinator). A node may check
            itself with its own certificate, as `mpc health` does.

    Raises: PeerUnavailable naming the nodes still not serving at the deadline.
    """
    if tls is None:
        me = cluster.require_coordinator()
        tls = TlsMaterial.load(cluster.ca, me.cert, me.key)
    channels = Channels(cluster, tls)
    deadline = time.monotonic() + timeout
    pending = set(names)

    async def one(name: str) -> None:
        stub = health_pb2_grpc.HealthStub(channels.channel(name))
        while time.monotonic() < deadline:
            try:
                # wait_for_ready: the call waits for the channel to connect instead of failing
                # at once, so there is no polling delay between the node binding and us noticing.
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True,
                                         timeout=max(0.05, deadline - time.monotonic()))
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                pending.discard(name)
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(one(n) for n in names))
    finally:
        await channels.close()
    if pending:
        raise PeerUnavailable(f"node(s) {', '.join(sorted(pending))} not serving after {timeout:.0f} s")


class NodeProcesses:
    """`mpc node` daemons started as child processes, stopped by PID."""

    def __init__(self, cluster_file: Path, log_dir: Path) -> None:
        self.cluster_file = cluster_file
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *, log_level: str = "info", log_format: str = "text") -> subprocess.Popen[bytes]:
        """Start node `name` (its stderr goes to log_dir/NAME.log).

        Returns: the process.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mpc", "--log-level", log_level, "--log-format", log_format, "node",
                 "--cluster", str(self.cluster_file), "--name", name], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[name] = proc
        return proc

    def start_all(self, names: Sequence[str], timeout: float = 30.0, *, log_format: str = "text") -> None:
        """Start the nodes and wait until all are healthy.

        Raises: PeerUnavailable if one is not serving in time (all are stopped first).
        """
        for name in names:
            self.start(name, log_format=log_format)
        try:
            aio.run(wait_healthy(load_cluster(self.cluster_file), names, timeout))
        except BaseException:
            self.stop_all()
            raise

    def stop(self, name: str, sig: int = signal.SIGTERM, grace: float = 10.0) -> int | None:
        """Send `sig` to node `name` by PID and wait for it (SIGKILL after `grace` seconds).

        Returns: its exit code, or None if it was not running.
        """
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        return _waited(proc, grace)

    def stop_all(self, grace: float = 10.0) -> dict[str, int | None]:
        """Stop every node started here: all are sent SIGTERM first, so that they stop side by side,
        then each is waited for (SIGKILL for any still running `grace` seconds after the signals).
        Each is signalled once: a second SIGTERM that came after its daemon's handler was gone would
        end it before its clean stop.

        Returns: name -> exit code.
        """
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace   # one grace period for all: they stop side by side
        codes: dict[str, int | None] = {}
        try:
            for name, proc in procs.items():
                codes[name] = _waited(proc, max(0.0, deadline - time.monotonic()))
        finally:   # a wait cut short (Ctrl-C) leaves no node running untracked
            for name, proc in procs.items():
                if name not in codes and proc.poll() is None:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
        return codes


def _waited(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """Wait for a signalled process, killing it after `grace` seconds. Returns: its exit code."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return proc.returncode
