"""Outgoing calls: one mutual-TLS channel per remote node, reused across sessions.

Each channel expects the identity of the node it is for (its DNS SAN `<name>.node.mpc.invalid`,
see mpc/transport/tls.py for why not the URI SAN), so a call that reaches another node, or a
certificate issued before mpc put that name in it, fails at the handshake before anything is
sent; `describe_rpc_error` says so instead of calling the node unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote

import grpc

from mpc.config import ClusterConfig, NodeConfig
from mpc.errors import MpcError, PeerUnavailable, SessionFailed
from mpc.pki import identity_dns_name
from mpc.transport.tls import CHUNK_BYTES, TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

log = logging.getLogger("mpc.transport")
MAX_BUNDLE = 16   # messages of one session in one peer stream message
RECENT_SEQS = 4096   # messages a peer stream remembers (to match refusals, and to tell their sessions if it ends)
# Status codes that mean "could not reach or hear back from the node" rather than "it refused".
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A channel that saw its peer down fails calls at once until its next reconnect attempt
# (backoff up to grpc.max_reconnect_backoff_ms = 2 s, plus jitter), even if the peer is back.
# A peer send that fails UNAVAILABLE is tried once more, waiting up to this long for the channel.
RECONNECT_GRACE_S = 3.0
# How gRPC says that the certificate at the far end does not carry the TLS target name, which is
# the identity DNS name of the node we meant (mpc.transport.tls.channel_options): the party that
# answered is not that node (grpc 1.6x and later, then older releases). The status is UNAVAILABLE,
# as for a node that is down, but a party did answer: it must not be called unreachable, and
# waiting or retrying cannot mend it.
_NAME_MISMATCH = re.compile(r"Hostname Verification Check failed|Peer name \S+ is not in peer certificate")
# The address the name resolved to, as gRPC writes it: "ipv4:10.0.0.2:7001: ..." or "ipv6:%5B::1%5D:7001: ...".
_RESOLVED = re.compile(r"\bipv[46]:(\S+):(?= )")


def is_name_mismatch(exc: grpc.aio.AioRpcError) -> bool:
    """Whether the call failed because the certificate that answered is not the node's we meant
    (it lacks that node's identity DNS name, mpc.pki.identity_dns_name)."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and bool(_NAME_MISMATCH.search(exc.details() or ""))


def is_unreachable(exc: BaseException | None) -> bool:
    """Whether a call failed because the node could not be reached or did not answer in time
    (not: a party answered with another node's certificate)."""
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in UNREACHABLE and not is_name_mismatch(exc)


def describe_failure(failure: BaseException) -> str:
    """A short reason for a stream that ended: its status and details, or the exception's text."""
    if isinstance(failure, grpc.aio.AioRpcError):
        details = (failure.details() or "").splitlines()
        return f"{failure.code().name}: {details[0][:160] if details else ''}"
    return str(failure)[:200]


def describe_rpc_error(node: NodeConfig, exc: grpc.aio.AioRpcError) -> str:
    """A one-line explanation of a failed call to `node` that names it and its address.

    Returns: the message.
    """
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"node {node.name} at {node.address} did not answer in time"
    if is_name_mismatch(exc):
        resolved = _RESOLVED.search(exc.details() or "")
        where = f" (reached {unquote(resolved.group(1))})" if resolved else ""
        return (f"node {node.name} at {node.address}{where}: the certificate there is not node {node.name}'s "
                f"(it lacks {node.name}'s identity {identity_dns_name(node.name)}): another node answers at that "
                f"address, or the certificate was issued by an older mpc; check the address or reissue the "
                f"certificate with `mpc certs init`")
    if code == grpc.StatusCode.UNAVAILABLE:
        detail = (exc.details() or "").splitlines()[0][:200]
        return f"node {node.name} at {node.address} is unreachable ({detail})"
    return f"node {node.name} refused: {exc.details()} [{code.name}]"


Stub = TypeVar("Stub")


class Channels:
    """Lazily opened secure channels to the cluster's nodes, keyed by node name, and the stubs on them."""

    def __init__(self, cluster: ClusterConfig, tls: TlsMaterial) -> None:
        self.cluster = cluster
        self._credentials = tls.channel_credentials()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, Callable[[grpc.aio.Channel], Any]], Any] = {}

    def channel(self, name: str) -> grpc.aio.Channel:
        """The channel to node `name` (opened on first use).

        Raises: ConfigError if the cluster has no such node.
        """
        channel = self._channels.get(name)
        if channel is None:
            node = self.cluster.node(name)
            # The TLS target name is the node's identity, not its host: see mpc/transport/tls.py.
            channel = grpc.aio.secure_channel(node.address, self._credentials, options=channel_options(node.name))
            self._channels[name] = channel
        return channel

    def stub(self, name: str, kind: Callable[[grpc.aio.Channel], Stub]) -> Stub:
        """A stub of `kind` (a generated service stub class) on the channel to node `name`, made once: a
        stub makes a callable per method of its service, dearer than many a call it then makes.

        Raises: ConfigError if the cluster has no such node.
        """
        stub = self._stubs.get((name, kind))
        if stub is None:
            stub = self._stubs[(name, kind)] = kind(self.channel(name))
        return stub

    async def close(self) -> None:
        """Close every channel."""
        self._stubs = {}
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


def _frames(session_id: str, step: str, sender: str, payload: bytes,
            one_round: bool = False) -> Iterable[mpc_pb2.PeerFrame]:
    header = mpc_pb2.PeerHeader(session_id=session_id, step=step, sender=sender, payload_bytes=len(payload),
                                one_round=one_round)
    yield mpc_pb2.PeerFrame(header=header, chunk=payload[:CHUNK_BYTES])
    for start in range(CHUNK_BYTES, len(payload), CHUNK_BYTES):
        yield mpc_pb2.PeerFrame(chunk=payload[start:start + CHUNK_BYTES])


class LongCall:
    """A long-lived bidirectional gRPC call: writes go one at a time, a reader task hands every
    message that comes back to `route`, and once the call ends `failure` says why and every waiter
    is told (`fail`)."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.failure: BaseException | None = None
        self._writing = asyncio.Lock()   # gRPC takes one write at a time on a stream
        self.reader = asyncio.ensure_future(self._read())

    def route(self, message: Any) -> None:
        """Hand one message from the far end to whoever waits for it."""
        raise NotImplementedError

    def fail(self, failure: BaseException) -> None:
        """Tell every waiter that the call has ended."""
        raise NotImplementedError

    async def write(self, message: Any) -> None:
        """Write one message.

        Raises: AioRpcError or ConnectionError (the call has ended, or ends now).
        """
        async with self._writing:
            if self.failure is not None:
                raise self.failure
            try:
                await self.call.write(message)
            except grpc.aio.AioRpcError:
                raise
            except Exception as exc:   # e.g. InvalidStateError: the call ended before our reader saw it
                raise ConnectionError(f"the stream ended ({type(exc).__name__})") from None

    async def _read(self) -> None:
        failure: BaseException
        try:
            async for message in self.call:
                self.route(message)
            failure = ConnectionError("the far end ended the stream")
        except grpc.aio.AioRpcError as exc:
            failure = exc
        except asyncio.CancelledError:
            failure = ConnectionError("the stream was closed")
        self.failure = failure
        self.fail(failure)

    def close(self) -> None:
        """End the call (its reader then tells every waiter)."""
        self.call.cancel()
        self.reader.cancel()

    async def end(self, timeout: float) -> None:
        """End the call as gRPC ends one: nothing more is written (after a write in progress), the far end's
        handler returns, and the reader sees its status; cancelled (`close`) if that takes over `timeout`
        seconds or fails. Ended so, gRPC's core has answered all of the call when this returns: a call
        cancelled is answered later, perhaps after its event loop has closed (see mpc/aio.py)."""
        try:
            async with asyncio.timeout(timeout):
                async with self._writing:
                    await self.call.done_writing()
                await asyncio.wait([self.reader])   # it ends once the status has come (or the call failed)
        except Exception:   # TimeoutError, or the call failed: cancelled below
            pass
        finally:
            self.close()


class _Stream(LongCall):
    """The Peer.Stream to one node: messages numbered in order; the peer answers only those it
    refuses, and each refusal goes to `refused` (session id, the peer's reason). If the stream ends,
    the sessions that wrote on it lately are told (`refused`, with why): what was in flight may be
    lost, and they would otherwise wait for the peer until their deadline."""

    def __init__(self, channel: grpc.aio.Channel, refused: Callable[[str, str, bool], None]) -> None:
        self.seq = 0
        self._refused = refused
        self._sent: dict[int, str] = {}   # seq -> session id, the latest RECENT_SEQS messages
        super().__init__(mpc_pb2_grpc.PeerStub(channel).Stream())

    def route(self, message: Any) -> None:
        session_id = self._sent.get(message.seq)
        if session_id is not None and session_id == message.session_id:   # only a refusal of what we sent
            self._refused(session_id, f"refused: {message.error} [{message.code}]", False)

    def fail(self, failure: BaseException) -> None:
        why = describe_failure(failure)
        for session_id in dict.fromkeys(self._sent.values()):
            self._refused(session_id, f"the stream to it ended ({why}); messages to it may be lost", True)
        self._sent.clear()

    async def send(self, message: mpc_pb2.StreamMessage) -> None:
        """Write one message (its seq is set here)."""
        self.seq += 1
        message.seq = self.seq
        self._sent[self.seq] = message.bundle[0].header.session_id if message.bundle else message.header.session_id
        if len(self._sent) > RECENT_SEQS:
            del self._sent[next(iter(self._sent))]
        await self.write(message)


# Told how a posted message fared, exactly once: None once it is handed over, or why it could not be.
Done = Callable[[MpcError | None], None]
# Given every call of its own that carries a posted message (cancelling it withdraws the message).
Adopt = Callable[["asyncio.Task[None]"], None]
# How long `send` waits past a message's deadline for the call carrying it to give its own reason.
CALL_GRACE_S = 1.0


class _Queued:
    """A message posted to a peer's stream, waiting for the peer's writer; `report` tells its
    sender how it fared, once (later reports are ignored; what the sender's `done` raises is logged)."""

    __slots__ = ("message", "deadline", "done", "adopt", "reported")

    def __init__(self, message: mpc_pb2.PeerMessage, deadline: float, done: Done, adopt: Adopt | None) -> None:
        self.message = message
        self.deadline = deadline   # the event loop's clock
        self.done = done
        self.adopt = adopt
        self.reported = False   # told already, or handed to a call that tells it

    def report(self, failure: MpcError | None) -> None:
        if self.reported:
            return
        self.reported = True
        _tell(self.done, failure)


def _tell(done: Done, failure: MpcError | None) -> None:
    """Call a sender's `done`; what it raises is logged, so that the writer goes on for the others."""
    try:
        done(failure)
    except Exception:   # a bug in the sender's callback must not stop the messages after it
        log.exception("a sender's delivery callback failed")


class PeerClient:
    """Sends protocol messages from node `me` to its peers (implements node.core.PeerSender).

    A message that fits in one chunk goes over a long-lived Peer.Stream to its peer once the
    channel is up (a fraction of a unary call's cost per message); the first message to a peer, a
    large one, and one sent while the channel is down take a call of its own, which also waits for a
    reconnecting channel and names a wrong certificate.
    """

    def __init__(self, cluster: ClusterConfig, me: str, tls: TlsMaterial) -> None:
        self.me = me
        self.channels = Channels(cluster, tls)
        self._streams: dict[str, _Stream] = {}
        # Told (session id, peer, why, unavailable) when a peer refuses a message sent on its stream,
        # or the stream ends with messages of the session in flight (unavailable): node core fails the
        # session, as a refused or lost unary call fails the send.
        self.on_refusal: Callable[[str, str, str, bool], None] | None = None
        # Whether a session is one-round (node core): its messages tell the peer to wait for it.
        self.one_round: Callable[[str], bool] | None = None
        # Session ids whose messages always take an acknowledged call of their own (pool fills: the
        # receiver keeps a fill only once the peer has stored it).
        self.acknowledged: frozenset[str] = frozenset()
        self._outbox: dict[str, list[_Queued]] = {}
        self._writing: set[asyncio.Task[None]] = set()
        self._calling: set[asyncio.Task[None]] = set()

    def _refused(self, peer: str) -> Callable[[str, str, bool], None]:
        def refused(session_id: str, why: str, unavailable: bool) -> None:
            if self.on_refusal is not None:
                self.on_refusal(session_id, peer, f"session {session_id}: {self.me} -> node {peer} {why}", unavailable)
        return refused

    def _stream(self, to: str) -> _Stream | None:
        """The open stream to `to`, opened now if its channel is up (None: it is not)."""
        stream = self._streams.get(to)
        if stream is not None and stream.failure is None:
            return stream
        channel = self.channels.channel(to)
        if channel.get_state() != grpc.ChannelConnectivity.READY:
            return None
        if stream is not None:
            stream.close()
        stream = self._streams[to] = _Stream(channel, self._refused(to))
        return stream

    def post(self, to: str, session_id: str, step: str, payload: bytes, deadline: float, done: Done,
             adopt: Adopt | None = None) -> None:
        """Queue one message to node `to`, to be delivered before `deadline` (the event loop's
        clock); returns at once, and never calls `done` before it returns. `done` is then called
        exactly once: with None when the message is handed over (its peer's stream took it, or its
        own call was acknowledged), or with PeerUnavailable naming the peer if it cannot be reached
        before the deadline (or the client closes first), or SessionFailed with the peer's reason if
        it refuses the message on a call of its own, or the party that answers at its address is not
        that peer.

        On the peer's stream a refusal comes back later, to `on_refusal`. One writer per peer
        writes what is queued for it in order, without a task or timer per message; messages
        posted while it writes go out with its next write, and consecutive ones of one session
        travel as one stream message (a digest and a hello; a derandomisation and a first
        opening). A message the stream cannot take (the first to a peer, a large one, one posted
        while the channel is down, one whose stream ends before it is written) and every message of
        the channels in `acknowledged` (a node's pool fills) take a call of their own, which also
        waits for a reconnecting channel and names a wrong certificate; each such call's task is
        given to `adopt` (cancelling it withdraws the message).
        """
        one_round = self.one_round is not None and self.one_round(session_id)
        if len(payload) > CHUNK_BYTES or session_id in self.acknowledged or self._stream(to) is None:
            self._spawn_call(to, session_id, step, payload, deadline, one_round, done, adopt)
            return
        header = mpc_pb2.PeerHeader(session_id=session_id, step=step, sender=self.me, payload_bytes=len(payload),
                                    one_round=one_round)
        outbox = self._outbox.get(to)
        if outbox is None:   # no writer for this peer: start one (it runs once this turn's posts are in)
            outbox = self._outbox[to] = []
            task = asyncio.get_running_loop().create_task(self._writer(to))
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)
        outbox.append(_Queued(mpc_pb2.PeerMessage(header=header, payload=payload), deadline, done, adopt))

    async def send(self, to: str, session_id: str, step: str, payload: bytes, timeout: float) -> None:
        """Deliver one message to node `to` before `timeout` seconds pass, as `post` does, and wait
        until it is handed over (a caller that gives up withdraws a message on a call of its own).

        Raises: PeerUnavailable naming the peer if it cannot be reached in time;
        SessionFailed with the peer's reason if it refuses the message (on a call of its own), or
        if the party that answers at its address is not that peer (nothing is sent then).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.001)
        outcome: asyncio.Future[None] = loop.create_future()
        outcome.add_done_callback(lambda f: f.cancelled() or f.exception())   # it may outlive a caller that gave up
        calls: list[asyncio.Task[None]] = []

        def done(failure: MpcError | None) -> None:
            if outcome.done():   # the caller gave up already
                return
            if failure is None:
                outcome.set_result(None)
            else:
                outcome.set_exception(failure)

        self.post(to, session_id, step, payload, deadline, done, calls.append)
        try:
            # A call gives its own reason at the deadline; this bound is for a stream write held up.
            async with asyncio.timeout_at(deadline + CALL_GRACE_S):
                await outcome
        except TimeoutError:
            raise self._late(to, session_id) from None
        finally:
            for call in calls:   # given up on (cancelled, or out of time): withdrawn
                call.cancel()

    def _spawn_call(self, to: str, session_id: str, step: str, payload: bytes, deadline: float, one_round: bool,
                    done: Done, adopt: Adopt | None) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._call(to, session_id, step, payload, deadline - loop.time(), one_round), name=to)
        self._calling.add(task)

        def finished(task: asyncio.Task[None]) -> None:   # also when cancelled before it ever ran
            self._calling.discard(task)
            if task.cancelled():
                _tell(done, PeerUnavailable(f"session {session_id}: {self.me} -> node {to}: the message was "
                                            f"withdrawn before it was delivered"))
                return
            failure = task.exception()
            if failure is not None and not isinstance(failure, MpcError):   # a bug: the session still hears
                log.error("session %s: sending to %s failed", session_id, to, exc_info=failure)
                failure = SessionFailed(f"session {session_id}: {self.me} -> node {to}: internal error "
                                        f"({type(failure).__name__}; see the node's log)")
            _tell(done, failure)

        task.add_done_callback(finished)
        if adopt is not None:
            adopt(task)

    async def _writer(self, to: str) -> None:
        """Write what is queued for `to` until nothing is, then end (the next post starts another).

        Each round takes everything queued so far, in order: consecutive messages of one session as
        one bundle (at most MAX_BUNDLE, within a chunk), each reported once written. A message whose
        deadline has passed when its turn comes is not written (PeerUnavailable). If there is no
        open stream, or a write fails, the message and every later one of the round take a call of
        their own. Whatever is left unreported when the writer ends (the client is closing) is
        reported unavailable.
        """
        loop = asyncio.get_running_loop()
        queued: list[_Queued] = []
        try:
            while True:
                queued = self._outbox.get(to) or []
                if not queued:
                    self._outbox.pop(to, None)
                    return
                self._outbox[to] = []   # what is posted while this round writes waits for the next
                stream = self._stream(to)
                groups: list[list[_Queued]] = []
                size = 0
                for item in queued:
                    last = groups[-1] if groups else None
                    if last is not None and len(last) < MAX_BUNDLE and \
                            size + len(item.message.payload) <= CHUNK_BYTES and \
                            last[0].message.header.session_id == item.message.header.session_id:
                        last.append(item)
                        size += len(item.message.payload)
                    else:
                        groups.append([item])
                        size = len(item.message.payload)
                for i, group in enumerate(groups):
                    now = loop.time()
                    for item in group:
                        if item.deadline <= now:
                            item.report(self._late(to, item.message.header.session_id))
                    group = [item for item in group if not item.reported]
                    if not group:
                        continue
                    if stream is not None:
                        if len(group) == 1:
                            message = mpc_pb2.StreamMessage(header=group[0].message.header,
                                                            payload=group[0].message.payload)
                        else:
                            message = mpc_pb2.StreamMessage(bundle=[item.message for item in group])
                        try:
                            await stream.send(message)
                        except Exception:   # the stream ended (a bug included: every sender still hears)
                            stream = None
                        else:
                            for item in group:
                                item.report(None)
                            continue
                    # Nothing after a failed write goes on this stream: each message takes a call of
                    # its own, which waits for a reconnecting channel (and names a wrong certificate) as
                    # the first message to a peer does.
                    for rest in [group, *groups[i + 1:]]:
                        for item in rest:
                            if not item.reported:
                                header = item.message.header
                                item.reported = True   # its call reports it
                                self._spawn_call(to, header.session_id, header.step, item.message.payload,
                                                 item.deadline, header.one_round, item.done, item.adopt)
                    break
        finally:   # ended early (the client is closing, or a bug): what is left is reported, not lost
            self._abandon(to, [*queued, *self._outbox.pop(to, [])])

    def _abandon(self, to: str, items: Iterable[_Queued]) -> None:
        for item in items:
            item.report(PeerUnavailable(f"session {item.message.header.session_id}: {self.me} -> node {to}: the "
                                        f"message was not sent (this node is closing its peer streams)"))

    def _late(self, to: str, session_id: str) -> PeerUnavailable:
        node = self.channels.cluster.node(to)
        return PeerUnavailable(f"session {session_id}: {self.me} -> node {to} at {node.address} did not take the "
                               f"message in time")

    async def _call(self, to: str, session_id: str, step: str, payload: bytes, timeout: float,
                    one_round: bool = False) -> None:
        stub = self.channels.stub(to, mpc_pb2_grpc.PeerStub)

        async def frames() -> AsyncIterator[mpc_pb2.PeerFrame]:
            for frame in _frames(session_id, step, self.me, payload, one_round):
                yield frame

        async def call(timeout: float, wait_for_ready: bool) -> None:
            if len(payload) <= CHUNK_BYTES:
                header = mpc_pb2.PeerHeader(session_id=session_id, step=step, sender=self.me,
                                            payload_bytes=len(payload), one_round=one_round)
                await stub.Deliver(mpc_pb2.PeerMessage(header=header, payload=payload), timeout=max(timeout, 0.001),
                                   wait_for_ready=wait_for_ready)
            else:
                await stub.Send(frames(), timeout=max(timeout, 0.001), wait_for_ready=wait_for_ready)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            try:
                await call(timeout, False)
            except grpc.aio.AioRpcError as first:
                if first.code() != grpc.StatusCode.UNAVAILABLE or is_name_mismatch(first):
                    raise  # waiting for the channel cannot mend a certificate
                try:
                    await call(min(deadline - loop.time(), RECONNECT_GRACE_S), True)
                except grpc.aio.AioRpcError as again:
                    raise (first if again.code() in UNREACHABLE else again) from None
        except grpc.aio.AioRpcError as exc:
            node = self.channels.cluster.node(to)
            message = f"session {session_id}: {self.me} -> {describe_rpc_error(node, exc)}"
            if is_unreachable(exc):
                raise PeerUnavailable(message) from None
            raise SessionFailed(message) from None

    async def close(self) -> None:
        """Close the peer streams and channels."""
        for task in [*self._writing, *self._calling]:
            task.cancel()
        outboxes, self._outbox = self._outbox, {}   # a writer cancelled before it ran never sees its own
        for to, items in outboxes.items():
            self._abandon(to, items)
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.close()
        await asyncio.gather(*(s.reader for s in streams), return_exceptions=True)
        await self.channels.close()
