"""Contributors: submit values to a collection without running a node (DESIGN.md §12).

The seed's protocol, with the nodes as share holders: a contributor splits each value into one
additive share per node, mod 2^64, from the CSPRNG, and sends each node its share over TLS that
authenticates the node (its certificate from the cluster CA, its identity name checked in the
handshake, as every mpc client does). The contributor authenticates itself with a credential
from the collection's owner (mpc/credentials.py). All shares of one submission carry the same
fresh nonce, so that the nodes can tell a complete submission (stored at every node with that
nonce) from a partial one, which is never counted.

    async with Contributor(load_cluster("cluster.toml")) as c:
        report = await c.submit("poll", credential, [1])
        assert report.accepted

A submission is accepted when every node stored its share; `SubmitReport` names the nodes that
did not, and why. `submit_many` sends batches (one call per node per batch) for load generators
and bulk jobs. A value outside the collection's range is refused here, before anything is sent:
an honest contributor never sends one (the nodes check validity inside MPC regardless).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import TracebackType

import grpc
import numpy as np

from mpc.config import ClusterConfig, NodeConfig
from mpc.credentials import credential_id, parse_credential
from mpc.errors import ConfigError, InputError, SessionFailed, quoted
from mpc.prg import SEED_BYTES, AesCtrRng, Rng, SystemRng, derive_key
from mpc.ring import Words
from mpc.store import CollectionSpec
from mpc.transport.peers import describe_rpc_error, is_unreachable
from mpc.transport.tls import MAX_MESSAGE_BYTES, channel_options, contributor_channel_credentials
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

NONCE_BYTES = 16
BATCH = 5_000             # submissions per call in submit_many (the node takes at most 10,000)
CALL_BYTES = 3 * MAX_MESSAGE_BYTES // 4   # and at most this much of them: a message may take 4 MiB
SUBMISSION_OVERHEAD = 16  # protobuf's tags and lengths per submission, generously


@dataclass(frozen=True, slots=True)
class NodeResult:
    """What one node said of one submission."""

    node: str
    stored: bool
    replaced: bool = False
    code: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class SubmitReport:
    """One submission's outcome: accepted only if every node stored its share."""

    collection: str
    credential: str                      # the credential id's first 8 hex digits (never the token)
    nodes: tuple[NodeResult, ...]

    @property
    def accepted(self) -> bool:
        """Every node stored its share: the submission is complete."""
        return bool(self.nodes) and all(r.stored for r in self.nodes)

    @property
    def replaced(self) -> bool:
        """It replaced this credential's earlier submission (at every node)."""
        return self.accepted and all(r.replaced for r in self.nodes)

    def problem(self) -> str:
        """Why it was not accepted, naming each node that did not store its share ("" if accepted)."""
        return "; ".join(f"node {r.node}: {r.error or r.code}" for r in self.nodes if not r.stored)


def split(values: Words, parties: int, rng: Rng | None = None) -> list[Words]:
    """Additive shares mod 2^64 of `values` (any shape) for `parties` nodes, from os.urandom (or
    `rng`): the first parties - 1 uniformly random, the last the difference.

    Returns: one array per node, each of the values' shape.
    """
    if parties < 1:
        raise InputError("a submission needs at least one node")
    shape = values.shape
    draw = (rng or SystemRng()).random_bytes(8 * values.size * (parties - 1))
    random = np.frombuffer(draw, dtype="<u8").astype(np.uint64)
    shares = list(random.reshape((parties - 1, *shape))) if parties > 1 else []
    last = values.astype(np.uint64, copy=True)
    for share in shares:
        last -= share
    return [*shares, last]


def from_seed(seed: bytes, values: Words, parties: int) -> tuple[bytes, list[Words]]:
    """A submission's nonce and shares, derived from a secret 16-byte seed (AES-CTR under HKDF of it):
    the same seed and values give the same submission, so a contributor who keeps the seed until every
    node has stored its share can resume a partial submission later, without it counting twice.

    Returns: (nonce, one share array per node).
    """
    rng = AesCtrRng(derive_key(seed, b"submission"))
    nonce = rng.random_bytes(NONCE_BYTES)
    return nonce, split(values, parties, rng)


def values_per_submission(spec: CollectionSpec) -> int:
    """How many values a contributor gives: one option index for an option collection, else its length."""
    return 1 if spec.kind == "option" else spec.length


def encode(spec: CollectionSpec, values: Sequence[int] | np.ndarray, where: str) -> Words:
    """A contribution's values as ring words, after checking them against the collection's rule. An
    option collection takes one option index per submission and sends it one-hot.

    Returns: a (..., length) uint64 array.
    Raises: InputError naming `where` for the wrong count or a value outside [lo, hi] (an index
    outside the options).
    """
    try:
        v = np.asarray(values, dtype=np.int64)
    except (OverflowError, ValueError, TypeError):
        raise InputError(f"{where}: values must be integers") from None
    given = values_per_submission(spec)
    if v.shape[-1:] != (given,):
        raise InputError(f"{where}: collection {spec.name!r} takes {given} value(s) per submission, got "
                         f"{v.shape[-1] if v.ndim else 0}")
    lo, hi = (0, spec.length - 1) if spec.kind == "option" else (spec.lo, spec.hi)
    bad = (v < lo) | (v > hi)
    if bad.any():
        rule = {"ballot": "a ballot is 0 or 1", "option": f"an option is an index 0..{hi}"}.get(
            spec.kind, f"values lie in [{lo}, {hi}]")
        first = "" if v.ndim < 2 else f" (the first in submission {int(np.flatnonzero(bad.any(axis=-1))[0]) + 1})"
        raise InputError(f"{where}: {int(bad.sum())} value(s) outside collection {spec.name!r}'s rule{first}: {rule}")
    if spec.kind == "option":   # one-hot: a 1 at the option's index
        one_hot: Words = np.equal(v, np.arange(spec.length, dtype=np.int64)).astype(np.uint64)
        return one_hot
    return v.astype(np.uint64)


class Contributor:
    """Submits to a collection at every node of the cluster that takes submissions."""

    def __init__(self, cluster: ClusterConfig, *, timeout: float = 30.0) -> None:
        """Raises: ConfigError if no node of the cluster has a `submit` address."""
        self.cluster = cluster
        self.timeout = timeout
        # Each node as a contributor reaches it: at its submission address (which errors then name).
        self.nodes: tuple[NodeConfig, ...] = tuple(replace(n, address=n.submit) for n in cluster.nodes.values()
                                                   if n.submit is not None)
        if not self.nodes:
            raise ConfigError(f"{cluster.path}: no node has a `submit` address; contributors cannot reach any")
        credentials = contributor_channel_credentials(cluster.ca)
        self._channels = {n.name: grpc.aio.secure_channel(n.submit or "", credentials, options=channel_options(n.name))
                          for n in self.nodes}
        self._stubs = {name: mpc_pb2_grpc.SubmitStub(ch) for name, ch in self._channels.items()}
        self._specs: dict[str, CollectionSpec] = {}

    async def __aenter__(self) -> Contributor:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    def _failure(self, node: NodeConfig, exc: grpc.aio.AioRpcError) -> SessionFailed:
        return SessionFailed(describe_rpc_error(node, exc))

    async def describe(self, collection: str) -> CollectionSpec:
        """The collection's spec, the same at every node that answers (cached for this Contributor).

        A node that cannot be reached is left out here (its shares are still sent, and retried, by
        the submissions, whose reports then name it), and so is one that holds no such collection
        if the collection does not name it (a collection held by some of the cluster's nodes); one
        that answers must hold the same spec.
        Raises: SessionFailed naming a node that has no such collection, or if no node answers;
        InputError if the nodes' specs differ (nothing is then submitted).
        """
        cached = self._specs.get(collection)
        if cached is not None:
            return cached

        absent: dict[str, SessionFailed] = {}   # nodes that hold no such collection: fine if it names others only

        async def one(node: NodeConfig) -> CollectionSpec | None:
            try:
                r = await self._stubs[node.name].Describe(mpc_pb2.CollectionRequest(collection=collection),
                                                          timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if is_unreachable(exc):
                    return None
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    absent[node.name] = self._failure(node, exc)
                    return None
                raise self._failure(node, exc) from None
            return CollectionSpec(r.name, r.kind, r.lo, r.hi, r.length, r.min_batch, r.resubmit, bytes(r.owner_key),
                                  tuple(r.nodes))
        answers = [(n, spec) for n, spec in zip(self.nodes, await asyncio.gather(*(one(n) for n in self.nodes)))
                   if spec is not None]
        lacking = [name for name in absent if not answers or name in answers[0][1].nodes]
        if lacking:   # a node the collection names (or every node that answered) holds none
            raise absent[lacking[0]]
        if not answers:
            raise SessionFailed(f"collection {collection!r}: no node could be reached "
                                f"({', '.join(n.name for n in self.nodes)})")
        first_node, first = answers[0]
        for node, spec in answers[1:]:
            if spec != first:
                raise InputError(f"collection {collection!r}: node {node.name} holds another spec than node "
                                 f"{first_node.name} ({spec.describe()} against {first.describe()}); nothing sent")
        missing = [n for n in first.nodes if n not in {c.name for c in self.nodes}]
        if len(first.nodes) < 2 or missing:
            raise ConfigError(f"collection {collection!r} is held by {', '.join(first.nodes) or 'no nodes'}; "
                              f"{self.cluster.path} gives no submission address for "
                              f"{', '.join(missing) or 'enough of them'}: nothing sent")
        if len(answers) + len(absent) == len(self.nodes):
            self._specs[collection] = first
        return first

    async def submit(self, collection: str, credential: str | bytes, values: Sequence[int]) -> SubmitReport:
        """Submit one contribution: the values, split into one share per node.

        Args:
            credential: the credential's text form (or its 80-byte token).
        Returns: the report (accepted only if every node stored its share).
        Raises: InputError for a malformed credential or values outside the collection's rule (nothing
        is sent then); SessionFailed if the collection cannot be described.
        """
        return (await self.submit_many(collection, [(credential, values)]))[0]

    async def submit_many(self, collection: str, items: Sequence[tuple[str | bytes, Sequence[int]]],
                          batch: int = BATCH, attempts: int = 3, retry_wait: float = 1.0,
                          seeds: Sequence[bytes] | None = None) -> list[SubmitReport]:
        """Submit many contributions, `batch` per call to each node (fewer if they would not fit in one
        message: CALL_BYTES), every node in parallel.

        A node that cannot be reached is tried again, up to `attempts` times in all, `retry_wait`
        seconds apart and more each time, with the very same shares and nonces (kept in memory only
        for this call). A submission a node did not store in the end stays partial: it is never
        counted, and its report names the node. With `seeds` (one secret 16-byte seed per item,
        `from_seed`), the nonce and shares are derived from the seed instead of drawn: submitting the
        same item with the same seed again later completes a partial submission.

        Returns: one report per item, in order.
        Raises: as `submit`, for any item (then nothing is sent).
        """
        spec = await self.describe(collection)
        tokens = [c if isinstance(c, bytes) else parse_credential(c, f"credential {i + 1}")
                  for i, (c, _) in enumerate(items)]
        rows = [list(v) for _, v in items]
        given = values_per_submission(spec)
        for i, row in enumerate(rows):
            if len(row) != given:
                raise InputError(f"submission {i + 1}: collection {collection!r} takes {given} value(s) per "
                                 f"submission, got {len(row)}")
        for i, row in enumerate(rows):   # integers only: numpy would read "1" as 1 and cut 1.5 to 1
            if not all(isinstance(x, (int, np.integer)) and -(1 << 63) <= x < 1 << 63 for x in row):
                raise InputError(f"submission {i + 1}: values must be integers within collection {collection!r}'s "
                                 f"range, got {quoted(str(row), 80)}")
        matrix = np.array(rows, dtype=np.int64).reshape(len(rows), given)
        values = encode(spec, matrix, "submissions")
        holders = [n for n in self.nodes if n.name in spec.nodes]   # exactly the nodes that hold its shares
        if seeds is None:
            shares = split(values, len(holders))
            nonces = os.urandom(NONCE_BYTES * len(items))
        else:
            if len(seeds) != len(items) or any(len(s) != SEED_BYTES for s in seeds):
                raise InputError(f"one {SEED_BYTES}-byte seed per submission, got {len(seeds)} for {len(items)}")
            derived = [from_seed(seed, values[i], len(holders)) for i, seed in enumerate(seeds)]
            nonces = b"".join(nonce for nonce, _ in derived)
            shares = [np.stack([parts[k] for _, parts in derived]) if derived
                      else np.zeros((0, spec.length), dtype=np.uint64) for k in range(len(holders))]
        results: dict[str, list[NodeResult]] = {}
        each = max(len(t) for t in tokens) + NONCE_BYTES + 8 * spec.length + SUBMISSION_OVERHEAD if tokens else 1
        batch = max(1, min(batch, CALL_BYTES // each))

        async def call(node: NodeConfig, request: mpc_pb2.SubmitRequest) -> mpc_pb2.SubmitReply:
            # The same request again (the same nonces and shares) after a node was unreachable: a node
            # that stored it already takes it as a retry, so nothing is counted twice.
            for attempt in range(attempts):
                try:
                    reply: mpc_pb2.SubmitReply = await self._stubs[node.name].Submit(request, timeout=self.timeout)
                    return reply
                except grpc.aio.AioRpcError as exc:
                    busy = exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED   # the listener's call limit
                    if not (is_unreachable(exc) or busy) or attempt == attempts - 1:
                        raise
                    await asyncio.sleep(retry_wait * (attempt + 1))
            raise AssertionError("unreachable")

        async def to_node(k: int, node: NodeConfig) -> None:
            out: list[NodeResult] = []
            mine = shares[k]
            for start in range(0, len(items), batch):
                end = min(start + batch, len(items))
                request = mpc_pb2.SubmitRequest(collection=collection, submissions=[
                    mpc_pb2.Submission(token=tokens[i], nonce=nonces[NONCE_BYTES * i:NONCE_BYTES * (i + 1)],
                                       share=mine[i].astype("<u8").tobytes()) for i in range(start, end)])
                try:
                    reply = await call(node, request)
                except grpc.aio.AioRpcError as exc:
                    reason = describe_rpc_error(node, exc)
                    out += [NodeResult(node.name, False, code=exc.code().name, error=reason)] * (end - start)
                    continue
                if len(reply.results) != end - start:
                    out += [NodeResult(node.name, False, code="INTERNAL",
                                       error=f"node {node.name} answered {len(reply.results)} results for "
                                             f"{end - start} submissions")] * (end - start)
                    continue
                out += [NodeResult(node.name, r.stored, r.replaced, r.code, r.error) for r in reply.results]
            results[node.name] = out

        await asyncio.gather(*(to_node(k, n) for k, n in enumerate(holders)))
        return [SubmitReport(collection, credential_id(tokens[i])[:4].hex(),
                             tuple(results[n.name][i] for n in holders)) for i in range(len(items))]


__all__ = ["Contributor", "NodeResult", "SubmitReport", "encode", "from_seed", "split", "values_per_submission"]
