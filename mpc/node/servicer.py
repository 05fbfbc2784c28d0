"""The node's gRPC services: Control (coordinator -> node) and Peer (node <-> node).

Each method checks the caller's certificate role, decodes, calls NodeCore, encodes. Errors
map to status codes in one place (`status_for`), with messages that name the session, node
or input and never a value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from mpc.errors import (
    AuthError,
    Busy,
    ConfigError,
    InputError,
    MpcError,
    PeerUnavailable,
    PolicyError,
    RemoteProtocolError,
    RoundMismatch,
    SessionClosed,
    SessionFailed,
    StaleShape,
    StoreError,
    UnknownSession,
    clipped,
    quoted,
)
from mpc.node.core import FILL_TIMEOUT_S, NodeCore, Shape, Ticket
from mpc.ot.pool import MAX_FILL_BYTES, POOL_CHANNEL, segments_to_bytes
from mpc.pki import Identity
from mpc.protocols.catalogue import BY_WIRE_ID, Entry, ParamValue, params_from_wire
from mpc.ring import Words, words_to_bytes
from mpc.transport.evidence import MAX_TAGS, evidence_from_wire, evidence_to_wire
from mpc.transport.peers import MAX_BUNDLE
from mpc.transport.tls import CHUNK_BYTES, caller_identity
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

log = logging.getLogger("mpc.node")

MAX_PEER_PAYLOAD = 1 << 30
DRAIN_FRAMES = 64   # a refused Send's frames read and dropped before the refusal goes out (_drained)
DRAIN_S = 2.0
# A Send's first frame (its header) comes with the call: a caller that sends none in this long is cut off.
FIRST_FRAME_S = 10.0
_CHUNK_WORDS = CHUNK_BYTES // 8
# How often a node reports progress on a Compute call that asked for it.
PROGRESS_INTERVAL_S = 0.25

# Most specific first: the first matching class decides the status.
_STATUS: list[tuple[type[MpcError], grpc.StatusCode]] = [
    (AuthError, grpc.StatusCode.PERMISSION_DENIED),
    (PolicyError, grpc.StatusCode.PERMISSION_DENIED),
    (UnknownSession, grpc.StatusCode.NOT_FOUND),
    (SessionClosed, grpc.StatusCode.FAILED_PRECONDITION),
    (StaleShape, grpc.StatusCode.FAILED_PRECONDITION),
    (RoundMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (RemoteProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreError, grpc.StatusCode.NOT_FOUND),
    (InputError, grpc.StatusCode.FAILED_PRECONDITION),
    # A peer of this node is unreachable: the session is aborted. UNAVAILABLE stays reserved
    # for "this node cannot be reached", which gRPC itself reports.
    (PeerUnavailable, grpc.StatusCode.ABORTED),
    (SessionFailed, grpc.StatusCode.ABORTED),
    (Busy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ConfigError, grpc.StatusCode.INTERNAL),
]
MAX_STEP_CHARS = 64


async def _drained(frames: AsyncIterator[Any]) -> None:
    """Read and drop what a refused client stream still sends (at most DRAIN_FRAMES frames, for at
    most DRAIN_S): refused while its caller still writes, a call can reach the caller as INTERNAL
    ("Internal error from Core") instead of the refusal (about 1 in 200 refused Sends of a few
    frames on loopback); once the caller has sent everything, the refusal reaches it intact."""
    try:
        async with asyncio.timeout(DRAIN_S):
            read = 0
            async for _ in frames:
                read += 1
                if read >= DRAIN_FRAMES:
                    return
    except (TimeoutError, grpc.RpcError, asyncio.InvalidStateError, MpcError):   # e.g. a malformed frame
        return


async def _abort(context: grpc.aio.ServicerContext, exc: MpcError) -> None:
    """End the call with the error's status and its message, bounded in size whatever the caller sent."""
    await context.abort(status_for(exc), clipped(str(exc)))


def status_for(exc: MpcError) -> grpc.StatusCode:
    """The gRPC status code for an mpc error.

    Returns: the code of the first matching class in the table, INTERNAL otherwise.
    """
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _shape_to_wire(shape: Shape) -> mpc_pb2.Shape:
    return mpc_pb2.Shape(length=shape.length, frac_bits=shape.frac_bits, is_scalar=shape.is_scalar,
                         input_version=shape.input_version)


def _shape_from_wire(shape: mpc_pb2.Shape) -> Shape:
    return Shape(int(shape.length), int(shape.frac_bits), bool(shape.is_scalar), int(shape.input_version))


def _require(context: grpc.aio.ServicerContext, role: str, what: str) -> Identity:
    caller = caller_identity(context)
    if caller.role != role:
        raise AuthError(f"{caller.uri()} may not call {what}: only {role} certificates may")
    return caller


def _params(request: mpc_pb2.PrepareRequest, protocol: str) -> dict[str, ParamValue]:
    """The request's parameters as plain values (typed by the protocol's catalogue entry next)."""
    out: dict[str, ParamValue] = {}
    for name, param in request.params.items():
        which = param.WhichOneof("value")
        if which is None:
            raise RemoteProtocolError(f"protocol {protocol}: parameter {quoted(name, 40)} has no value")
        out[name] = tuple(param.integers.values) if which == "integers" else getattr(param, which)
    return out


_DEFAULTS: dict[str, Any] = {}   # protocol name -> its parameters when a request names none

Request = TypeVar("Request")
Reply = TypeVar("Reply")
MAX_HANDLING = 256   # requests of one long-lived stream handled, or answers waiting to go, at once


async def _read_until_closed(take: Coroutine[Any, Any, None], running: set[asyncio.Task[None]],
                             closing: asyncio.Event) -> None:
    """Read a long-lived stream (`take`) until it ends or `closing` is set; then nothing more is read,
    and this returns when the handlers `running` have ended."""
    taking = asyncio.ensure_future(take)
    stopping = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({taking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        taking.cancel()   # nothing more is read (the node is stopping, or the caller is done)
        if running:
            await asyncio.wait(set(running))
    finally:
        taking.cancel()
        stopping.cancel()
        await asyncio.gather(taking, stopping, return_exceptions=True)


async def _each_in_a_task(requests: AsyncIterator[Request],
                          handle: Callable[[Request, Callable[[Reply], None]], Awaitable[None]], closing: asyncio.Event,
                          quick: Callable[[Request], bool]) -> AsyncIterator[Reply]:
    """Serve a long-lived stream: every request is handled in a task of its own (so that one that
    waits holds up no other), and what the handlers put out is yielded in the order they put it.
    When the stream ends, or the caller goes away, the reader stops; the handlers still running are
    not cancelled (each is bounded by its own wait). quick: says of a request that its handler will
    not wait; it is then handled at once, without a task, if no earlier one of the stream is still
    running (so that the stream's order is kept).
    closing: once set (the node is stopping), nothing more is read, and the stream ends when the
    handlers running have (the server's grace bounds that).
    """
    out: asyncio.Queue[Reply | None] = asyncio.Queue()
    running: set[asyncio.Task[None]] = set()
    drained = asyncio.Event()   # set whenever an answer has gone out

    async def take() -> None:
        async for request in requests:
            # Bounded: a caller that sends faster than its requests are handled, or reads none of the
            # answers, is read no further until they drain (gRPC's flow control then holds it back).
            while len(running) >= MAX_HANDLING:
                await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
            while out.qsize() >= MAX_HANDLING:
                drained.clear()
                await drained.wait()
            if not running and quick(request):
                await handle(request, out.put_nowait)
                continue
            task = asyncio.ensure_future(handle(request, out.put_nowait))
            running.add(task)
            task.add_done_callback(running.discard)

    async def read() -> None:
        try:
            await _read_until_closed(take(), running, closing)
        finally:
            out.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while (reply := await out.get()) is not None:
            drained.set()
            yield reply
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _each_answered(read: Callable[[], Awaitable[Any]], write: Callable[[Reply], Awaitable[None]],
                         handle: Callable[[Request, Callable[[Reply], None]], Awaitable[None]], closing: asyncio.Event,
                         at_once: Callable[[Request, Callable[[Reply], None]], bool]) -> None:
    """Serve a long-lived stream whose answers say which request they answer (gRPC's reader/writer API:
    `read` gives the next request or grpc.aio.EOF, `write` sends one answer): a request that `at_once`
    answers there and then (it says whether it did) has its answers written before the next is read; any
    other is handled in a task of its own (so that one that waits holds up no other), which writes its
    answers when it ends. Writes take turns, each request's answers together. At most MAX_HANDLING tasks
    run at once: a caller that sends faster is read no further until they end (gRPC's flow control then
    holds it back). When the stream ends, or `closing` is set (the node is stopping), nothing more is read,
    and this returns when the tasks running have (the server's grace bounds that); if the caller goes
    away (this is cancelled), they are cancelled.
    """
    running: set[asyncio.Task[None]] = set()
    writing = asyncio.Lock()   # gRPC takes one write at a time on a call

    async def send(answers: list[Reply]) -> None:
        async with writing:
            for answer in answers:
                await write(answer)

    async def handled(request: Request) -> None:
        answers: list[Reply] = []
        await handle(request, answers.append)
        try:
            await send(answers)
        except Exception as exc:   # the call has ended: nobody is there to answer
            log.debug("an answer on a closed stream was dropped: %s", type(exc).__name__)

    async def take() -> None:
        while (request := await read()) is not grpc.aio.EOF:
            while len(running) >= MAX_HANDLING:
                await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
            answers: list[Reply] = []
            if at_once(request, answers.append):
                await send(answers)
                continue
            task = asyncio.ensure_future(handled(request))
            running.add(task)
            task.add_done_callback(running.discard)

    try:
        await _read_until_closed(take(), running, closing)
    finally:
        handlers = list(running)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


class _Malformed:
    """A request that did not parse, handed to the method instead of gRPC's own UNKNOWN."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


def _unknown_fields(message: Any) -> list[int]:
    """The numbers of the top-level fields of `message` that this mpc's schema does not know."""
    fields = UnknownFieldSet(message)
    return sorted({fields[i].field_number for i in range(len(fields))})


def _statement(request: mpc_pb2.RunRequest) -> bytes:
    """A one-round request but its session id, as bytes that equal exactly when the requests do (deterministic
    serialization: map entries sorted; unknown fields kept, so a request with any differs)."""
    if not request.HasField("prepare"):
        return bytes(request.SerializeToString(deterministic=True))
    session_id = request.prepare.session_id
    request.prepare.session_id = ""
    try:
        return bytes(request.SerializeToString(deterministic=True))
    finally:
        request.prepare.session_id = session_id


def _ticket_to_wire(ticket: Ticket) -> mpc_pb2.PoolTicket:
    return mpc_pb2.PoolTicket(receiver=ticket.receiver, sender=ticket.sender, id=ticket.id,
                              segments=segments_to_bytes(ticket.segments))


def _tolerant(deserialize: Any) -> Any:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Malformed(f"malformed request: {exc}")
    return parse


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Answer a request that is not valid protobuf with INVALID_ARGUMENT and a clear message.

    Without it grpc.aio's deserializer raises DecodeError before any handler runs, and the
    caller sees UNKNOWN ("Unexpected <class DecodeError>").
    """

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
                return await inner_uu(request, context)
            return handler._replace(request_deserializer=parse, unary_unary=unary_unary)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
                async for reply in inner_us(request, context):
                    yield reply
            return handler._replace(request_deserializer=parse, unary_stream=unary_stream)
        if handler.stream_stream is not None:   # Run and Stream answer a malformed message in their own replies
            return handler._replace(request_deserializer=parse)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                async def checked() -> AsyncIterator[Any]:
                    async for request in requests:
                        if isinstance(request, _Malformed):
                            raise RemoteProtocolError(request.detail)
                        yield request
                return await inner_su(checked(), context)
            return handler._replace(request_deserializer=parse, stream_unary=stream_unary)
        return handler


class ControlService(mpc_pb2_grpc.ControlServicer):
    """Coordinator -> node: prepare, compute (stream the output share), abort, status, and Run."""

    def __init__(self, core: NodeCore, closing: asyncio.Event | None = None) -> None:
        self.core = core
        self.closing = closing or asyncio.Event()   # set: the node is stopping (its Run streams end)

    def _requested(self, caller: Identity, request: mpc_pb2.PrepareRequest) -> tuple[Entry[Any], Any]:
        """The protocol and typed parameters a prepare request names (a refusal is audited).

        Raises: RemoteProtocolError for unknown fields, an unknown protocol or bad parameters.
        """
        protocol = BY_WIRE_ID.get(request.protocol)
        try:
            unknown = _unknown_fields(request)
            if unknown:
                # Fields 6 and 7 were an older mpc's average_mode and threshold: a node that ignored
                # them would run another computation than the coordinator asked for.
                raise RemoteProtocolError(f"prepare request has fields this node does not know {unknown[:8]} "
                                          f"(from an older or newer mpc: 6 and 7 were average_mode and "
                                          f"threshold, now protocol parameters); nothing was prepared")
            if protocol is None:
                raise RemoteProtocolError(f"unknown protocol {request.protocol}")
            if not request.params:   # its defaults, built once (parameter dataclasses are frozen)
                defaults = _DEFAULTS.get(protocol.name)
                if defaults is None:
                    defaults = _DEFAULTS[protocol.name] = params_from_wire(protocol, {})
                return protocol, defaults
            return protocol, params_from_wire(protocol, _params(request, protocol.name))
        except MpcError as error:
            self.core.refused(caller, request.session_id, protocol.name if protocol else
                              f"protocol {request.protocol}", request.input_name, list(request.participants), error)
            raise

    async def Prepare(self, request: mpc_pb2.PrepareRequest,
                      context: grpc.aio.ServicerContext) -> mpc_pb2.PrepareReply:
        """Register a session; reply with the input's public shape."""
        try:
            caller = _require(context, "coordinator", "Control.Prepare")
            protocol, params = self._requested(caller, request)
            p = self.core.prepare(caller, request.session_id, protocol, params, request.input_name,
                                  list(request.participants), request.timeout_ms / 1000)
        except MpcError as exc:
            await _abort(context, exc)
        return mpc_pb2.PrepareReply(session_id=p.session_id, node=p.node, length=p.length,
                                    frac_bits=p.frac_bits, is_scalar=p.is_scalar, input_version=p.input_version,
                                    evidence=evidence_to_wire(p.evidence))

    async def Compute(self, request: mpc_pb2.ComputeRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[mpc_pb2.ShareChunk]:
        """Run the session and stream this node's output share in 1 MiB chunks."""
        try:
            caller = _require(context, "coordinator", "Control.Compute")
            evidence = {node: evidence_from_wire(e, f"the evidence of node {quoted(node, 40)}")
                        for node, e in list(request.evidence.items())[:MAX_TAGS + 1]}
            task = asyncio.ensure_future(
                self.core.compute(caller, request.session_id, request.frac_bits, request.length,
                                  dict(request.input_versions), dict(request.lengths), evidence))
            # If we are cancelled just as it fails, its exception is still taken (not logged as lost).
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            try:
                while request.progress:
                    done, _ = await asyncio.wait({task}, timeout=PROGRESS_INTERVAL_S)
                    if done:
                        break
                    sent, received, messages = self.core.progress(request.session_id)
                    yield mpc_pb2.ShareChunk(session_id=request.session_id, node=self.core.me.name,
                                             progress=mpc_pb2.Progress(peer_bytes_sent=sent,
                                                                       peer_bytes_received=received,
                                                                       peer_messages=messages))
                share = await task
            finally:
                task.cancel()  # the coordinator went away: the session ends (aborted) at once
        except MpcError as exc:
            await _abort(context, exc)
        total = share.size
        for offset in range(0, total, _CHUNK_WORDS):
            yield mpc_pb2.ShareChunk(session_id=request.session_id, node=self.core.me.name, offset=offset,
                                     total_length=total, words=words_to_bytes(share[offset:offset + _CHUNK_WORDS]))

    async def Run(self, requests: AsyncIterator[mpc_pb2.RunRequest | _Malformed],
                  context: grpc.aio.ServicerContext) -> None:
        """One-round sessions: each request prepared and computed at once, concurrently; each answered
        with this node's output share in chunks, or with why it was refused (written with
        context.write: a session run from its plan is answered before the next request is read, with
        no task or queue of its own). The coordinator going away aborts the sessions still running."""
        try:
            caller = _require(context, "coordinator", "Control.Run")
        except MpcError as exc:
            await _abort(context, exc)
        me = self.core.me.name

        async def one(request: mpc_pb2.RunRequest | _Malformed, reply: Callable[[mpc_pb2.RunReply], None]) -> None:
            session_id = "" if isinstance(request, _Malformed) else request.prepare.session_id
            try:
                if isinstance(request, _Malformed):
                    raise RemoteProtocolError(request.detail)
                share, shape, tickets = await self._run(caller, request, _statement(request))
            except MpcError as exc:
                reply(mpc_pb2.RunReply(session_id=session_id, node=me, code=status_for(exc).name,
                                       error=clipped(str(exc)), stale=isinstance(exc, StaleShape)))
                return
            except Exception:   # a bug: answered, so that the coordinator does not wait it out
                log.exception("session %s: one-round session failed", session_id[:40])
                reply(mpc_pb2.RunReply(session_id=session_id, node=me, code=grpc.StatusCode.INTERNAL.name,
                                       error=f"node {me}: internal error (see its log)"))
                return
            answer(session_id, share, shape, tickets, reply)

        def answer(session_id: str, share: Words | bytes, shape: Shape, tickets: list[Ticket],
                   reply: Callable[[mpc_pb2.RunReply], None]) -> None:
            """Reply with the output share (words, or their bytes: a plan's) in chunks, the last with the
            shape, the pair keys and the tickets."""
            total = len(share) // 8 if isinstance(share, bytes) else share.size
            for offset in range(0, total, _CHUNK_WORDS):
                last = offset + _CHUNK_WORDS >= total
                words = share[8 * offset:8 * (offset + _CHUNK_WORDS)] if isinstance(share, bytes) else \
                    words_to_bytes(share[offset:offset + _CHUNK_WORDS])
                reply(mpc_pb2.RunReply(session_id=session_id, node=me, offset=offset, total_length=total,
                                       words=words,
                                       shape=_shape_to_wire(shape) if last else None,
                                       key_ids=self.core.pair_keys.newest_ids() if last else None,
                                       tickets=[_ticket_to_wire(t) for t in tickets] if last else None))

        def from_plan(request: mpc_pb2.RunRequest | _Malformed, reply: Callable[[mpc_pb2.RunReply], None]) -> bool:
            """Answer a session from its plan, if it runs from one (it waits for nothing); else `one` runs it."""
            if isinstance(request, _Malformed):
                return False
            try:
                repeated = self.core.repeat(caller, request.prepare.session_id, _statement(request))
            except Exception:   # a bug: logged, and the session runs in full
                log.exception("session %s: could not run from its plan", request.prepare.session_id[:40])
                return False
            if repeated is None:
                return False
            answer(request.prepare.session_id, *repeated, [], reply)
            return True

        # The coordinator going away cancels the sessions still running: they end aborted.
        await _each_answered(context.read, context.write, one, self.closing, from_plan)

    async def _run(self, caller: Identity, request: mpc_pb2.RunRequest,
                   statement: bytes) -> tuple[Words, Shape, list[Ticket]]:
        prepare = request.prepare
        unknown = _unknown_fields(request)
        if unknown:   # a newer coordinator's: run without them, the session would not be the one it asked for
            protocol = BY_WIRE_ID.get(prepare.protocol)
            error = RemoteProtocolError(f"run request has fields this node does not know {unknown[:8]} (from a "
                                        f"newer mpc); nothing was run")
            self.core.refused(caller, prepare.session_id, protocol.name if protocol else
                              f"protocol {prepare.protocol}", prepare.input_name, list(prepare.participants), error)
            raise error
        protocol, params = self._requested(caller, prepare)
        shapes = {node: _shape_from_wire(s) for node, s in list(request.shapes.items())[:MAX_TAGS + 1]}
        if len(request.tickets) > MAX_TAGS * (MAX_TAGS - 1):
            raise RemoteProtocolError(f"session {prepare.session_id}: {len(request.tickets)} pool tickets")
        tickets = [Ticket.from_wire(t, f"session {prepare.session_id}: pool ticket") for t in request.tickets]
        return await self.core.run(caller, prepare.session_id, protocol, params, prepare.input_name,
                                   list(prepare.participants), prepare.timeout_ms / 1000, shapes, request.frac_bits,
                                   request.length, dict(list(request.key_ids.items())[:MAX_TAGS + 1]), tickets,
                                   statement)

    async def Abort(self, request: mpc_pb2.AbortRequest,
                    context: grpc.aio.ServicerContext) -> mpc_pb2.AbortReply:
        """Drop a session at the coordinator's request."""
        try:
            caller = _require(context, "coordinator", "Control.Abort")
            self.core.abort(caller, request.session_id, request.reason)
        except MpcError as exc:
            await _abort(context, exc)
        return mpc_pb2.AbortReply()

    async def Status(self, request: mpc_pb2.StatusRequest,
                     context: grpc.aio.ServicerContext) -> mpc_pb2.StatusReply:
        """Report the node's name, version, inputs (names and shapes only) and sessions."""
        try:
            _require(context, "coordinator", "Control.Status")
        except MpcError as exc:
            await _abort(context, exc)
        name, version, inputs, active, not_after = self.core.status()
        budgets = {i.name: self.core.releases.budget(i.name) for i in inputs}
        collections = await asyncio.to_thread(self.core.store.list_collections)
        allowed = self.core.me.policy.inputs   # a collection is used by its name, as an input is
        if allowed is not None:
            collections = [c for c in collections if c.spec.name in allowed]
        return mpc_pb2.StatusReply(
            node=name, version=version, active_sessions=active, cert_not_after=not_after,
            collections=[mpc_pb2.CollectionInfo(name=c.spec.name, kind=c.spec.kind, length=c.spec.length,
                                                min_batch=c.spec.min_batch, submissions=c.submissions,
                                                closed=c.closed) for c in collections],
            inputs=[mpc_pb2.InputInfo(name=i.name, length=i.length, frac_bits=i.frac_bits, is_scalar=i.is_scalar,
                                      version=i.version, kind=i.kind, bounded=i.bounds is not None,
                                      lo=i.bounds[0] if i.bounds else 0, hi=i.bounds[1] if i.bounds else 0,
                                      epsilon_spent=str(b.epsilon_spent), epsilon_budget=str(b.epsilon),
                                      delta_spent=str(b.delta_spent), delta_budget=str(b.delta),
                                      exact_allowed=b.exact)
                    for i in inputs for b in (budgets[i.name],)])


def _late_frames(sender: str, header: mpc_pb2.PeerHeader | None) -> MpcError:
    """Why a Send whose frames did not come in time (`PeerService.Send`) is cut off."""
    if header is None:
        return RemoteProtocolError(f"peer Send from {sender}: no frame within {FIRST_FRAME_S:g} s of the call")
    if header.session_id == POOL_CHANNEL:
        return RemoteProtocolError(f"triple pool fill from {sender}: not whole within {FILL_TIMEOUT_S:g} s; dropped")
    return SessionClosed(f"session {header.session_id}: the {quoted(header.step, 40)} message from {sender} did not "
                         f"arrive whole before the session's deadline; dropped")


class PeerService(mpc_pb2_grpc.PeerServicer):
    """Node <-> node: one protocol message per call (unary when small, a client stream when large)."""

    def __init__(self, core: NodeCore, closing: asyncio.Event | None = None) -> None:
        self.core = core
        self.closing = closing or asyncio.Event()   # set: the node is stopping (its peer streams end)

    def _caller(self, context: grpc.aio.ServicerContext) -> Identity:
        caller = _require(context, "node", "Peer")
        if caller.name not in self.core.cluster.nodes:
            raise AuthError(f"{caller.uri()} is not a node of this cluster")
        return caller

    async def _deliver(self, caller: Identity, header: mpc_pb2.PeerHeader, payload: bytes) -> None:
        if len(payload) != header.payload_bytes:
            raise RemoteProtocolError(f"peer message has {len(payload)} bytes, declared {header.payload_bytes}")
        if len(header.step) > MAX_STEP_CHARS:
            raise RemoteProtocolError(f"peer message step {quoted(header.step, 60)} is too long")
        await self.core.deliver(caller, header.session_id, header.sender, header.step, payload, header.one_round)

    async def Deliver(self, request: mpc_pb2.PeerMessage, context: grpc.aio.ServicerContext) -> mpc_pb2.PeerAck:
        """Take a message that fits in one call."""
        try:
            caller = self._caller(context)
            if not request.HasField("header"):
                raise RemoteProtocolError("peer message without a header")
            await self._deliver(caller, request.header, request.payload)
        except MpcError as exc:
            await _abort(context, exc)
        return mpc_pb2.PeerAck()

    async def Stream(self, messages: AsyncIterator[mpc_pb2.StreamMessage | _Malformed],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[mpc_pb2.StreamRefusal]:
        """Every small message from one peer, of every session, on one long-lived stream: each is
        delivered as Deliver would (concurrently, so that one session's wait holds up no other); only
        a refused one is answered, with its number, session, status and reason."""
        try:
            caller = self._caller(context)
        except MpcError as exc:
            await _abort(context, exc)

        async def one(message: mpc_pb2.StreamMessage | _Malformed,
                      refuse: Callable[[mpc_pb2.StreamRefusal], None]) -> None:
            seq, session_id = (0, "") if isinstance(message, _Malformed) else (
                message.seq, (message.bundle[0].header if message.bundle else message.header).session_id)
            try:
                if isinstance(message, _Malformed):
                    raise RemoteProtocolError(message.detail)
                if message.bundle:
                    if message.HasField("header") or message.payload:
                        raise RemoteProtocolError("peer stream message with both a bundle and a header")
                    if len(message.bundle) > MAX_BUNDLE or len({m.header.session_id for m in message.bundle}) != 1:
                        raise RemoteProtocolError(f"peer bundle of {len(message.bundle)} messages: at most "
                                                  f"{MAX_BUNDLE}, all of one session")
                    for part in message.bundle:   # in order; the first refused ends the rest
                        await self._deliver(caller, part.header, part.payload)
                    return
                if not message.HasField("header"):
                    raise RemoteProtocolError("peer message without a header")
                await self._deliver(caller, message.header, message.payload)
                return
            except MpcError as exc:
                code, error = status_for(exc).name, clipped(str(exc))
            except Exception:   # a bug: this message is refused, and the stream goes on
                log.exception("a peer stream message from %s failed", caller.name)
                code, error = grpc.StatusCode.INTERNAL.name, f"node {self.core.me.name}: internal error (see its log)"
            refuse(mpc_pb2.StreamRefusal(seq=seq, session_id=session_id, code=code, error=error))

        def quick(message: mpc_pb2.StreamMessage | _Malformed) -> bool:
            if isinstance(message, _Malformed):
                return False
            parts = message.bundle or [message]
            return all(self.core.deliverable_now(m.header.session_id, m.header.step) for m in parts)

        # A message being delivered is not cancelled when the peer goes away: its session's engine
        # may be mid-step, and the delivery is bounded by the session's own wait and deadline.
        async for answer in _each_in_a_task(messages, one, self.closing, quick):
            yield answer

    async def Send(self, request_iterator: AsyncIterator[mpc_pb2.PeerFrame],
                   context: grpc.aio.ServicerContext) -> mpc_pb2.PeerAck:
        """Reassemble a large message from its frames, check it, and hand it to the session.

        The caller sets the call's deadline, and a hostile peer sets none: so its frames must come in
        time of our own, or the call is cut off and what it brought dropped. The header within
        FIRST_FRAME_S; a session's message whole before the session's deadline (it is of no use
        after), a pool fill within FILL_TIMEOUT_S (its sender's own bound).
        """
        filling = None   # the peer whose pool fill this call carries (one at a time per peer)
        header: mpc_pb2.PeerHeader | None = None
        try:
            caller = self._caller(context)
            payload = bytearray()
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(FIRST_FRAME_S) as bound:
                    async for frame in request_iterator:
                        if header is None:
                            if not frame.HasField("header"):
                                raise RemoteProtocolError("the first peer frame carries no header")
                            header = frame.header
                            bound.reschedule(None)   # admit_waiting's wait is bounded on its own
                            # Refuse a wrong sender or session before buffering a large payload.
                            session = await self.core.admit_waiting(caller, header.session_id, header.sender,
                                                                    header.one_round)
                            fill = session is None
                            bound.reschedule(loop.time() + FILL_TIMEOUT_S if session is None else session.deadline)
                            limit = MAX_FILL_BYTES if fill else MAX_PEER_PAYLOAD
                            if header.payload_bytes > limit:
                                raise RemoteProtocolError(f"peer message of {header.payload_bytes} bytes exceeds "
                                                          f"the {limit}-byte limit{' of a pool fill' if fill else ''}")
                            if fill:
                                self.core.fill_arriving(caller.name)
                                filling = caller.name
                        elif frame.HasField("header"):
                            raise RemoteProtocolError("a peer frame after the first carries a header")
                        payload += frame.chunk
                        if len(payload) > header.payload_bytes:
                            raise RemoteProtocolError(f"peer message longer than its declared "
                                                      f"{header.payload_bytes} bytes")
            except TimeoutError:
                raise _late_frames(caller.name, header) from None
            if header is None:
                raise RemoteProtocolError("empty peer stream")
            if filling is not None:   # read: the core takes it (one at a time, its thread to its end)
                self.core.fill_read(filling)
                filling = None
            await self._deliver(caller, header, bytes(payload))
        except MpcError as exc:
            await _drained(request_iterator)
            await _abort(context, exc)
        finally:
            if filling is not None:
                self.core.fill_read(filling)
        return mpc_pb2.PeerAck()
