"""The coordinator: prepare a session on every node, collect one output share from each, add.

The coordinator holds nothing persistent but its certificate. It never sees an input, an
input share or a seed: each node sends it exactly one output share, uniformly random on its
own (PROTOCOLS.md §1), and only the sum of all of them means anything.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mpc.config import ClusterConfig
from mpc.encoding import decode_ratio, decode_value
from mpc.errors import MpcError, PeerUnavailable, SessionFailed
from mpc.ring import Words, to_signed, words_from_bytes
from mpc.transport.peers import Channels, describe_rpc_error, is_name_mismatch, is_unreachable
from mpc.transport.tls import TlsMaterial
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

# How long after the session deadline the coordinator still waits for a node's own answer
# (which names the peer it waited for) before it gives up on the node itself.
COMPUTE_GRACE_S = 1.0
# Observer of what the coordinator receives: (session, node, share bytes of one chunk).
ShareObserver = Callable[[str, str, bytes], None]
Number = int | float
# After the first failed call of a session phase, how long the other calls may still end on
# their own (so that the error names every node at fault) before they are cancelled.
FAILURE_GRACE_S = 0.5


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """How far a session has got, as the coordinator sees it: sizes and counts only."""

    session_id: str
    phase: str                # "prepare" or "compute"
    nodes: int
    nodes_done: int           # nodes whose whole output share has arrived
    share_bytes: int          # output-share bytes received so far
    share_bytes_total: int
    peer_bytes: int           # bytes the nodes have sent each other so far (their latest reports)
    peer_messages: int        # messages the nodes have sent and received so far


ProgressCallback = Callable[[ProgressReport], None]


@dataclass(eq=False)
class _Tracker:
    """Collects progress from the nodes of one session and reports it."""

    session_id: str
    nodes: int
    report: ProgressCallback
    share_bytes_total: int = 0
    phase: str = "prepare"
    done: set[str] = field(default_factory=set)
    share_bytes: int = 0
    peers: dict[str, tuple[int, int]] = field(default_factory=dict)

    def emit(self) -> None:
        self.report(ProgressReport(self.session_id, self.phase, self.nodes, len(self.done), self.share_bytes,
                                   self.share_bytes_total, sum(b for b, _ in self.peers.values()),
                                   sum(m for _, m in self.peers.values())))


@dataclass(frozen=True, slots=True)
class Opened:
    """The opened total of a session, before interpretation."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    total: Words              # sum of the output shares, mod 2^64
    frac_bits: int
    is_scalar: bool


@dataclass(frozen=True, slots=True)
class SumResult:
    """A secure sum: a number for scalar inputs, else a list."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    value: Number | list[Number]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes), "sum": self.value}


@dataclass(frozen=True, slots=True)
class AverageResult:
    """A secure average and what it reveals: the sum(s) and the record count."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    mode: str
    average: float | list[float]
    total: Number | list[Number]
    count: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes), "mode": self.mode,
                "average": self.average, "sum": self.total, "count": self.count}


@dataclass(frozen=True, slots=True)
class VoteResult:
    """The outcome of a vote: only whether it passed, and the rule it was judged by."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    passed: bool
    rule: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                "result": "YES" if self.passed else "NO", "rule": self.rule}


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """[elementwise sum >= k] for every element: the bits, nothing else."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    threshold: int
    bits: list[bool]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                "threshold": self.threshold, "at_least": [int(b) for b in self.bits]}


@dataclass(frozen=True, slots=True)
class InputStatus:
    """What a node shows of one input: public metadata only (a ballot input's length is hidden)."""

    name: str
    length: int | None        # None: secret (ballots)
    frac_bits: int
    scalar: bool
    version: int
    kind: str
    bounds: tuple[Number, Number] | None   # decoded; None: declared by no one (an older mpc's input)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "length": self.length, "frac_bits": self.frac_bits, "scalar": self.scalar,
                "version": self.version, "kind": self.kind,
                "bounds": None if self.bounds is None else list(self.bounds)}


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's answer to Status, or why it gave none."""

    name: str
    address: str
    healthy: bool
    version: str = ""
    inputs: tuple[InputStatus, ...] = ()
    active_sessions: int = 0
    cert_not_after: str = ""
    error: str = ""
    health: str = ""          # the gRPC health service's answer: SERVING, NOT_SERVING, or UNREACHABLE

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"node": self.name, "address": self.address, "healthy": self.healthy, "health": self.health,
                "version": self.version,
                "inputs": [i.as_dict() for i in self.inputs],
                "active_sessions": self.active_sessions, "cert_not_after": self.cert_not_after, "error": self.error}


class Coordinator:
    """Runs computations over the nodes of a cluster file (use as an async context manager)."""

    def __init__(self, cluster: ClusterConfig, *, observer: ShareObserver | None = None,
                 nodes: Sequence[str] | None = None, progress: ProgressCallback | None = None) -> None:
        """Args:
            observer: sees every share chunk received (tests).
            nodes: the participants (default: every node of the cluster file, in order).
            progress: called as a session advances (the nodes then also report how much they
                have exchanged, about every 0.25 s).
        """
        me = cluster.require_coordinator()
        self.cluster = cluster
        self.nodes = tuple(nodes) if nodes is not None else tuple(cluster.nodes)
        for name in self.nodes:
            cluster.node(name)
        self.channels = Channels(cluster, TlsMaterial.load(cluster.ca, me.cert, me.key))
        self.observer = observer
        self.progress = progress

    async def __aenter__(self) -> "Coordinator":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels to the nodes."""
        await self.channels.close()

    def _stub(self, name: str) -> mpc_pb2_grpc.ControlStub:
        return mpc_pb2_grpc.ControlStub(self.channels.channel(name))

    def _explain(self, name: str, exc: BaseException) -> str:
        if isinstance(exc, grpc.aio.AioRpcError):
            return describe_rpc_error(self.cluster.node(name), exc)
        if isinstance(exc, MpcError):
            return str(exc)
        return f"node {name}: {type(exc).__name__}: {exc}"

    async def _abort_all(self, session_id: str, reason: str, skip: frozenset[str] = frozenset()) -> None:
        async def abort(name: str) -> None:
            try:
                await self._stub(name).Abort(mpc_pb2.AbortRequest(session_id=session_id, reason=reason),
                                             timeout=self.cluster.connect_timeout_s)
            except grpc.aio.AioRpcError:
                pass  # the node is down or never had the session; its deadline drops it anyway
        await asyncio.gather(*(abort(n) for n in self.nodes if n not in skip))

    async def _gather(self, session_id: str, calls: dict[str, Any]) -> dict[str, Any]:
        """Await one call per node; on any failure abort the session everywhere and raise."""
        tasks = {n: asyncio.ensure_future(c) for n, c in calls.items()}
        try:
            _, pending = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
            if pending:
                # Failures with one cause come together: give them a moment, to name them all.
                await asyncio.wait(pending, timeout=FAILURE_GRACE_S)
        finally:
            # Calls still running are cancelled: a node drops a session whose Compute call goes
            # away at once, instead of waiting for a lost peer until the session's deadline.
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        failures = [(n, t.exception()) for n, t in tasks.items() if not t.cancelled() and t.exception() is not None]
        if not failures:
            return {n: t.result() for n, t in tasks.items()}
        for _, r in failures:
            if not isinstance(r, (grpc.aio.AioRpcError, MpcError, asyncio.TimeoutError)):
                raise r  # type: ignore[misc]
        reasons = "; ".join(self._explain(n, r) for n, r in failures if r is not None)
        # A node that did not answer would not answer an Abort either: do not wait for it twice;
        # a node whose call was cancelled has dropped the session already (or is hung).
        cancelled = frozenset(n for n, t in tasks.items() if t.cancelled())
        silent = cancelled | frozenset(n for n, r in failures if is_unreachable(r))
        await self._abort_all(session_id, reasons, skip=silent)
        unreachable = all(is_unreachable(r) for _, r in failures)
        cls = PeerUnavailable if unreachable else SessionFailed
        raise cls(f"session {session_id} failed, nothing was revealed: {reasons}")

    async def _collect(self, session_id: str, name: str, frac_bits: int, length: int, versions: dict[str, int],
                       total: Words, timeout: float, xor: bool, tracker: _Tracker | None) -> None:
        """Stream one node's output share and add (or, for bit shares, XOR) it into `total`."""
        call = self._stub(name).Compute(mpc_pb2.ComputeRequest(session_id=session_id, frac_bits=frac_bits,
                                                               length=length, progress=tracker is not None,
                                                               input_versions=versions),
                                        timeout=timeout)
        expected = 0
        async for chunk in call:
            if chunk.HasField("progress"):
                if chunk.session_id != session_id or chunk.node != name or chunk.words or expected:
                    raise SessionFailed(f"node {name} sent a malformed progress report")
                if tracker is not None:
                    p = chunk.progress
                    tracker.peers[name] = (p.peer_bytes_sent, p.peer_messages)
                    tracker.emit()
                continue
            if chunk.session_id != session_id or chunk.node != name or chunk.total_length != length:
                raise SessionFailed(f"node {name} sent a share chunk for another session, node or length")
            if chunk.offset != expected:
                raise SessionFailed(f"node {name} sent share words from {chunk.offset}, expected {expected}")
            try:
                words = words_from_bytes(chunk.words)
            except ValueError as exc:
                raise SessionFailed(f"node {name} sent a malformed share chunk: {exc}") from None
            if words.size == 0 or expected + words.size > length:
                raise SessionFailed(f"node {name} sent {expected + words.size} share words, expected {length}")
            if self.observer is not None:
                self.observer(session_id, name, chunk.words)
            if xor:
                total[expected:expected + words.size] ^= words
            else:
                total[expected:expected + words.size] += words
            expected += words.size
            if tracker is not None:
                tracker.share_bytes += len(chunk.words)
                if expected == length:
                    tracker.done.add(name)
                tracker.emit()
        if expected != length:
            raise SessionFailed(f"node {name} sent {expected} share words, expected {length}")

    async def open(self, protocol: int, input_name: str, *, average_mode: int = mpc_pb2.AVERAGE_MODE_RECORDS,
                   threshold: int | None = None, timeout_s: float | None = None) -> Opened:
        """Run one session over all nodes and add up the output shares.

        Returns: the opened total.
        Raises: PeerUnavailable naming the nodes that could not be reached; SessionFailed
        naming the node and cause otherwise (input missing, lengths differ, policy, ...).
        In every failure the session is aborted at every node before anything is opened.
        """
        session_id = secrets.token_hex(16)
        timeout = timeout_s or self.cluster.session_timeout_s
        request = mpc_pb2.PrepareRequest(session_id=session_id, protocol=protocol, input_name=input_name,  # type: ignore[arg-type]
                                         participants=self.nodes, timeout_ms=int(timeout * 1000),
                                         average_mode=average_mode, threshold=threshold)  # type: ignore[arg-type]
        connect = self.cluster.connect_timeout_s
        tracker = None if self.progress is None else _Tracker(session_id, len(self.nodes), self.progress)
        if tracker is not None:
            tracker.emit()
        prepared: dict[str, mpc_pb2.PrepareReply] = await self._gather(
            session_id, {n: self._stub(n).Prepare(request, timeout=connect) for n in self.nodes})
        lengths = {n: r.length for n, r in prepared.items()}
        if len(set(lengths.values())) != 1:
            await self._abort_all(session_id, "input lengths differ")
            shown = ", ".join(f"{n} {ln}" for n, ln in lengths.items())
            raise SessionFailed(f"session {session_id}: input {input_name!r} has different lengths at the nodes "
                                f"({shown} words); nothing was shared")
        scalars = sorted(n for n, r in prepared.items() if r.is_scalar)
        if scalars and len(scalars) != len(prepared):
            await self._abort_all(session_id, "scalar and vector inputs mixed")
            vectors = sorted(set(prepared) - set(scalars))
            raise SessionFailed(f"session {session_id}: input {input_name!r} is a scalar at {', '.join(scalars)} "
                                f"but a vector at {', '.join(vectors)}; nothing was shared")
        length = next(iter(lengths.values()))
        frac_bits = max(r.frac_bits for r in prepared.values())
        versions = {n: r.input_version for n, r in prepared.items()}
        total = np.zeros(length, dtype=np.uint64)
        xor = protocol in (mpc_pb2.PROTOCOL_VOTE, mpc_pb2.PROTOCOL_THRESHOLD)
        if tracker is not None:
            tracker.phase, tracker.share_bytes_total = "compute", 8 * length * len(self.nodes)
            tracker.emit()
        # The nodes end the session at `timeout` themselves and say whom they waited for; our own
        # deadline comes a little later, so that their answer is what the caller sees.
        await self._gather(session_id, {n: self._collect(session_id, n, frac_bits, length, versions, total,
                                                         timeout + COMPUTE_GRACE_S, xor, tracker)
                                        for n in self.nodes})
        return Opened(session_id, input_name, self.nodes, total, frac_bits,
                      all(r.is_scalar for r in prepared.values()))

    async def sum(self, input_name: str, *, timeout_s: float | None = None) -> SumResult:
        """Secure sum of `input_name` over all nodes (elementwise for vectors).

        Returns: the sum. Raises: as `open`.
        """
        opened = await self.open(mpc_pb2.PROTOCOL_SUM, input_name, timeout_s=timeout_s)
        values = [decode_value(int(w), opened.frac_bits) for w in to_signed(opened.total)]
        return SumResult(opened.session_id, input_name, opened.nodes, values[0] if opened.is_scalar else values)

    async def average(self, input_name: str, *, elementwise: bool = False,
                      timeout_s: float | None = None) -> AverageResult:
        """Secure average: sum of values and of record counts, opened together (both revealed).

        Returns: the average with the revealed sum and count. Raises: as `open`.
        """
        mode = mpc_pb2.AVERAGE_MODE_ELEMENTWISE if elementwise else mpc_pb2.AVERAGE_MODE_RECORDS
        opened = await self.open(mpc_pb2.PROTOCOL_AVERAGE, input_name, average_mode=mode, timeout_s=timeout_s)
        signed = [int(w) for w in to_signed(opened.total)]
        sums, count = signed[:-1], signed[-1]
        f = opened.frac_bits
        averages = [decode_ratio(s, count, f) for s in sums]
        totals = [decode_value(s, f) for s in sums]
        if elementwise:
            return AverageResult(opened.session_id, input_name, opened.nodes, "elementwise", averages, totals, count)
        return AverageResult(opened.session_id, input_name, opened.nodes, "records", averages[0], totals[0], count)

    async def vote(self, input_name: str, *, threshold: int | None = None,
                   timeout_s: float | None = None) -> VoteResult:
        """Threshold vote over the ballots stored as `input_name`: only YES/NO is opened.

        Without a threshold the rule is "at least half of the ballots cast" (2T >= N, neither T
        nor N is opened); with one it is T >= threshold.

        Returns: the result. Raises: as `open`.
        """
        opened = await self.open(mpc_pb2.PROTOCOL_VOTE, input_name, threshold=threshold, timeout_s=timeout_s)
        rule = "at least half of the ballots cast" if threshold is None else f"at least {threshold} yes ballots"
        return VoteResult(opened.session_id, input_name, opened.nodes, bool(int(opened.total[0]) & 1), rule)

    async def at_least(self, input_name: str, threshold: int, *, timeout_s: float | None = None) -> ThresholdResult:
        """Batched [sum over nodes >= threshold] for every element of a vector input.

        Returns: one bit per element (the sums stay secret). Raises: as `open`.
        """
        opened = await self.open(mpc_pb2.PROTOCOL_THRESHOLD, input_name, threshold=threshold, timeout_s=timeout_s)
        return ThresholdResult(opened.session_id, input_name, opened.nodes, threshold,
                               [bool(int(w) & 1) for w in opened.total])

    async def status(self) -> list[NodeStatus]:
        """Ask every node for its status (a down node is reported, not raised).

        Returns: one NodeStatus per node, in cluster order.
        """
        async def one(name: str) -> NodeStatus:
            node = self.cluster.node(name)
            timeout = self.cluster.connect_timeout_s
            try:
                health = await health_pb2_grpc.HealthStub(self.channels.channel(name)).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout)
                serving = health.status == health_pb2.HealthCheckResponse.SERVING
                if not serving:  # e.g. shutting down: it answers, but takes no new sessions
                    return NodeStatus(name, node.address, False, health=health_pb2.HealthCheckResponse.ServingStatus
                                      .Name(health.status), error=f"node {name} at {node.address} is not serving")
                r = await self._stub(name).Status(mpc_pb2.StatusRequest(), timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                health = "WRONG IDENTITY" if is_name_mismatch(exc) else "UNREACHABLE"
                return NodeStatus(name, node.address, False, health=health, error=describe_rpc_error(node, exc))
            inputs = tuple(InputStatus(i.name, None if i.kind == "ballots" else i.length, i.frac_bits, i.is_scalar,
                                       i.version, i.kind or "number",
                                       (decode_value(i.lo, i.frac_bits), decode_value(i.hi, i.frac_bits))
                                       if i.bounded else None)
                           for i in r.inputs)
            return NodeStatus(name, node.address, True, r.version, inputs, r.active_sessions, r.cert_not_after,
                              health="SERVING")
        return list(await asyncio.gather(*(one(n) for n in self.nodes)))
