"""What gRPC messages cost, the floor under every round of a protocol (README "Performance").

Every process runs the nodes' own Peer.Stream service with mutual TLS, the certificates `mpc`
issues, the nodes' channel and server options, and the event loop `mpc` runs (mpc/aio.py); each
message is one StreamMessage with a 16-byte payload (what one Beaver round of a single comparison
sends). Three patterns:

- ping-pong (default): two processes; the client writes one message and the server answers it with
  one StreamRefusal before the next. Reported: wall time per round trip, and each process's CPU
  (utime + stime, every thread) per round trip.
- `--mesh N`: N processes, each a server with a stream to every other, as nodes are. A round is
  one message from every process to every other, each process going on once it has that round's
  message from each peer; rounds come in bursts of `--burst` (8: a vote's rounds) with `--pause-ms`
  between bursts (a vote's start and end, and the idle time between votes). Reported: wall time per
  burst (the slowest process's), and each process's CPU per burst: what a vote's messages cost with
  nothing else done.
- `--fanout N`: one client and N servers; a session writes one message to every server and waits
  for the N answers, then pauses `--pause-ms`: a one-round sum's traffic (the coordinator's Run to
  every node and each node's share back). Reported: wall time per session, and the client's and
  the servers' CPU per session.

The CPU of the mesh and the fan-out is counted over the whole timed run, pauses included (an idle
process spends next to nothing in them); `--pause-ms 0` runs the bursts or sessions back to back.

    .venv/bin/python benchmarks/grpc_floor.py [--messages 3000]
    .venv/bin/python benchmarks/grpc_floor.py --mesh 3 [--messages 300] [--burst 8] [--pause-ms 20]
    .venv/bin/python benchmarks/grpc_floor.py --fanout 4 [--messages 1000] [--pause-ms 5]   # make bench: 0

(`--messages` counts round trips, bursts or sessions.)
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
from mpc.transport.tls import SERVER_OPTIONS, TlsMaterial, channel_options  # noqa: E402
from mpc.v1 import mpc_pb2, mpc_pb2_grpc  # noqa: E402

PAYLOAD = b"\x5a" * 16
TIMEOUT_S = 120.0   # for any one wait: a start, an answer, a round's messages
NAMES = ("alice", "bob", "carlos", "david", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory")
HEADER = mpc_pb2.PeerHeader(session_id="0" * 32, step="cmp/ks/0", sender="bench", payload_bytes=len(PAYLOAD))
WARM_UP = 200   # round trips, or rounds of a burst, before the clock starts: TLS, HTTP/2 windows, code paths


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


class _Sink(mpc_pb2_grpc.PeerServicer):
    """A mesh party's inbox: counts the messages of each round (their seq) from each sender,
    answering nothing."""

    def __init__(self) -> None:
        self.arrived: dict[int, set[str]] = {}
        self.changed = asyncio.Event()
        self.error: str | None = None   # a message the mesh cannot have sent (a repeated round)

    async def Stream(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for message in request_iterator:
            senders = self.arrived.setdefault(message.seq, set())
            if message.header.sender in senders:
                self.error = f"a second message of round {message.seq} from {message.header.sender}"
            senders.add(message.header.sender)
            self.changed.set()
        for _ in ():   # an answer stream with no answers
            yield mpc_pb2.StreamRefusal()

    async def take(self, seq: int, peers: set[str]) -> None:
        """Wait (at most TIMEOUT_S) until every peer's message of round `seq` is in; later rounds may
        already be. Raises: RuntimeError for a message the mesh cannot have sent."""
        async with asyncio.timeout(TIMEOUT_S):
            while self.arrived.get(seq, set()) != peers and self.error is None:
                self.changed.clear()
                await self.changed.wait()
        if self.error is not None:
            raise RuntimeError(self.error)
        del self.arrived[seq]


def _tls(cluster_file: Path, name: str) -> TlsMaterial:
    cluster = load_cluster(cluster_file)
    node = cluster.node(name)
    return TlsMaterial.load(cluster.ca, node.cert, node.key)


async def _start_server(cluster_file: Path, name: str, servicer: Any, port_file: Path) -> grpc.aio.Server:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    mpc_pb2_grpc.add_PeerServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", _tls(cluster_file, name).server_credentials())
    await server.start()
    port_file.write_text(str(port))
    return server


def _channel(cluster_file: Path, me: str, to: str, port: int) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", _tls(cluster_file, me).channel_credentials(),
                                   options=channel_options(to))


async def _wait_ports(workdir: Path, names: list[str]) -> dict[str, int]:
    """The port each named process listens on, once all have written theirs."""
    deadline = time.monotonic() + 60
    while True:
        files = {n: workdir / f"port-{n}" for n in names}
        if all(f.exists() and f.read_text() for f in files.values()):
            return {n: int(f.read_text()) for n, f in files.items()}
        if time.monotonic() > deadline:
            raise RuntimeError("a process did not start")
        await asyncio.sleep(0.02)


async def _serve(cluster_file: Path, name: str, workdir: Path) -> None:
    server = await _start_server(cluster_file, name, _Echo(), workdir / f"port-{name}")
    await server.wait_for_termination()


def _loop_name() -> str:
    loop = type(asyncio.get_running_loop())
    return f"{loop.__module__}.{loop.__qualname__}"


async def _ping(cluster_file: Path, workdir: Path, messages: int, server_pid: int) -> dict[str, Any]:
    port = (await _wait_ports(workdir, ["alice"]))["alice"]
    async with _channel(cluster_file, "bob", "alice", port) as channel:
        call = mpc_pb2_grpc.PeerStub(channel).Stream(timeout=TIMEOUT_S + messages)

        answered = 0

        async def round_trips(n: int) -> None:
            nonlocal answered
            for seq in range(n):
                await call.write(mpc_pb2.StreamMessage(seq=seq, header=HEADER, payload=PAYLOAD))
                answer = await call.read()
                if answer.seq != seq:
                    raise RuntimeError(f"answer {answer.seq} to message {seq}")
                answered += 1

        async def watched(n: int) -> None:
            """round_trips, failed once TIMEOUT_S pass with no answer (a watchdog, not a timer per
            read: the floor measured carries nothing but the messages)."""
            run = asyncio.ensure_future(round_trips(n))
            seen, since = -1, time.monotonic()
            while not run.done():
                await asyncio.wait({run}, timeout=1.0)
                if answered != seen:
                    seen, since = answered, time.monotonic()
                elif time.monotonic() - since > TIMEOUT_S:
                    run.cancel()
                    raise TimeoutError(f"no answer in {TIMEOUT_S:.0f} s after {answered} round trips")
            run.result()
        await watched(WARM_UP)
        start, cpu, server_cpu = time.perf_counter(), _cpu_s(), _cpu_s(server_pid)
        await watched(messages)
        wall, cpu, server_cpu = time.perf_counter() - start, _cpu_s() - cpu, _cpu_s(server_pid) - server_cpu
        await call.done_writing()
    return {"messages": messages, "event_loop": _loop_name(), "round_trip_us": wall / messages * 1e6,
            "client_cpu_per_round_trip_us": cpu / messages * 1e6,
            "server_cpu_per_round_trip_us": server_cpu / messages * 1e6}


async def _fanout(cluster_file: Path, workdir: Path, servers: list[str], sessions: int, pause_s: float,
                  pids: list[int]) -> dict[str, Any]:
    ports = await _wait_ports(workdir, servers)
    me = NAMES[len(servers)]
    channels = [_channel(cluster_file, me, name, ports[name]) for name in servers]
    try:
        calls = [mpc_pb2_grpc.PeerStub(c).Stream(timeout=TIMEOUT_S + sessions * (pause_s + 1.0)) for c in channels]

        async def one(call: Any, seq: int) -> None:
            await call.write(mpc_pb2.StreamMessage(seq=seq, header=HEADER, payload=PAYLOAD))
            if (await call.read()).seq != seq:
                raise RuntimeError(f"a wrong answer to message {seq}")

        async def run(first: int, n: int, pause: float) -> float:
            busy = 0.0
            for seq in range(first, first + n):
                start = time.perf_counter()
                await asyncio.wait_for(asyncio.gather(*(one(call, seq) for call in calls)), TIMEOUT_S)
                busy += time.perf_counter() - start
                if pause:
                    await asyncio.sleep(pause)
            return busy
        await run(0, WARM_UP, 0.0)
        cpu, server_cpu = _cpu_s(), [_cpu_s(p) for p in pids]
        wall = await run(WARM_UP, sessions, pause_s)
        cpu, server_cpu = _cpu_s() - cpu, [_cpu_s(p) - c for p, c in zip(pids, server_cpu)]
        for call in calls:
            await call.done_writing()
    finally:
        for channel in channels:
            await channel.close()
    return {"fanout": len(servers), "sessions": sessions, "pause_ms": pause_s * 1e3, "event_loop": _loop_name(),
            "session_us": wall / sessions * 1e6, "client_cpu_per_session_us": cpu / sessions * 1e6,
            "server_cpu_per_session_us": [c / sessions * 1e6 for c in server_cpu]}


async def _party(cluster_file: Path, me: str, names: list[str], workdir: Path, bursts: int, burst: int,
                 pause_s: float) -> None:
    """One process of the mesh: its server, a stream to every other, then the timed bursts; writes
    [wall seconds of the bursts, CPU seconds over the bursts and the pauses between them, its event
    loop] to result-<me>. A round ends for a process once it has every peer's message of that round."""
    inbox = _Sink()
    server = await _start_server(cluster_file, me, inbox, workdir / f"port-{me}")
    peers = [n for n in names if n != me]
    ports = await _wait_ports(workdir, peers)
    channels = [_channel(cluster_file, me, peer, ports[peer]) for peer in peers]
    lifetime = TIMEOUT_S + bursts * (pause_s + 1.0)
    calls = [mpc_pb2_grpc.PeerStub(c).Stream(timeout=lifetime) for c in channels]
    header = mpc_pb2.PeerHeader(session_id="0" * 32, step="cmp/ks/0", sender=me, payload_bytes=len(PAYLOAD))

    async def rounds(first: int, n: int) -> None:
        for seq in range(first, first + n):
            for call in calls:
                await call.write(mpc_pb2.StreamMessage(seq=seq, header=header, payload=PAYLOAD))
            await inbox.take(seq, set(peers))

    await rounds(0, WARM_UP)
    busy, cpu = 0.0, _cpu_s()
    for b in range(bursts):
        start = time.perf_counter()
        await rounds(WARM_UP + b * burst, burst)
        busy += time.perf_counter() - start
        await asyncio.sleep(pause_s)
    cpu = _cpu_s() - cpu
    (workdir / f"result-{me}").write_text(json.dumps([busy, cpu, _loop_name()]))
    await asyncio.sleep(0.5)   # the others' last rounds still read from us
    for call in calls:
        await call.done_writing()
    for channel in channels:
        await channel.close()
    await server.stop(1)


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop our processes: SIGTERM, then SIGKILL for any still running after 10 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None,
                        help="round trips (default 3000), bursts (--mesh, 300) or sessions (--fanout, 1000)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--mesh", type=int, metavar="N", help="N processes, all to all, in bursts of rounds")
    group.add_argument("--fanout", type=int, metavar="N", help="one client, N servers, one message each per session")
    parser.add_argument("--burst", type=int, default=8, help="rounds per burst (--mesh)")
    parser.add_argument("--pause-ms", type=float, default=None, help="pause between bursts or sessions "
                        "(default 20 for --mesh, 5 for --fanout)")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--party", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        aio.run(_serve(Path(args.serve[0]), args.serve[1], Path(args.serve[0]).parent))
        return 0
    if args.party:
        cluster_file, me, names, workdir, bursts, burst, pause = args.party
        aio.run(_party(Path(cluster_file), me, names.split(","), Path(workdir), int(bursts), int(burst), float(pause)))
        return 0
    most = len(NAMES) - 1
    if args.mesh is not None and not 2 <= args.mesh <= most:
        parser.error(f"--mesh takes 2 to {most} processes, got {args.mesh}")
    if args.fanout is not None and not 1 <= args.fanout <= most:
        parser.error(f"--fanout takes 1 to {most} servers, got {args.fanout}")
    for flag, value in (("--burst", args.burst), ("--messages", args.messages)):
        if value is not None and value < 1:
            parser.error(f"{flag} takes at least 1, got {value}")
    if args.pause_ms is not None and args.pause_ms < 0:
        parser.error(f"--pause-ms takes 0 or more, got {args.pause_ms}")
    parties = args.mesh or args.fanout or 1
    with tempfile.TemporaryDirectory(prefix="mpc-grpc-floor-") as tmp:
        work = Path(tmp)
        names = list(NAMES[:parties + 1])
        cluster_file = write_local_cluster(work, names)
        if args.mesh is not None:
            bursts = args.messages or 300
            pause = (20.0 if args.pause_ms is None else args.pause_ms) / 1e3
            mesh = names[:parties]
            procs = [_spawn("--party", str(cluster_file), me, ",".join(mesh), str(work), str(bursts), str(args.burst),
                            str(pause)) for me in mesh]
            deadline = time.monotonic() + 2 * TIMEOUT_S + bursts * (pause + 1.0)
            try:
                for proc in procs:
                    if proc.wait(max(0.0, deadline - time.monotonic())) != 0:
                        raise RuntimeError("a mesh process failed")
            finally:
                _stop(procs)
            results = [json.loads((work / f"result-{me}").read_text()) for me in mesh]
            row: dict[str, Any] = {
                "mesh": parties, "bursts": bursts, "rounds_per_burst": args.burst, "pause_ms": pause * 1e3,
                "event_loop": results[0][2],
                "burst_us": max(r[0] for r in results) / bursts * 1e6,
                "cpu_per_burst_us": [r[1] / bursts * 1e6 for r in results],
                "cpu_per_message_sent_and_received_us": [r[1] / bursts / args.burst / (parties - 1) * 1e6
                                                         for r in results]}
        else:
            servers = names[:parties]
            procs = [_spawn("--serve", str(cluster_file), name) for name in servers]
            try:
                if args.fanout is not None:
                    row = aio.run(_fanout(cluster_file, work, servers, args.messages or 1000,
                                          (5.0 if args.pause_ms is None else args.pause_ms) / 1e3,
                                          [p.pid for p in procs]))
                else:
                    row = aio.run(_ping(cluster_file, work, args.messages or 3000, procs[0].pid))
            finally:
                _stop(procs)
    print(json.dumps({k: (round(v, 1) if isinstance(v, float) else [round(x, 1) for x in v] if isinstance(v, list)
                          else v) for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
