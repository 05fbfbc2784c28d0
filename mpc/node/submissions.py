"""The node's submission listener: contributors' shares into its collections (DESIGN.md §12).

A contributor runs no node and holds no certificate. It reaches this service on the node's
`submit` address, over TLS that authenticates the node only, and each submission carries a
credential from the collection's owner (mpc/credentials.py): an Ed25519 signature over the
collection and a credential id, verified with the owner's public key from the collection's spec.
The service is alone on its own gRPC server: Control and Peer are never reachable without a
client certificate.

What the node keeps per submission is the credential id, the submission's nonce and its share
(mpc/store/collections.py); a share is uniformly random on its own, and the node never sees a
value. One submission per credential: the collection's rule refuses or replaces a second one;
the same nonce again is an idempotent retry. Whether a submission is complete (stored at every
node, with the same nonce) is decided among the nodes before a session, not here.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from mpc import aio
from mpc.credentials import TOKEN_BYTES, credential_id, verify
from mpc.errors import AuthError, InputError, MpcError, quoted
from mpc.node.servicer import status_for
from mpc.store import CollectionSpec, Store
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

log = logging.getLogger("mpc.node")

MAX_BATCH = 10_000          # submissions in one call
MAX_CHECKING = 4            # batches checked at once (worker threads)
MAX_WAITING = 64            # batches waiting for a turn (each up to the 4 MiB a message may take)
NONCE_BYTES = 16


def _code(exc: MpcError) -> grpc.StatusCode:
    """A malformed submission is the caller's error (INVALID_ARGUMENT); the rest as everywhere."""
    return grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, InputError) else status_for(exc)


def _refused(exc: MpcError) -> mpc_pb2.SubmitResult:
    return mpc_pb2.SubmitResult(stored=False, code=_code(exc).name, error=str(exc)[:300])


async def _spec_or_abort(store: Store, name: str, node: str, context: grpc.aio.ServicerContext) -> CollectionSpec:
    try:
        return await asyncio.to_thread(store.get_collection, name)
    except InputError as exc:   # no such collection here (or a malformed name)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"node {node}: {exc}")
        raise AssertionError("unreachable") from None


class SubmitService(mpc_pb2_grpc.SubmitServicer):
    """Contributor -> node: store a batch of shares; describe a collection."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        # Batches checked at once (each verifies up to MAX_BATCH signatures in a worker thread), and how
        # many more may wait for a turn, holding their requests; beyond that a call is refused as busy
        # (RESOURCE_EXHAUSTED) and the client tries again. Only whole requests count: one that is still
        # arriving holds nothing here (mpc/node/daemon.py bounds those per connection and in time).
        self._working = asyncio.Semaphore(MAX_CHECKING)
        self._waiting = 0

    async def Submit(self, request: mpc_pb2.SubmitRequest, context: grpc.aio.ServicerContext) -> mpc_pb2.SubmitReply:
        """Verify each submission's credential and store the good ones in one transaction.

        Returns: one result per submission, in order. A malformed or unknown collection, or a batch
        above MAX_BATCH, fails the whole call.
        """
        name = request.collection
        if len(request.submissions) > MAX_BATCH:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"node {self.node}: a batch of "
                                f"{len(request.submissions)} submissions; at most {MAX_BATCH}")
        spec = await _spec_or_abort(self.store, name, self.node, context)
        if self.node not in spec.nodes:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"node {self.node}: collection {quoted(name, 60)} "
                                f"is held by {', '.join(spec.nodes) or 'no nodes'}, not by this node")

        def check_and_store() -> list[mpc_pb2.SubmitResult]:
            results: list[mpc_pb2.SubmitResult | None] = []
            batch: list[tuple[bytes, bytes, bytes]] = []
            where: list[int] = []
            for i, s in enumerate(request.submissions):
                try:
                    if len(s.token) != TOKEN_BYTES:
                        raise AuthError(f"submission {i}: a credential of {len(s.token)} bytes, not {TOKEN_BYTES}")
                    cid = verify(spec.owner_key, name, s.token)
                    if len(s.nonce) != NONCE_BYTES:
                        raise InputError(f"submission {i} (credential {credential_id(s.token)[:4].hex()}): a nonce of "
                                         f"{len(s.nonce)} bytes, not {NONCE_BYTES}")
                except MpcError as exc:
                    results.append(_refused(exc))
                    continue
                results.append(None)
                batch.append((cid, s.nonce, s.share))
                where.append(i)
            outcomes = self.store.put_submissions(name, batch) if batch else []
            for i, outcome in zip(where, outcomes):
                if isinstance(outcome, MpcError):
                    results[i] = _refused(outcome)
                else:
                    results[i] = mpc_pb2.SubmitResult(stored=outcome.stored, replaced=outcome.replaced)
            return [r for r in results if r is not None]

        if self._waiting >= MAX_WAITING:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"node {self.node}: {self._waiting} batches of "
                                f"submissions wait to be checked already; try again")
        self._waiting += 1
        try:
            await self._working.acquire()
        finally:
            self._waiting -= 1
        # The check runs to its end in its thread even if the caller goes away (a cancel), so its turn is
        # given back when the thread is done, not when the call ends: cancelled calls cannot pile up work.
        try:
            results = await aio.in_thread_to_end(self._working.release, check_and_store)
        except MpcError as exc:
            await context.abort(_code(exc), f"node {self.node}: collection {quoted(name, 60)}: {exc}")
            raise AssertionError("unreachable") from None
        stored = sum(r.stored for r in results)
        log.info("collection %r: %d of %d submissions stored", name, stored, len(results))
        return mpc_pb2.SubmitReply(results=results)

    async def Describe(self, request: mpc_pb2.CollectionRequest,
                       context: grpc.aio.ServicerContext) -> mpc_pb2.CollectionReply:
        """A collection's public spec and its count of stored submissions (public by design)."""
        spec = await _spec_or_abort(self.store, request.collection, self.node, context)
        try:
            count = await asyncio.to_thread(self.store.submission_count, request.collection)
        except MpcError as exc:
            await context.abort(_code(exc), f"node {self.node}: {exc}")
            raise AssertionError("unreachable") from None
        return mpc_pb2.CollectionReply(name=spec.name, kind=spec.kind, lo=spec.lo, hi=spec.hi, length=spec.length,
                                       min_batch=spec.min_batch, resubmit=spec.resubmit, owner_key=spec.owner_key,
                                       submissions=count, nodes=list(spec.nodes))


__all__ = ["MAX_BATCH", "NONCE_BYTES", "SubmitService"]
