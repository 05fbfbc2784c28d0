"""What one gRPC message costs, the floor under every round of a protocol (README "Performance").

Two processes on loopback, mutual TLS with the certificates `mpc` issues, the nodes' own
Peer.Stream service and channel options, each process on the event loop `mpc` runs (mpc/aio.py):
the client writes one StreamMessage (a 16-byte payload, as one Beaver round of a single comparison
sends) and the server answers each with one StreamRefusal; the client waits for the answer before
the next (ping-pong). Reported: wall time per round trip, and each process's CPU (utime + stime)
per message it sent plus the one it received, i.e. per message at each end.

    .venv/bin/python benchmarks/grpc_floor.py [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from mpc import aio  # noqa: E402
from mpc.config import load_cluster  # noqa: E402
from mpc.localcluster import write_local_cluster  # noqa: E402
from mpc.transport.tls import TlsMaterial, channel_options  # noqa: E402
from mpc.v1 import mpc_pb2, mpc_pb2_grpc  # noqa: E402

PAYLOAD = b"\x5a" * 16
TIMEOUT_S = 120.0


def _cpu_s(pid: int | None = None) -> float:
    """utime + stime of a process (this one by default), in seconds."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Echo(mpc_pb2_grpc.PeerServicer):
    """Answers every stream message with one refusal carrying its seq."""

    async def Stream(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for message in request_iterator:
            yield mpc_pb2.StreamRefusal(seq=message.seq)


async def _serve(cluster_file: Path, port_file: Path) -> None:
    cluster = load_cluster(cluster_file)
    node = cluster.node("alice")
    tls = TlsMaterial.load(cluster.ca, node.cert, node.key)
    server = grpc.aio.server()
    mpc_pb2_grpc.add_PeerServicer_to_server(_Echo(), server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


async def _ping(cluster_file: Path, port: int, messages: int, server_pid: int) -> dict[str, Any]:
    cluster = load_cluster(cluster_file)
    node = cluster.node("bob")
    tls = TlsMaterial.load(cluster.ca, node.cert, node.key)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", tls.channel_credentials(),
                                       options=channel_options("alice")) as channel:
        call = mpc_pb2_grpc.PeerStub(channel).Stream(timeout=TIMEOUT_S)
        header = mpc_pb2.PeerHeader(session_id="0" * 32, step="cmp/ks/0", sender="bob", payload_bytes=len(PAYLOAD))

        async def round_trips(n: int) -> None:
            for seq in range(n):
                await call.write(mpc_pb2.StreamMessage(seq=seq, header=header, payload=PAYLOAD))
                answer = await call.read()
                if answer.seq != seq:
                    raise RuntimeError(f"answer {answer.seq} to message {seq}")
        await round_trips(200)   # warm-up: TLS, HTTP/2 windows, code paths
        start, cpu, server_cpu = time.perf_counter(), _cpu_s(), _cpu_s(server_pid)
        await round_trips(messages)
        wall, cpu, server_cpu = time.perf_counter() - start, _cpu_s() - cpu, _cpu_s(server_pid) - server_cpu
        await call.done_writing()
    loop = type(asyncio.get_running_loop())
    return {"wall_s": wall, "client_cpu_s": cpu, "server_cpu_s": server_cpu,
            "event_loop": f"{loop.__module__}.{loop.__qualname__}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        aio.run(_serve(Path(args.serve[0]), Path(args.serve[1])))
        return 0
    with tempfile.TemporaryDirectory(prefix="mpc-grpc-floor-") as tmp:
        cluster_file = write_local_cluster(Path(tmp), ["alice", "bob"])
        port_file = Path(tmp) / "port"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(cluster_file), str(port_file)])
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the echo server did not start")
                time.sleep(0.05)
            got = aio.run(_ping(cluster_file, int(port_file.read_text()), args.messages, server.pid))
        finally:
            server.terminate()
            server.wait(10)
    n = args.messages
    row = {"messages": n, "event_loop": got["event_loop"], "round_trip_us": got["wall_s"] / n * 1e6,
           "client_cpu_per_message_each_way_us": got["client_cpu_s"] / n * 1e6,
           "server_cpu_per_message_each_way_us": got["server_cpu_s"] / n * 1e6}
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
