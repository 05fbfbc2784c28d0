"""Mutual TLS and caller identity on real grpc.aio node servers (loopback only).

Every negative case is a raw call crafted with the generated stubs, so that nothing in the
coordinator or peer client can hide what the node itself does with it: the handshake is
refused (UNAVAILABLE) when the caller has no certificate or one from another CA, and every
RPC that does get through is checked against the certificate's identity (DESIGN.md §2, §5).
After each refusal a proper coordinator call still succeeds: a refused caller never takes a
node down.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from mpc.config import ClusterConfig, load_cluster
from mpc.coordinator.client import Coordinator
from mpc.errors import ConfigError, PeerUnavailable, RemoteProtocolError, SessionFailed
from mpc.localcluster import write_local_cluster
from mpc.node import servicer as servicer_module
from mpc.node.daemon import NodeServer
from mpc.ot.pool import MAX_FILL_BYTES, POOL_CHANNEL, STEP_FILL
from mpc.pki import Identity, identity_dns_name, issue, make_ca
from mpc.protocols.agreement import STEP_DIGEST
from mpc.protocols.sum import STEP_SEED
from mpc.transport.peers import RECONNECT_GRACE_S, Channels, PeerClient, describe_rpc_error, is_name_mismatch
from mpc.transport.tls import CHUNK_BYTES, SERVER_OPTIONS, TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import ANY_QUERIES, NAMES, LocalCluster, Recorder, prepare_request, running_cluster

CALL_TIMEOUT = 5.0
SEED_MSG = struct.Struct("<16sQ")


# ---- helpers ---------------------------------------------------------------------------


def node_creds(lc: LocalCluster, name: str) -> grpc.ChannelCredentials:
    """Channel credentials holding node `name`'s own certificate and key."""
    node = lc.cluster.node(name)
    return TlsMaterial.load(lc.cluster.ca, node.cert, node.key).channel_credentials()


def coordinator_creds(lc: LocalCluster) -> grpc.ChannelCredentials:
    """Channel credentials holding the cluster's coordinator certificate and key."""
    me = lc.cluster.require_coordinator()
    return TlsMaterial.load(lc.cluster.ca, me.cert, me.key).channel_credentials()


@asynccontextmanager
async def dial(lc: LocalCluster, node: str, creds: grpc.ChannelCredentials,
               expect: str | None = None) -> AsyncIterator[grpc.aio.Channel]:
    """A secure channel to `node`'s address, expecting node `expect`'s certificate (default: `node`'s)."""
    target = lc.cluster.node(node)
    channel = grpc.aio.secure_channel(target.address, creds, options=channel_options(expect or target.name))
    try:
        yield channel
    finally:
        await channel.close()


async def refused(call: object) -> grpc.aio.AioRpcError:
    """Await a unary call (or drain a streaming one) that must fail; return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if hasattr(call, "__aiter__"):
            async for _ in call:  # type: ignore[attr-defined]
                pass
        else:
            await call  # type: ignore[misc]
    return err.value


def seed_frames(session_id: str, sender: str, payload: bytes | None = None, *, step: str = STEP_SEED,
                declared: int | None = None) -> list[mpc_pb2.PeerFrame]:
    """One well-formed seed message (or one whose header declares `declared` bytes)."""
    if payload is None:
        payload = SEED_MSG.pack(secrets.token_bytes(16), 1)
    header = mpc_pb2.PeerHeader(session_id=session_id, step=step, sender=sender,
                                payload_bytes=len(payload) if declared is None else declared)
    return [mpc_pb2.PeerFrame(header=header, chunk=payload)]


async def peer_send(channel: grpc.aio.Channel, frames: Iterable[mpc_pb2.PeerFrame]) -> mpc_pb2.PeerAck:
    """Peer.Send the frames on `channel` with a deadline."""
    return await mpc_pb2_grpc.PeerStub(channel).Send(iter(list(frames)), timeout=CALL_TIMEOUT)


async def assert_still_serving(lc: LocalCluster) -> None:
    """Every node answers a proper coordinator's Status, and a secure sum still works."""
    async with Coordinator(lc.cluster) as c:
        statuses = await c.status()
        assert all(s.healthy for s in statuses), [s.error for s in statuses if not s.healthy]
        result = await c.sum("x")
    assert result.value == 6


async def prepare_session(lc: LocalCluster, input_name: str = "x", parties: Sequence[str] | None = None,
                          timeout_ms: int = 20_000) -> str:
    """Prepare (but do not compute) a sum session on its parties with the real coordinator cert."""
    session_id = secrets.token_hex(16)
    parties = list(lc.cluster.nodes) if parties is None else list(parties)
    request = prepare_request(session_id, "sum", input_name, parties, timeout_ms=timeout_ms)
    for name in parties:
        async with dial(lc, name, coordinator_creds(lc)) as ch:
            reply = await mpc_pb2_grpc.ControlStub(ch).Prepare(request, timeout=CALL_TIMEOUT)
            assert reply.session_id == session_id and reply.length == 1
    return session_id


async def abort_session(lc: LocalCluster, session_id: str, parties: Sequence[str] | None = None) -> None:
    for name in lc.cluster.nodes if parties is None else parties:
        async with dial(lc, name, coordinator_creds(lc)) as ch:
            await mpc_pb2_grpc.ControlStub(ch).Abort(mpc_pb2.AbortRequest(session_id=session_id, reason="test"),
                                                     timeout=CALL_TIMEOUT)


async def start_compute(lc: LocalCluster, session_id: str, nodes: Sequence[str],
                        parties: Sequence[str] | None = None, *, may_end: bool = False,
                        ) -> dict[str, asyncio.Task[grpc.aio.AioRpcError | None]]:
    """Start a prepared sum session's Compute at `nodes` (as the real coordinator) and wait until each has
    made its engine (its session digest reached a peer): peer messages are fed to a node's engine only
    from then on; before, they wait unread (at most MAX_EARLY_MESSAGES of them). may_end: a node's
    Compute may also end first (an early message it replays at start fails it, and its error can
    come back before its digest, which goes on a channel to the peer that may still be connecting).

    Returns: per node, a task ending with the Compute call's error (None if it succeeded).
    """
    parties = list(lc.cluster.nodes) if parties is None else list(parties)
    versions: dict[str, int] = {}
    for name in parties:
        async with dial(lc, name, coordinator_creds(lc)) as ch:
            reply = await mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT)
        versions[name] = next(i.version for i in reply.inputs if i.name == "x")

    async def compute(name: str) -> grpc.aio.AioRpcError | None:
        async with dial(lc, name, coordinator_creds(lc)) as ch:
            try:
                async for _ in mpc_pb2_grpc.ControlStub(ch).Compute(mpc_pb2.ComputeRequest(
                        session_id=session_id, frac_bits=0, length=1, input_versions=versions,
                        lengths={p: 1 for p in parties}), timeout=30):
                    pass
            except grpc.aio.AioRpcError as err:
                return err
        return None

    tasks = {name: asyncio.ensure_future(compute(name)) for name in nodes}
    deadline = time.monotonic() + 10
    while not all((may_end and tasks[name].done()) or
                  any(s == session_id and sender == name and step == STEP_DIGEST
                      for got in lc.recorder.received.values() for s, sender, step, _ in got)
                  for name in nodes):
        assert time.monotonic() < deadline, "the nodes did not start computing"
        assert may_end or not any(t.done() for t in tasks.values()), \
            {n: t.result() for n, t in tasks.items() if t.done()}
        await asyncio.sleep(0.02)
    return tasks


async def active_sessions(lc: LocalCluster, name: str) -> int:
    async with dial(lc, name, coordinator_creds(lc)) as ch:
        reply = await mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT)
    return reply.active_sessions


@asynccontextmanager
async def cluster3(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """alice, bob, carlos with scalar input x = 1, 2, 3."""
    async with running_cluster(tmp_path, 3) as lc:
        for value, name in enumerate(lc.cluster.nodes, start=1):
            lc.put(name, "x", [value], scalar=True)
        yield lc


# ---- the TLS handshake -----------------------------------------------------------------


def test_no_client_certificate_is_refused_at_the_handshake(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            ca = lc.cluster.ca.read_bytes()
            bare = grpc.ssl_channel_credentials(root_certificates=ca)
            async with dial(lc, "alice", bare) as ch:
                err = await refused(mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(),
                                                                        timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                # The peer service is behind the same handshake.
                err = await refused(peer_send(ch, seed_frames("0" * 32, "alice")))
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            assert not any(lc.recorder.received.values())  # nothing was delivered
            await assert_still_serving(lc)
    asyncio.run(go())


def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path / "cluster") as lc:
            rogue_ca = tmp_path / "rogue-ca"
            make_ca(rogue_ca)
            # Same names as the real parties, so only the issuer differs.
            coord_cert, coord_key = issue(tmp_path / "rogue", rogue_ca, Identity("coordinator", "coordinator"))
            node_cert, node_key = issue(tmp_path / "rogue", rogue_ca, Identity("node", "alice"), hosts=["alice"])
            for cert, key in ((coord_cert, coord_key), (node_cert, node_key)):
                # It trusts the cluster's CA (so it could verify the server), but its own
                # certificate chains to the rogue CA.
                creds = TlsMaterial.load(lc.cluster.ca, cert, key).channel_credentials()
                async with dial(lc, "bob", creds) as ch:
                    err = await refused(mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(),
                                                                            timeout=CALL_TIMEOUT))
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                    err = await refused(peer_send(ch, seed_frames("0" * 32, "alice")))
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            # A client that trusts only the rogue CA refuses the real node's certificate.
            creds = TlsMaterial.load(rogue_ca / "ca.pem", coord_cert, coord_key).channel_credentials()
            async with dial(lc, "bob", creds) as ch:
                err = await refused(mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(),
                                                                        timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            await assert_still_serving(lc)
    asyncio.run(go())


def test_expired_client_certificate_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path / "cluster") as lc:
            ca_dir = lc.cluster.ca.parent
            now = datetime.now(UTC)
            cert, key = issue(tmp_path / "old", ca_dir, Identity("coordinator", "coordinator"),
                              not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
            creds = TlsMaterial.load(lc.cluster.ca, cert, key).channel_credentials()
            async with dial(lc, "alice", creds) as ch:
                err = await refused(mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(),
                                                                        timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            await assert_still_serving(lc)
    asyncio.run(go())


def test_client_checks_the_server_name(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            creds = coordinator_creds(lc)
            # alice's address, but expecting bob's certificate: alice's certificate does not
            # carry bob's identity, so the client refuses the connection.
            async with dial(lc, "alice", creds, expect="bob") as ch:
                err = await refused(mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(),
                                                                        timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            async with dial(lc, "alice", creds, expect="not-a-node") as ch:
                err = await refused(mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(),
                                                                        timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            # Positive control: the right name on the same address and credentials works.
            async with dial(lc, "alice", creds) as ch:
                reply = await mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT)
            assert reply.node == "alice"
            await assert_still_serving(lc)
    asyncio.run(go())


# ---- the client checks whom it reached, not only the host name ---------------------------------

SHARED_HOSTS = ["localhost", "127.0.0.1"]   # every node on one machine is reached by these


@asynccontextmanager
async def one_machine(tmp: Path, *, older: Sequence[str] = ()) -> AsyncIterator[LocalCluster]:
    """alice, bob, carlos on 127.0.0.1 (x = 1, 2, 3), their certificates all issued for the same
    host names, as for nodes on one machine; those in `older` as an older mpc issued them,
    without the identity DNS name."""
    names = NAMES[:3]
    cluster = load_cluster(write_local_cluster(tmp, names))
    certs = cluster.ca.parent
    for name in names:
        issue(certs, certs, Identity("node", name), hosts=SHARED_HOSTS, identity_dns=name not in older)
    recorder = Recorder()
    lc = LocalCluster(cluster, {}, recorder)
    try:
        for name in names:
            await start_node(lc, name)
        for value, name in enumerate(names, start=1):
            lc.put(name, "x", [value], scalar=True)
        yield lc
    finally:
        for server in list(lc.servers.values()):
            await server.stop(0)


async def start_node(lc: LocalCluster, name: str) -> None:
    server = NodeServer(lc.cluster, name, observer=lc.recorder.for_node(name))
    await server.start()
    lc.servers[name] = server


def redirected(cluster: ClusterConfig, name: str, to: str) -> ClusterConfig:
    """A copy of the cluster file in which node `name`'s address is node `to`'s."""
    nodes = {n: replace(node, address=cluster.node(to).address) if n == name else node
             for n, node in cluster.nodes.items()}
    return replace(cluster, nodes=nodes)


def calls_reaching(server: NodeServer) -> list[str]:
    """Record every Control or Peer call that gets past the handshake to the node's core."""
    seen: list[str] = []
    core = server.core
    for method in ("status", "prepare", "refused", "compute", "abort", "progress", "admit", "deliver"):
        original = getattr(core, method)

        def spy(*args: object, _method: str = method, _original: Any = original, **kwargs: object) -> Any:
            seen.append(_method)
            return _original(*args, **kwargs)
        setattr(core, method, spy)
    return seen


def assert_says_not_that_node(message: str, node: str, address: str, reached: str) -> None:
    """The clear refusal: names the node, where it was dialled and reached, and what is missing."""
    assert f"node {node} at {address} (reached {reached}): the certificate there is not node {node}'s" in message, \
        message
    assert f"it lacks {node}'s identity {identity_dns_name(node)}" in message, message
    assert "another node answers at that address" in message and "older mpc" in message, message
    assert "reissue the certificate with `mpc certs init`" in message, message
    assert "unreachable" not in message, message


def test_coordinator_that_reaches_another_node_is_refused_at_the_handshake(tmp_path: Path) -> None:
    async def go() -> None:
        async with one_machine(tmp_path) as lc:
            bob = lc.cluster.node("bob")
            # The coordinator dials alice, but its cluster file gives alice bob's port.
            misdirected = redirected(lc.cluster, "alice", to="bob")
            seen = calls_reaching(lc.servers["bob"])
            async with Coordinator(misdirected, nodes=("alice",)) as c:
                [status] = await c.status()
            assert (status.name, status.healthy) == ("alice", False), status
            assert_says_not_that_node(status.error, "alice", bob.address, bob.address)
            me = lc.cluster.require_coordinator()
            channels = Channels(misdirected, TlsMaterial.load(lc.cluster.ca, me.cert, me.key))
            try:
                request = prepare_request(secrets.token_hex(16), "sum", "x", list(lc.cluster.nodes))
                err = await refused(mpc_pb2_grpc.ControlStub(channels.channel("alice")).Prepare(
                    request, timeout=CALL_TIMEOUT))
            finally:
                await channels.close()
            assert is_name_mismatch(err), err
            assert_says_not_that_node(describe_rpc_error(misdirected.node("alice"), err), "alice", bob.address,
                                      bob.address)
            # Nothing got through to bob: no call, no session.
            assert seen == [] and not any(lc.recorder.received.values())
            # Control: the host-name check alone (what clients did before) lets bob pass for alice.
            creds = coordinator_creds(lc)
            before = [("grpc.ssl_target_name_override", "localhost"), *channel_options("alice")[1:]]
            async with grpc.aio.secure_channel(bob.address, creds, options=before) as ch:
                reply = await mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT)
            assert reply.node == "bob" and reply.active_sessions == 0 and "status" in seen, (reply, seen)
            # A whole computation through the misdirected file is refused naming alice.
            async with Coordinator(misdirected) as c:
                with pytest.raises((PeerUnavailable, SessionFailed)) as failed:
                    await c.sum("x")
            message = str(failed.value)
            assert "nothing was revealed" in message, message
            assert_says_not_that_node(message, "alice", bob.address, bob.address)
            # The right file reaches every node (the shared host names are no obstacle).
            await assert_still_serving(lc)
    asyncio.run(go())


def test_peer_that_reaches_another_node_is_refused_at_the_handshake(tmp_path: Path) -> None:
    async def go() -> None:
        async with one_machine(tmp_path) as lc:
            session_id = await prepare_session(lc)
            bob = lc.cluster.node("bob")
            seen = calls_reaching(lc.servers["bob"])
            # carlos's copy of the cluster file gives alice bob's port.
            carlos = lc.cluster.node("carlos")
            client = PeerClient(redirected(lc.cluster, "alice", to="bob"), "carlos",
                                TlsMaterial.load(lc.cluster.ca, carlos.cert, carlos.key))
            start = time.monotonic()
            try:
                with pytest.raises(SessionFailed) as failed:
                    await client.send("alice", session_id, STEP_SEED, SEED_MSG.pack(secrets.token_bytes(16), 1),
                                      timeout=10.0)
            finally:
                await client.close()
            took = time.monotonic() - start
            message = str(failed.value)
            assert message.startswith(f"session {session_id}: carlos -> node alice at {bob.address} "), message
            assert_says_not_that_node(message, "alice", bob.address, bob.address)
            assert took < RECONNECT_GRACE_S, f"retried or waited: {took:.1f} s"  # no retry can mend it
            assert seen == [] and not any(lc.recorder.received.values())
            # Control: the same kind of client on the right file delivers (alice owes bob a seed).
            alice = lc.cluster.node("alice")
            client = PeerClient(lc.cluster, "alice", TlsMaterial.load(lc.cluster.ca, alice.cert, alice.key))
            try:
                await client.send("bob", session_id, STEP_SEED, SEED_MSG.pack(secrets.token_bytes(16), 1),
                                  timeout=10.0)
            finally:
                await client.close()
            assert [(s, sender) for s, sender, _, _ in lc.recorder.received["bob"]] == [(session_id, "alice")]
            assert "deliver" in seen, seen   # the spy does see calls that get through
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
    asyncio.run(go())


def test_certificate_without_the_identity_name_is_refused_with_advice_to_reissue(tmp_path: Path) -> None:
    async def go() -> None:
        async with one_machine(tmp_path, older=("alice",)) as lc:
            alice, bob = lc.cluster.node("alice"), lc.cluster.node("bob")
            seen = calls_reaching(lc.servers["alice"])
            async with Coordinator(lc.cluster) as c:
                statuses = {s.name: s for s in await c.status()}
                assert not statuses["alice"].healthy, statuses["alice"]
                assert_says_not_that_node(statuses["alice"].error, "alice", alice.address, alice.address)
                assert statuses["bob"].healthy and statuses["carlos"].healthy, statuses
                with pytest.raises((PeerUnavailable, SessionFailed)) as failed:
                    await c.sum("x")
            assert "nothing was revealed" in str(failed.value), failed.value
            assert_says_not_that_node(str(failed.value), "alice", alice.address, alice.address)
            client = PeerClient(lc.cluster, "bob", TlsMaterial.load(lc.cluster.ca, bob.cert, bob.key))
            try:
                with pytest.raises(SessionFailed) as failed:
                    await client.send("alice", secrets.token_hex(16), STEP_SEED, b"", timeout=10.0)
            finally:
                await client.close()
            assert "bob -> node alice" in str(failed.value), failed.value
            assert_says_not_that_node(str(failed.value), "alice", alice.address, alice.address)
            assert seen == [] and not any(lc.recorder.received.values())
            # Reissued as the message advises (same CA, same host names), alice is reached again.
            await lc.stop("alice")
            issue(lc.cluster.ca.parent, lc.cluster.ca.parent, Identity("node", "alice"), hosts=SHARED_HOSTS)
            await start_node(lc, "alice")
            await assert_still_serving(lc)
    asyncio.run(go())


# ---- roles: control RPCs only from a coordinator, peer RPCs only from cluster nodes ------------


def test_node_certificate_may_not_call_control_rpcs(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = secrets.token_hex(16)
            async with dial(lc, "alice", node_creds(lc, "bob")) as ch:
                stub = mpc_pb2_grpc.ControlStub(ch)
                calls = {
                    "Prepare": stub.Prepare(prepare_request(session_id, "sum", "x", list(lc.cluster.nodes)),
                                            timeout=CALL_TIMEOUT),
                    "Compute": stub.Compute(mpc_pb2.ComputeRequest(session_id=session_id, frac_bits=0, length=1),
                                            timeout=CALL_TIMEOUT),
                    "Abort": stub.Abort(mpc_pb2.AbortRequest(session_id=session_id, reason="x"),
                                        timeout=CALL_TIMEOUT),
                    "Status": stub.Status(mpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT),
                }
                for method, call in calls.items():
                    err = await refused(call)
                    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (method, err)
                    details = err.details() or ""
                    assert "only coordinator" in details, (method, details)
                    assert f"Control.{method}" in details and "spiffe://mpc/node/bob" in details, details
            # The refused Prepare registered nothing.
            assert await active_sessions(lc, "alice") == 0
            await assert_still_serving(lc)
    asyncio.run(go())


def test_coordinator_certificate_may_not_call_peer_send(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            async with dial(lc, "bob", coordinator_creds(lc)) as ch:
                # Even claiming to be the coordinator itself, or a node of the session.
                for sender in ("coordinator", "alice"):
                    err = await refused(peer_send(ch, seed_frames(session_id, sender)))
                    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
                    assert "only node" in (err.details() or ""), err.details()
            assert not lc.recorder.received.get("bob")
            assert await active_sessions(lc, "bob") == 1  # the session is untouched
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
    asyncio.run(go())


def test_sender_must_match_the_certificate(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            # bob forges a seed "from alice" to carlos (alice does owe carlos a seed).
            async with dial(lc, "carlos", node_creds(lc, "bob")) as ch:
                err = await refused(peer_send(ch, seed_frames(session_id, "alice")))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
            details = err.details() or ""
            assert "'alice'" in details and "spiffe://mpc/node/bob" in details, details
            # The forged message was dropped before the session saw it, and the session lives on.
            assert not lc.recorder.received.get("carlos")
            assert await active_sessions(lc, "carlos") == 1
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
    asyncio.run(go())


def test_node_outside_the_cluster_may_not_call_peer_send(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            cert, key = issue(tmp_path / "mallory", lc.cluster.ca.parent, Identity("node", "mallory"),
                              hosts=["mallory"])
            creds = TlsMaterial.load(lc.cluster.ca, cert, key).channel_credentials()
            async with dial(lc, "carlos", creds) as ch:
                for sender in ("mallory", "alice"):
                    err = await refused(peer_send(ch, seed_frames(session_id, sender)))
                    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
                    details = err.details() or ""
                    assert "spiffe://mpc/node/mallory" in details and "not a node of this cluster" in details, details
                # mallory's valid-CA certificate passes the handshake, but it is still no coordinator.
                err = await refused(mpc_pb2_grpc.ControlStub(ch).Status(mpc_pb2.StatusRequest(),
                                                                        timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
            assert not lc.recorder.received.get("carlos")
            assert await active_sessions(lc, "carlos") == 1
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
    asyncio.run(go())


def test_another_coordinator_may_not_take_over_a_session(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            cert, key = issue(tmp_path / "eve", lc.cluster.ca.parent, Identity("coordinator", "eve"))
            creds = TlsMaterial.load(lc.cluster.ca, cert, key).channel_credentials()
            async with dial(lc, "alice", creds) as ch:
                stub = mpc_pb2_grpc.ControlStub(ch)
                err = await refused(stub.Compute(mpc_pb2.ComputeRequest(session_id=session_id, frac_bits=0,
                                                                        length=1), timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
                assert "another coordinator" in (err.details() or "")
                err = await refused(stub.Abort(mpc_pb2.AbortRequest(session_id=session_id, reason="x"),
                                               timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
            assert await active_sessions(lc, "alice") == 1
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
    asyncio.run(go())


# ---- messages: unknown or finished sessions, malformed frames ---------------------------------


def test_peer_message_for_an_unknown_session_is_not_found(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            async with dial(lc, "bob", node_creds(lc, "alice")) as ch:
                for session_id in (secrets.token_hex(16), "not-a-session-id", ""):
                    err = await refused(peer_send(ch, seed_frames(session_id, "alice")))
                    assert err.code() == grpc.StatusCode.NOT_FOUND, (session_id, err)
                    assert "unknown session" in (err.details() or "") and "bob" in (err.details() or "")
            assert not lc.recorder.received.get("bob")
            await assert_still_serving(lc)
    asyncio.run(go())


def test_malformed_peer_streams_are_invalid_argument(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            good = SEED_MSG.pack(secrets.token_bytes(16), 1)
            header = mpc_pb2.PeerHeader(session_id=session_id, step=STEP_SEED, sender="alice",
                                        payload_bytes=len(good))
            cases: dict[str, tuple[list[mpc_pb2.PeerFrame], str]] = {
                "no header on the first frame": ([mpc_pb2.PeerFrame(chunk=good)], "carries no header"),
                "payload longer than declared": (seed_frames(session_id, "alice", good + b"\0",
                                                             declared=len(good)), "longer"),
                "payload shorter than declared": (seed_frames(session_id, "alice", good[:-1],
                                                              declared=len(good)), "declared 24"),
                "longer across frames": ([mpc_pb2.PeerFrame(header=header, chunk=good[:10]),
                                          mpc_pb2.PeerFrame(chunk=good[10:] + b"xx")], "longer"),
                "header on a later frame": ([mpc_pb2.PeerFrame(header=header, chunk=good[:10]),
                                             mpc_pb2.PeerFrame(header=header, chunk=good[10:])], "after the first"),
                "empty stream": ([], "empty peer stream"),
                "oversized declaration": (seed_frames(session_id, "alice", good, declared=1 << 40), "exceeds"),
            }
            async with dial(lc, "bob", node_creds(lc, "alice")) as ch:
                for what, (frames, needle) in cases.items():
                    err = await refused(peer_send(ch, frames))
                    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, err)
                    assert needle in (err.details() or ""), (what, err.details())
            # Framing is checked before the session sees anything: it is still live.
            assert not lc.recorder.received.get("bob")
            assert await active_sessions(lc, "bob") == 1
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
    asyncio.run(go())


def test_bad_seed_payload_fails_the_session(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            # Before a node computes, peer messages wait unread: a malformed one is caught when it does.
            async with dial(lc, "bob", node_creds(lc, "alice")) as ch:
                await peer_send(ch, seed_frames(session_id, "alice", b"\1" * 23))
            assert await active_sessions(lc, "bob") == 1
            early = await start_compute(lc, session_id, ["bob"], may_end=True)
            err = await asyncio.wait_for(early["bob"], 10)
            assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            assert "expected 24" in (err.details() or ""), err.details()
            assert await active_sessions(lc, "bob") == 0
            await abort_session(lc, session_id)

            session_id = await prepare_session(lc)
            computing = await start_compute(lc, session_id, ["bob", "carlos"])
            async with dial(lc, "bob", node_creds(lc, "alice")) as ch:
                # Well framed, but a 23-byte seed message: the protocol step rejects it.
                err = await refused(peer_send(ch, seed_frames(session_id, "alice", b"\1" * 23)))
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
                assert "expected 24" in (err.details() or "")
                # A node that misbehaves ends the session at the receiver; later messages are refused.
                err = await refused(peer_send(ch, seed_frames(session_id, "alice")))
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
                assert "failed" in (err.details() or "")
            # The receiver's Compute ends with the cause; nothing was opened.
            err = await asyncio.wait_for(computing["bob"], 10)
            assert err is not None and err.code() == grpc.StatusCode.ABORTED, err
            assert "bad message from alice" in (err.details() or "") and "expected 24" in (err.details() or "")
            async with dial(lc, "carlos", node_creds(lc, "bob")) as ch:
                # Wrong step for the sum.
                err = await refused(peer_send(ch, seed_frames(session_id, "bob", step="vote/open")))
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
            err = await asyncio.wait_for(computing["carlos"], 10)
            assert err is not None and err.code() == grpc.StatusCode.ABORTED, err
            assert "bad message from bob" in (err.details() or ""), err.details()
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
    asyncio.run(go())


def test_replayed_seed_for_a_finished_session_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            async with Coordinator(lc.cluster) as c:
                result = await c.sum("x")
            assert result.value == 6
            received = [(s, sender, step, p) for s, sender, step, p in lc.recorder.received["bob"]
                        if s == result.session_id]
            # bob received one session digest from each peer (the agreement step) and alice's seed.
            assert sorted((sender, step) for _, sender, step, _ in received) == sorted(
                [("alice", STEP_DIGEST), ("carlos", STEP_DIGEST), ("alice", STEP_SEED)])
            seeds = [r for r in received if r[2] == STEP_SEED]
            session_id, sender, step, payload = seeds[0]
            before = lc.recorder.counts()
            # alice's own certificate replays alice's own message byte for byte.
            async with dial(lc, "bob", node_creds(lc, "alice")) as ch:
                err = await refused(peer_send(ch, seed_frames(session_id, sender, payload, step=step)))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
            details = err.details() or ""
            assert session_id in details and "is done" in details, details
            assert lc.recorder.counts() == before
            await assert_still_serving(lc)
    asyncio.run(go())


def test_only_the_sessions_parties_may_send_and_only_what_they_owe(tmp_path: Path) -> None:
    async def go() -> None:
        # The owners let a subset of their cluster run a session (by default each node joins only
        # sessions of every node in its cluster file), so that david can be outside this one.
        async with running_cluster(tmp_path, 4, every_policy=ANY_QUERIES) as lc:
            for value, name in enumerate(lc.cluster.nodes, start=1):
                lc.put(name, "x", [value], scalar=True)
            parties = ("alice", "bob", "carlos")          # david is in the cluster, not in the session
            session_id = await prepare_session(lc, parties=parties)
            async with dial(lc, "bob", node_creds(lc, "david")) as ch:
                err = await refused(peer_send(ch, seed_frames(session_id, "david")))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
            assert "'david' is not a peer in session" in (err.details() or "")
            async with dial(lc, "alice", node_creds(lc, "alice")) as ch:   # a party to itself
                err = await refused(peer_send(ch, seed_frames(session_id, "alice")))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
            assert not any(lc.recorder.received.values())
            assert await active_sessions(lc, "bob") == 1
            computing = await start_compute(lc, session_id, ["bob"], parties)
            # carlos is later than bob in the party order: bob sends carlos a seed, not the reverse.
            async with dial(lc, "bob", node_creds(lc, "carlos")) as ch:
                err = await refused(peer_send(ch, seed_frames(session_id, "carlos")))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            assert "does not send a seed" in (err.details() or "")
            assert await active_sessions(lc, "bob") == 0      # the misbehaving message ended it there
            err = await asyncio.wait_for(computing["bob"], 10)
            assert err is not None and err.code() == grpc.StatusCode.ABORTED, err
            assert "bad message from carlos" in (err.details() or ""), err.details()
            await abort_session(lc, session_id, parties)
            async with Coordinator(lc.cluster, nodes=parties) as c:
                assert (await c.sum("x")).value == 6
    asyncio.run(go())


def test_a_finished_session_cannot_be_prepared_or_computed_again(tmp_path: Path) -> None:
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            async with Coordinator(lc.cluster) as c:
                session_id = (await c.sum("x")).session_id
            async with dial(lc, "alice", coordinator_creds(lc)) as ch:
                stub = mpc_pb2_grpc.ControlStub(ch)
                err = await refused(stub.Prepare(prepare_request(session_id, "sum", "x", list(lc.cluster.nodes)),
                                                 timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
                assert "already exists" in (err.details() or "")
                # No second output share for the same session.
                err = await refused(stub.Compute(mpc_pb2.ComputeRequest(session_id=session_id, frac_bits=0, length=1),
                                                 timeout=CALL_TIMEOUT))
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
                assert "is done" in (err.details() or "")
            await assert_still_serving(lc)
    asyncio.run(go())


def test_a_node_refuses_to_start_twice_or_with_a_certificate_not_its_own(tmp_path: Path) -> None:
    """A second daemon for a running node (alice) is refused at once, naming her data directory,
    before it touches her store: her prepared session stays live (a second daemon used to mark it
    interrupted). Nor can anything bind her address with the nodes' server options: gRPC binds with
    SO_REUSEPORT by default, and a second daemon then shared the port, the kernel splitting the
    connections between the two, so that every later session failed. A daemon given another node's
    certificate, or a key not its certificate's, refuses to start, naming the files; a coordinator given a
    key not its certificate's fails its session naming them."""
    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            alice = lc.cluster.node("alice")
            with pytest.raises(ConfigError, match=re.escape(
                    f"node alice: data directory {str(alice.data_dir)!r} is in use by another running node daemon "
                    f"(it holds node.lock); stop that one first")):
                NodeServer(lc.cluster, "alice")
            other = grpc.aio.server(options=SERVER_OPTIONS)
            with pytest.raises(RuntimeError, match="Failed to bind"):
                other.add_insecure_port(alice.listen)
            assert session_id in lc.servers["alice"].core.sessions
            await abort_session(lc, session_id)
            await assert_still_serving(lc)
            await lc.stop("alice")                     # the lock goes with the daemon
            # A daemon given another node's certificate and key (or a key not its certificate's)
            # refuses to start, naming the files, before it touches the store.
            bob = lc.cluster.node("bob")
            for cert, key, message in ((bob.cert, bob.key, f"node alice: certificate {bob.cert} is "
                                        f"spiffe://mpc/node/bob's, not node alice's"),
                                       (alice.cert, bob.key, f"private key {bob.key} is not the key of "
                                        f"certificate {alice.cert}")):
                swapped = replace(lc.cluster, nodes={**lc.cluster.nodes, "alice": replace(alice, cert=cert, key=key)})
                with pytest.raises(ConfigError, match=re.escape(message)):
                    NodeServer(swapped, "alice")
            await start_node(lc, "alice")
            await assert_still_serving(lc)
            # A coordinator whose key is not its certificate's reaches no node; it says why, naming the
            # files, instead of only "unreachable". Control: with its own key, the same sum works.
            me = lc.cluster.require_coordinator()
            wrong = replace(lc.cluster, coordinator=replace(me, key=bob.key))
            async with Coordinator(wrong) as c:
                with pytest.raises(ConfigError) as err:
                    await c.sum("x")
            message = str(err.value)
            assert f"coordinator: private key {bob.key} is not the key of certificate {me.cert}, so no node can " \
                   f"be reached" in message and "unreachable" in message, message
            async with Coordinator(lc.cluster) as c:
                assert (await c.sum("x")).value == 6
    asyncio.run(go())


def test_refusable_header_is_refused_before_the_payload_is_read(tmp_path: Path) -> None:
    """A stream whose header alone is refusable is refused at once, while it is still open.

    Regression test: at a9ce7b7 the server buffered the declared payload (up to
    MAX_PEER_PAYLOAD = 1 GiB) and only then checked the claimed sender and the session, so a
    stalled or huge stream held memory and a handler until its deadline (DEADLINE_EXCEEDED
    here instead of the refusal). A pool fill, which belongs to no session, is bounded by the
    largest fill (16 MiB): any peer could otherwise make a node buffer 1 GiB per stream.
    """
    async def stalled_send(lc: LocalCluster, to: str, as_node: str, session_id: str,
                           sender: str) -> grpc.aio.AioRpcError:
        release = asyncio.Event()

        async def frames() -> AsyncIterator[mpc_pb2.PeerFrame]:
            header = mpc_pb2.PeerHeader(session_id=session_id, step=STEP_SEED, sender=sender,
                                        payload_bytes=1 << 29)
            yield mpc_pb2.PeerFrame(header=header, chunk=bytes(1024))
            try:  # keep the stream open (bounded) as a slow or huge sender would
                await asyncio.wait_for(release.wait(), 10)
            except TimeoutError:
                pass

        try:
            async with dial(lc, to, node_creds(lc, as_node)) as ch:
                # The deadline is far longer than an answer takes, far shorter than the stall.
                return await refused(mpc_pb2_grpc.PeerStub(ch).Send(frames(), timeout=3.0))
        finally:
            release.set()

    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            session_id = await prepare_session(lc)
            err = await stalled_send(lc, "carlos", "bob", session_id, "alice")        # forged sender
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
            err = await stalled_send(lc, "bob", "alice", secrets.token_hex(16), "alice")  # unknown session
            assert err.code() == grpc.StatusCode.NOT_FOUND, err
            await abort_session(lc, session_id)
            err = await stalled_send(lc, "bob", "alice", session_id, "alice")         # finished session
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
            err = await stalled_send(lc, "bob", "alice", POOL_CHANNEL, "alice")       # longer than any fill
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            assert f"exceeds the {MAX_FILL_BYTES}-byte limit of a pool fill" in (err.details() or ""), err
            assert not any(lc.recorder.received.values())
            await assert_still_serving(lc)
    asyncio.run(go())


def test_a_send_whose_frames_stall_is_cut_off_by_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer sets its own call's deadline, and a hostile one sets none: a Send that stops sending
    held a handler and its buffer (up to MAX_PEER_PAYLOAD) for as long as the peer kept its connection
    up. The node bounds it itself: the header within FIRST_FRAME_S, a session's message before the
    session's deadline, a pool fill within FILL_TIMEOUT_S; each stalled call is cut off naming why,
    nothing it brought is delivered, and the node serves on. (The peer's own call here would wait 60 s.)"""
    monkeypatch.setattr(servicer_module, "FIRST_FRAME_S", 1.0)
    monkeypatch.setattr(servicer_module, "FILL_TIMEOUT_S", 1.0)

    async def stalled(lc: LocalCluster, session_id: str | None, step: str) -> tuple[grpc.aio.AioRpcError, bool]:
        """A Send from alice to bob that stops after its header (or sends none: session_id None);
        returns the error and whether the sender was still stalling when it came."""
        release, stalling = asyncio.Event(), [True]

        async def frames() -> AsyncIterator[mpc_pb2.PeerFrame]:
            if session_id is not None:
                header = mpc_pb2.PeerHeader(session_id=session_id, step=step, sender="alice",
                                            payload_bytes=4 * CHUNK_BYTES)
                yield mpc_pb2.PeerFrame(header=header, chunk=bytes(1024))
            try:   # held open, as a stalled or hostile sender would (bounded)
                await asyncio.wait_for(release.wait(), 30)
            except TimeoutError:
                pass
            stalling[0] = False
            yield mpc_pb2.PeerFrame(chunk=bytes(1024))

        try:
            async with dial(lc, "bob", node_creds(lc, "alice")) as ch:
                err = await refused(mpc_pb2_grpc.PeerStub(ch).Send(frames(), timeout=60.0))
                return err, stalling[0]
        finally:
            release.set()

    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            err, stalling = await stalled(lc, None, STEP_SEED)
            assert stalling and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            assert "peer Send from alice: no frame within 1 s of the call" in (err.details() or ""), err
            session_id = await prepare_session(lc, timeout_ms=1500)
            err, stalling = await stalled(lc, session_id, STEP_SEED)
            assert stalling and err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
            assert f"session {session_id}: the '{STEP_SEED}' message from alice did not arrive whole before the " \
                   f"session's deadline" in (err.details() or ""), err
            err, stalling = await stalled(lc, POOL_CHANNEL, STEP_FILL)
            assert stalling and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            assert "triple pool fill from alice: not whole within 1 s" in (err.details() or ""), err
            assert not lc.servers["bob"].core._fills_arriving   # the fill's turn is given back
            assert not any(lc.recorder.received.values())
            await assert_still_serving(lc)
    asyncio.run(go())


def test_a_peer_has_one_pool_fill_read_at_a_time(tmp_path: Path) -> None:
    """A pool fill belongs to no session and is read whole (up to 16 MiB) before it is taken, its IKNP
    extension run in a worker thread: a peer that opened many at once would take that memory and CPU
    many times over. A node reads one fill at a time from each peer, as a peer's filler sends them:
    a second from the same peer while the first is still open is refused at once (RESOURCE_EXHAUSTED),
    one from another peer is not held up, and once the first has ended the next is read again."""
    async def fill(lc: LocalCluster, as_node: str, release: asyncio.Event) -> grpc.aio.AioRpcError:
        async def frames() -> AsyncIterator[mpc_pb2.PeerFrame]:
            header = mpc_pb2.PeerHeader(session_id=POOL_CHANNEL, step=STEP_FILL, sender=as_node,
                                        payload_bytes=MAX_FILL_BYTES)
            yield mpc_pb2.PeerFrame(header=header, chunk=bytes(1024))
            try:  # held open, as a slow or hostile sender would, until released (bounded)
                await asyncio.wait_for(release.wait(), 10)
            except TimeoutError:
                pass
            yield mpc_pb2.PeerFrame(chunk=bytes(1024))   # then ends, far short of what it declared

        async with dial(lc, "bob", node_creds(lc, as_node)) as ch:
            return await refused(mpc_pb2_grpc.PeerStub(ch).Send(frames(), timeout=15.0))

    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            first_open, other_open = asyncio.Event(), asyncio.Event()
            first = asyncio.ensure_future(fill(lc, "alice", first_open))
            other = asyncio.ensure_future(fill(lc, "carlos", other_open))
            for _ in range(200):   # until bob has read both headers (bounded: 10 s)
                if lc.servers["bob"].core._fills_arriving == {"alice", "carlos"}:
                    break
                await asyncio.sleep(0.05)
            assert lc.servers["bob"].core._fills_arriving == {"alice", "carlos"}
            at_once = asyncio.Event()
            at_once.set()
            second = await fill(lc, "alice", at_once)
            assert second.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, second
            assert "one at a time" in (second.details() or ""), second
            first_open.set()
            other_open.set()
            for err in await asyncio.gather(first, other):   # each read to its end, then refused for its content
                assert err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, err
            assert lc.servers["bob"].core._fills_arriving == set()
            again = await fill(lc, "alice", at_once)
            assert again.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, again
            assert lc.servers["bob"].core._fills_arriving == set()
            await assert_still_serving(lc)
    asyncio.run(go())


def test_a_fill_by_deliver_or_from_a_call_gone_away_still_counts_as_the_one_being_taken(tmp_path: Path) -> None:
    """A fill of up to 1 MiB comes by a unary Deliver (as a node sends its smaller fills), and its IKNP
    extension runs in a worker thread, which goes on if the call that brought it goes away. The one fill
    at a time per peer holds across both: while bob is still taking alice's fill (its thread held here on
    an event), another from alice is refused by Deliver and by Send, even after the first call was
    cancelled; once the thread is done, alice's next fill is taken again."""
    async def deliver(lc: LocalCluster, timeout: float) -> grpc.aio.AioRpcError | None:
        header = mpc_pb2.PeerHeader(session_id=POOL_CHANNEL, step=STEP_FILL, sender="alice", payload_bytes=4096)
        async with dial(lc, "bob", node_creds(lc, "alice")) as ch:
            try:
                await mpc_pb2_grpc.PeerStub(ch).Deliver(mpc_pb2.PeerMessage(header=header, payload=bytes(4096)),
                                                         timeout=timeout)
            except grpc.aio.AioRpcError as err:
                return err
        return None

    async def go() -> None:
        async with cluster3(tmp_path) as lc:
            core = lc.servers["bob"].core
            running, release = threading.Event(), threading.Event()

            def slow(peer: str, payload: bytes, setup: object, where: str) -> int:
                running.set()
                release.wait(20)
                raise RemoteProtocolError(f"{where}: taken slowly, then refused (a test double)")
            core.pools.accept_fill = slow   # type: ignore[method-assign]
            first = asyncio.ensure_future(deliver(lc, 15.0))
            for _ in range(200):   # until the thread runs (bounded: 10 s)
                if running.is_set():
                    break
                await asyncio.sleep(0.05)
            assert running.is_set() and set(core._fill_work) == {"alice"}
            first.cancel()                         # the caller goes away; the thread goes on
            await asyncio.gather(first, return_exceptions=True)
            await asyncio.sleep(0.2)
            assert set(core._fill_work) == {"alice"}
            busy = await deliver(lc, 5.0)
            assert busy is not None and busy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, busy
            assert "one at a time" in (busy.details() or "")
            release.set()
            for _ in range(200):
                if not core._fill_work:
                    break
                await asyncio.sleep(0.05)
            assert core._fill_work == set()
            after = await deliver(lc, 5.0)   # taken again (and refused for its content by the double)
            assert after is not None and after.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, after
            assert "taken slowly" in (after.details() or ""), after
            await assert_still_serving(lc)
    asyncio.run(go())


def test_a_send_refused_at_its_first_frame_gets_the_refusal_while_its_caller_still_writes(tmp_path: Path) -> None:
    """A Send whose first frame carries no header is refused at once, while its caller still writes
    the other frames: the caller gets that refusal, never gRPC's INTERNAL "Internal error from Core",
    which about 1 in 200 such calls got when the node answered before the caller had finished (the
    node now reads the rest first, bounded). 300 calls of 2 to 4 frames."""
    payload = b"\0" * 10_000

    async def go() -> dict[tuple[str, str], int]:
        seen: dict[tuple[str, str], int] = {}
        async with cluster3(tmp_path) as lc, dial(lc, "alice", node_creds(lc, "carlos")) as ch:
            stub = mpc_pb2_grpc.PeerStub(ch)
            for i in range(300):
                cuts = sorted({(i * 977 + k * 1511) % 5000 for k in range(1 + i % 3)})
                bounds = [0, *cuts, len(payload)]

                async def frames() -> AsyncIterator[mpc_pb2.PeerFrame]:
                    for a, b in zip(bounds, bounds[1:]):
                        yield mpc_pb2.PeerFrame(chunk=payload[a:b])
                err = await refused(stub.Send(frames(), timeout=CALL_TIMEOUT))
                key = (err.code().name, err.details() or "")
                seen[key] = seen.get(key, 0) + 1
        return seen
    assert asyncio.run(go()) == {("INVALID_ARGUMENT", "the first peer frame carries no header"): 300}
