"""Contributors' submissions over real node daemons (grpc.aio, TLS that authenticates the node,
SQLite, loopback; mpc/client.py, mpc/node/submissions.py, mpc/credentials.py).

A contributor splits each value into one additive share per node and sends each node its share
with a credential from the collection's owner. These tests check, on what the nodes store:
- the shares at the nodes add up to the values, and each node's shares alone look uniform and
  never hold a value;
- one submission per credential: refused, or replaced, by the collection's rule, and the same
  request again (a retry) is not counted twice;
- a credential from another owner, for another collection, revoked, forged or malformed, and a
  malformed share or nonce, are refused at every node and store nothing;
- a value outside the collection's rule is refused by the client before anything is sent;
- a node down during a submission leaves it partial and named; a node restarted mid-way gets
  the same shares again, and nothing is lost or counted twice;
- the submission listener serves nothing else, and takes no Control or Peer call.

One three-node cluster serves the module.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import struct
import sys
import threading
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from mpc.client import Contributor
from mpc.coordinator.client import Coordinator
from mpc.credentials import (
    credential_id,
    format_credential,
    issue,
    new_owner_key,
    parse_credential,
)
from mpc.errors import InputError
from mpc.node.daemon import NodeServer
from mpc.node.submissions import MAX_CHECKING
from mpc.store import CollectionSpec, Store
from mpc.transport.tls import channel_options, contributor_channel_credentials
from mpc.v1 import mpc_pb2, mpc_pb2_grpc
from tests.sim.common import assert_balanced

from .harness import LocalCluster, running_cluster

T = TypeVar("T")
TRIO = ("alice", "bob", "carlos")


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    lc: LocalCluster
    credentials: dict[str, list[str]]
    foreign: list[str]
    owner: Any

    def run(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def store(self, node: str) -> Store:
        return self.lc.store(node)

    def shares(self, node: str, collection: str) -> dict[bytes, tuple[bytes, np.ndarray]]:
        """credential id -> (nonce, share words) as `node` stores them."""
        with self.store(node) as store:
            keys = store.submission_keys(collection)
            shares = store.submission_shares(collection, keys)
        return {cid: (nonce, shares[i]) for i, (cid, nonce) in enumerate(keys)}

    def totals(self, collection: str) -> dict[bytes, list[int]]:
        """What the stored shares add up to, per credential held by every node with the same nonce."""
        per_node = [self.shares(n, collection) for n in TRIO]
        common = set.intersection(*(set(p) for p in per_node))
        out = {}
        for cid in common:
            if len({p[cid][0] for p in per_node}) == 1:
                total = sum((p[cid][1] for p in per_node), np.zeros_like(per_node[0][cid][1]))
                out[cid] = total.view(np.int64).tolist()
        return out

    def create(self, spec: CollectionSpec, nodes: Sequence[str] = TRIO) -> None:
        """Create the collection in each node's store, as its operator does (`mpc collection create`)."""
        for node in nodes:
            with self.store(node) as store:
                assert store.create_collection(spec)

    def close(self, name: str, nodes: Sequence[str] = TRIO) -> None:
        """Close the collection at each node, as its operator does (`mpc collection close`)."""
        for node in nodes:
            with self.store(node) as store:
                assert store.close_collection(name)

    def count(self, node: str, collection: str) -> int:
        with self.store(node) as store:
            return store.submission_count(collection)

    async def submit(self, collection: str, credential: str, values: Sequence[int]) -> object:
        async with Contributor(self.lc.cluster, timeout=5.0) as c:
            return await c.submit(collection, credential, values)

    async def restart(self, node: str) -> None:
        if node in self.lc.servers:
            await self.lc.stop(node)
        server = NodeServer(self.lc.cluster, node, observer=self.lc.recorder.for_node(node))
        await server.start()
        self.lc.servers[node] = server


async def raw_submit(env: Env, node: str, request: mpc_pb2.SubmitRequest) -> mpc_pb2.SubmitReply:
    """One Submit call to `node` as any contributor could make it (no client certificate)."""
    config = env.lc.cluster.node(node)
    assert config.submit is not None
    channel = grpc.aio.secure_channel(config.submit, contributor_channel_credentials(env.lc.cluster.ca),
                                      options=channel_options(node))
    try:
        reply: mpc_pb2.SubmitReply = await mpc_pb2_grpc.SubmitStub(channel).Submit(request, timeout=5)
        return reply
    finally:
        await channel.close()


@pytest.fixture(scope="module")
def env(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    stack = AsyncExitStack()
    lc = loop.run_until_complete(stack.enter_async_context(
        running_cluster(tmp_path_factory.mktemp("submit"), 3, submit=True)))
    owner, other = new_owner_key(), new_owner_key()
    specs = {"poll": CollectionSpec("poll", "ballot", 0, 1, 1, 5, "refuse", bytes(owner.verify_key), TRIO),
             "scores": CollectionSpec("scores", "range", -10, 10, 2, 3, "replace", bytes(owner.verify_key), TRIO)}
    for node in TRIO:
        data_dir = lc.cluster.node(node).data_dir
        assert data_dir is not None
        with Store.open_dir(data_dir) as store:
            for spec in specs.values():
                assert store.create_collection(spec)
    credentials = {name: issue(owner, name, 60) for name in specs}
    e = Env(loop, lc, credentials, issue(other, "poll", 3), owner)
    try:
        yield e
    finally:
        loop.run_until_complete(stack.aclose())


def test_the_nodes_shares_add_up_to_the_ballots_and_each_nodes_alone_look_uniform(env: Env) -> None:
    ballots = [int(b) for b in np.frombuffer(os.urandom(40), dtype=np.uint8) & 1]

    async def go() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            reports = await c.submit_many("poll", list(zip(env.credentials["poll"][:40], ([b] for b in ballots))))
        return [r.accepted for r in reports]
    assert all(env.run(go()))
    ids = [credential_id(parse_credential(c, "test")) for c in env.credentials["poll"][:40]]
    totals = env.totals("poll")
    assert [totals[i] for i in ids] == [[b] for b in ballots]
    for node in TRIO:
        mine = env.shares(node, "poll")
        words = np.array([mine[i][1][0] for i in ids], dtype=np.uint64)
        assert not np.isin(words, [0, 1]).any()               # no node holds a ballot itself
        assert_balanced(words.view(np.uint8))                 # 2,560 bits, each a fair coin


def test_one_submission_per_credential_refused_under_refuse_and_a_retry_is_not_counted_twice(env: Env) -> None:
    credential = env.credentials["poll"][45]
    first = env.run(env.submit("poll", credential, [1]))
    assert first.accepted   # type: ignore[attr-defined]
    before = [env.count(n, "poll") for n in TRIO]
    again = env.run(env.submit("poll", credential, [0]))
    assert not again.accepted   # type: ignore[attr-defined]
    assert "already submitted" in again.problem() and "refuse" in again.problem()   # type: ignore[attr-defined]
    assert [env.count(n, "poll") for n in TRIO] == before
    cid = credential_id(parse_credential(credential, "test"))
    assert env.totals("poll")[cid] == [1]
    # the same request again (a client retrying after a lost reply) is taken, not counted twice
    nonce, share = env.shares("alice", "poll")[cid]
    request = mpc_pb2.SubmitRequest(collection="poll", submissions=[mpc_pb2.Submission(
        token=parse_credential(credential, "test"), nonce=nonce, share=share.astype("<u8").tobytes())])
    reply = env.run(raw_submit(env, "alice", request))
    assert reply.results[0].stored and not reply.results[0].replaced
    assert [env.count(n, "poll") for n in TRIO] == before


def test_a_resubmission_replaces_the_earlier_one_under_replace(env: Env) -> None:
    credential = env.credentials["scores"][0]
    assert env.run(env.submit("scores", credential, [3, -4])).accepted   # type: ignore[attr-defined]
    second = env.run(env.submit("scores", credential, [-10, 10]))
    assert second.accepted and second.replaced   # type: ignore[attr-defined]
    cid = credential_id(parse_credential(credential, "test"))
    assert env.totals("scores")[cid] == [-10, 10]
    assert all(env.count(n, "scores") == 1 for n in TRIO)


def test_foreign_forged_and_revoked_credentials_are_refused_everywhere_and_store_nothing(env: Env) -> None:
    before = {n: env.count(n, "poll") for n in TRIO}
    token = bytearray(parse_credential(env.credentials["poll"][50], "test"))
    token[-1] ^= 1
    cases = {"another owner's": env.foreign[0], "another collection's": env.credentials["scores"][50],
             "a flipped bit": format_credential(bytes(token))}
    for case, credential in cases.items():
        report = env.run(env.submit("poll", credential, [1]))
        assert not report.accepted, case   # type: ignore[attr-defined]
        assert {r.code for r in report.nodes} == {"PERMISSION_DENIED"}, (case, report)   # type: ignore[attr-defined]
        assert all("is not one the owner of collection 'poll' issued" in r.error
                   for r in report.nodes), case   # type: ignore[attr-defined]
    # revoked: refused from now on, and what it had submitted is dropped
    credential = env.credentials["poll"][51]
    assert env.run(env.submit("poll", credential, [1])).accepted   # type: ignore[attr-defined]
    cid = credential_id(parse_credential(credential, "test"))
    for node in TRIO:
        with env.store(node) as store:
            assert store.revoke("poll", [cid]) == 1
    assert cid not in env.totals("poll")
    report = env.run(env.submit("poll", credential, [0]))
    assert not report.accepted and "revoked" in report.problem()   # type: ignore[attr-defined]
    assert {n: env.count(n, "poll") for n in TRIO} == before


def test_malformed_submissions_are_refused_one_by_one_and_the_good_one_beside_them_is_stored(env: Env) -> None:
    good_credential, bad_credential = env.credentials["scores"][10], env.credentials["scores"][11]
    token, bad = parse_credential(good_credential, "test"), parse_credential(bad_credential, "test")
    share = os.urandom(16)
    submissions = [
        mpc_pb2.Submission(token=bad, nonce=os.urandom(16), share=os.urandom(8)),       # one word for two
        mpc_pb2.Submission(token=bad, nonce=os.urandom(16), share=os.urandom(24)),      # three words for two
        mpc_pb2.Submission(token=bad, nonce=os.urandom(15), share=os.urandom(16)),      # a short nonce
        mpc_pb2.Submission(token=bad[:79], nonce=os.urandom(16), share=os.urandom(16)),  # a cut token
        mpc_pb2.Submission(token=token, nonce=os.urandom(16), share=share),
    ]

    reply = env.run(raw_submit(env, "bob", mpc_pb2.SubmitRequest(collection="scores", submissions=submissions)))
    codes = [r.code for r in reply.results]
    assert codes == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "PERMISSION_DENIED", ""], reply
    assert [r.stored for r in reply.results] == [False, False, False, False, True]
    held = env.shares("bob", "scores")
    assert credential_id(bad) not in held and held[credential_id(token)][1].tobytes() == share


def test_the_client_refuses_values_outside_the_rule_before_sending_anything(env: Env) -> None:
    before = {n: env.count(n, "scores") for n in TRIO}
    for values in ([11, 0], [0, -11], [2**63 - 1, 0], [0], [0, 0, 0]):
        with pytest.raises(InputError):
            env.run(env.submit("scores", env.credentials["scores"][20], values))
    for values in ([2], [-1]):
        with pytest.raises(InputError, match="a ballot is 0 or 1"):
            env.run(env.submit("poll", env.credentials["poll"][55], values))

    async def batch(rows: list[list[Any]]) -> None:   # a batch names the submission at fault
        async with Contributor(env.lc.cluster) as c:
            await c.submit_many("scores", [(env.credentials["scores"][21 + i], row) for i, row in enumerate(rows)])
    with pytest.raises(InputError, match=r"^submissions: 2 value\(s\) outside collection 'scores''s rule \(the first "
                                         r"in submission 3\): values lie in \[-10, 10\]$"):
        env.run(batch([[1, 2], [3, 4], [11, 0], [0, -20]]))
    with pytest.raises(InputError, match=r"^submission 2: values must be integers within collection 'scores''s "
                                         r"range, got '\[1, 1\.5\]'$"):
        env.run(batch([[1, 2], [1, 1.5]]))
    with pytest.raises(InputError, match=r"^submission 1: values must be integers"):
        env.run(batch([["1", 2]]))
    with pytest.raises(InputError, match=r"^submission 1: values must be integers"):
        env.run(batch([[2**64, 0]]))
    assert {n: env.count(n, "scores") for n in TRIO} == before


def test_unknown_collection_is_refused_naming_it(env: Env) -> None:
    async def go() -> None:
        async with Contributor(env.lc.cluster) as c:
            await c.submit("nosuch", env.credentials["poll"][0], [1])
    with pytest.raises(Exception, match="no collection 'nosuch'"):
        env.run(go())


def test_a_node_down_leaves_the_submission_partial_and_named_and_a_restart_mid_way_loses_nothing(
        env: Env) -> None:
    credential = env.credentials["poll"][56]
    cid = credential_id(parse_credential(credential, "test"))
    env.run(env.lc.stop("carlos"))
    try:
        async def once() -> object:
            async with Contributor(env.lc.cluster, timeout=2.0) as c:
                return (await c.submit_many("poll", [(credential, [1])], attempts=1))[0]
        report = env.run(once())
        assert not report.accepted   # type: ignore[attr-defined]
        assert "node carlos" in report.problem() and "unreachable" in report.problem()   # type: ignore[attr-defined]
        assert cid in env.shares("alice", "poll") and cid in env.shares("bob", "poll")
    finally:
        env.run(env.restart("carlos"))
    assert cid not in env.totals("poll")          # partial: never counted
    # a node that comes back while the client is still trying gets the very same shares
    credential = env.credentials["poll"][57]
    cid = credential_id(parse_credential(credential, "test"))
    env.run(env.lc.stop("carlos"))

    async def with_restart() -> object:
        async with Contributor(env.lc.cluster, timeout=2.0) as c:
            task = asyncio.ensure_future(c.submit_many("poll", [(credential, [0])], attempts=4, retry_wait=0.5))
            # Carlos is down: the first attempt there fails at once (connection refused); it comes back
            # before the second, 0.5 s later. (Had the restart come first, the first attempt succeeds:
            # the assertions below hold either way.)
            await asyncio.sleep(0.2)
            await env.restart("carlos")
            return (await task)[0]
    report = env.run(with_restart())
    assert report.accepted, report.problem()   # type: ignore[attr-defined]
    assert env.totals("poll")[cid] == [0]
    assert len({env.shares(n, "poll")[cid][0] for n in TRIO}) == 1   # one nonce everywhere


def test_the_submission_listener_serves_submissions_only(env: Env) -> None:
    config = env.lc.cluster.node("alice")
    assert config.submit is not None

    async def go() -> grpc.StatusCode:
        channel = grpc.aio.secure_channel(config.submit or "", contributor_channel_credentials(env.lc.cluster.ca),
                                          options=channel_options("alice"))
        try:
            await mpc_pb2_grpc.ControlStub(channel).Status(mpc_pb2.StatusRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            await channel.close()
        return grpc.StatusCode.OK
    assert env.run(go()) == grpc.StatusCode.UNIMPLEMENTED


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


async def half_sent_calls(address: str, calls: int) -> tuple[asyncio.StreamWriter, asyncio.Task[None]]:
    """An outsider's connection to a submission listener holding `calls` Submit calls open: each one's
    HTTP/2 headers, then 5 bytes of a gRPC message that promises 1,000, never the rest (a "slowloris");
    it answers the server's settings and pings, so that the connection stays up. Plain HTTP/2 over TLS
    (no gRPC client would send half a message), no credential, no client certificate."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b""))
    headers = b"".join(b"\x00" + bytes([len(k)]) + k + bytes([len(v)]) + v for k, v in (   # HPACK literals
        (b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/mpc.v1.Submit/Submit"), (b":authority", b"x"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")))
    for i in range(calls):
        writer.write(_h2_frame(1, 0x4, 1 + 2 * i, headers))                           # HEADERS, no END_STREAM
        writer.write(_h2_frame(0, 0, 1 + 2 * i, b"\x00" + struct.pack(">I", 1000) + b"\x0a\x03abc"))
    await writer.drain()

    async def answer() -> None:
        try:
            while True:
                head = await reader.readexactly(9)
                body = await reader.readexactly(int.from_bytes(head[:3], "big"))
                if head[3] == 4 and not head[4] & 1:
                    writer.write(_h2_frame(4, 1, 0, b""))      # SETTINGS ack
                elif head[3] == 6 and not head[4] & 1:
                    writer.write(_h2_frame(6, 1, 0, body))     # PING ack
        except (OSError, asyncio.IncompleteReadError):
            pass
    return writer, asyncio.ensure_future(answer())


def test_half_sent_calls_from_an_outsider_keep_no_contributor_out(env: Env) -> None:
    """The submission listener is open to anyone. A cap on its calls would count calls whose request is
    still arriving: an outsider holding that many half-sent requests open, at no cost, would have every
    contributor refused for as long as it liked. Eight connections of 16 half-sent calls each are held
    open to alice (each connection may carry only a few at a time; the rest are refused at once); a
    contributor's ballot is taken by all three nodes meanwhile, and so is another after the outsider has
    gone."""
    address = env.lc.cluster.node("alice").submit
    assert address is not None
    spec = CollectionSpec("open", "ballot", 0, 1, 1, 1, "refuse", bytes(env.owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(env.owner, "open", 2)

    async def go() -> list[Any]:
        held = [await half_sent_calls(address, 16) for _ in range(8)]
        try:
            await asyncio.sleep(0.5)
            during = await env.submit("open", credentials[0], [1])
        finally:
            for writer, task in held:
                task.cancel()
                writer.close()
            await asyncio.gather(*(task for _, task in held), return_exceptions=True)
        after = await env.submit("open", credentials[1], [0])
        return [during, after]
    for report in env.run(go()):
        assert report.accepted, report.problem()    # type: ignore[attr-defined]
    assert env.count("alice", "open") == 2


def test_callers_that_go_away_do_not_free_their_turn_before_their_check_ends(env: Env) -> None:
    """A node checks MAX_CHECKING batches at a time, each in a worker thread that runs to its end even if
    its caller goes away. Were a cancelled call to give its turn back at once, an outsider could start
    and cancel calls without end, each leaving a check running: 12 calls to alice are cancelled while
    MAX_CHECKING of them are checking (held on an event), then 4 more come; never more than MAX_CHECKING
    checks run at once. Once released, the cancelled checks that were running go on to their end and
    store their ballots, then the 4 later calls get their turns; the calls cancelled while waiting for a
    turn are never checked."""
    spec = CollectionSpec("slow", "ballot", 0, 1, 1, 1, "refuse", bytes(env.owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(env.owner, "slow", 16)
    store = env.lc.servers["alice"].store
    real = store.put_submissions
    lock, release = threading.Lock(), threading.Event()
    counts = {"running": 0, "most": 0}

    def held(name: str, batch: Any) -> Any:
        with lock:
            counts["running"] += 1
            counts["most"] = max(counts["most"], counts["running"])
        release.wait(20)
        try:
            return real(name, batch)
        finally:
            with lock:
                counts["running"] -= 1
    store.put_submissions = held   # type: ignore[method-assign]

    async def call(credential: str) -> None:
        token = parse_credential(credential, "test")
        request = mpc_pb2.SubmitRequest(collection="slow", submissions=[
            mpc_pb2.Submission(token=token, nonce=os.urandom(16), share=os.urandom(8))])
        await raw_submit(env, "alice", request)

    async def go() -> None:
        calls = [asyncio.ensure_future(call(c)) for c in credentials[:12]]
        await asyncio.sleep(1.5)   # every call has reached the node; MAX_CHECKING of them are checking
        for c in calls:
            c.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        later = [asyncio.ensure_future(call(c)) for c in credentials[12:]]
        await asyncio.sleep(1.5)   # turns freed by the cancels (were they freed) would start these now
        assert counts["most"] <= MAX_CHECKING, counts
        release.set()
        await asyncio.gather(*later)
        for _ in range(200):       # the cancelled checks that ran go to their end too (bounded: 10 s)
            if env.count("alice", "slow") == 2 * MAX_CHECKING:
                break
            await asyncio.sleep(0.05)
    try:
        env.run(go())
    finally:
        release.set()
        del store.put_submissions   # type: ignore[method-assign]
    assert counts["most"] == MAX_CHECKING and env.count("alice", "slow") == 2 * MAX_CHECKING


def test_many_submissions_of_long_vectors_go_in_batches_a_message_can_carry(env: Env) -> None:
    """submit_many sends 5,000 submissions per call, but never more than a message may carry (4 MiB):
    600 submissions of 1,024 values (8 KiB of share each, 4.9 MiB in all) were refused whole by gRPC's
    own limit at the client before."""
    spec = CollectionSpec("long", "range", -5, 5, 1024, 1, "refuse", bytes(env.owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(env.owner, "long", 600)
    rows = [[(i + k) % 11 - 5 for k in range(1024)] for i in range(600)]

    async def go() -> list[Any]:
        async with Contributor(env.lc.cluster, timeout=20.0) as c:
            return await c.submit_many("long", list(zip(credentials, rows)))
    reports = env.run(go(), timeout=120)
    assert [r.accepted for r in reports] == [True] * 600, reports[0]
    assert all(env.count(n, "long") == 600 for n in TRIO)
    totals = env.totals("long")
    assert sorted(totals.values()) == sorted(rows)


async def mpc_cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run `mpc ARGS` as a user would (a new process), while this loop serves the nodes; `stdin`, if given,
    is its standard input."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mpc", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(None if stdin is None else stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_the_owner_the_operators_and_a_contributor_through_the_cli(env: Env, tmp_path: Path) -> None:
    cluster = str(env.lc.cluster.path)
    owner = tmp_path / "owner"

    async def go() -> None:
        assert (await mpc_cli("credentials", "keygen", "--out", str(owner)))[0] == 0
        assert (Path(f"{owner}.key").stat().st_mode & 0o777) == 0o600
        code, out, err = await mpc_cli("credentials", "issue", "--key", f"{owner}.key", "--collection", "referendum",
                                       "--count", "4", "--out", str(tmp_path / "creds.txt"))
        assert code == 0, err
        for node in TRIO:
            code, out, err = await mpc_cli("collection", "create", "referendum", "--kind", "ballot", "--min-batch",
                                           "3", "--owner-pub", f"{owner}.pub", "--nodes", ",".join(TRIO),
                                           "--cluster", cluster, "--node", node)
            assert code == 0 and "created" in out, err
        code, out, err = await mpc_cli("submit", "referendum", "1.5", "--cluster", cluster, "--credential",
                                       str(tmp_path / "creds.txt"))
        assert code == 1 and "value 1 ('1.5') is not an integer" in err, (out, err)
        # The ballot on standard input (`-`): not in the process list or the shell's history.
        code, out, err = await mpc_cli("submit", "referendum", "-", "--cluster", cluster, "--credential",
                                       str(tmp_path / "creds.txt"), stdin="1\n")
        assert code == 0 and "accepted" in out, (out, err)
        code, out, err = await mpc_cli("submit", "referendum", "0", "--cluster", cluster, "--credential",
                                       str(tmp_path / "creds.txt"))
        assert code == 1 and out == "" and "already submitted" in err, (out, err)
        # A final refusal: no advice to run it again, and nothing kept for it.
        assert "run the same command again" not in err and not Path(f"{tmp_path / 'creds.txt'}.pending").exists()
        (tmp_path / "votes.csv").write_text("0\n1\n1\n", encoding="utf-8")
        lines = (tmp_path / "creds.txt").read_text(encoding="utf-8").splitlines()
        (tmp_path / "rest.txt").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
        code, out, err = await mpc_cli("submit", "referendum", "--batch", str(tmp_path / "votes.csv"), "--cluster",
                                       cluster, "--credential", str(tmp_path / "rest.txt"), "--json")
        assert code == 0 and json.loads(out) == {"collection": "referendum", "submitted": 3, "accepted": 3,
                                                 "refused": []}, (out, err)
        code, out, err = await mpc_cli("submit", "referendum", "2", "--cluster", cluster, "--credential",
                                       str(tmp_path / "creds.txt"), "--index", "4")
        assert code == 1 and "a ballot is 0 or 1" in err, (out, err)
        code, out, err = await mpc_cli("collection", "list", "--cluster", cluster, "--node", "bob", "--json")
        listed = {row["name"]: row for row in json.loads(out)}
        assert listed["referendum"]["submissions"] == 4 and listed["referendum"]["min_batch"] == 3
        for node in TRIO:
            code, out, err = await mpc_cli("collection", "close", "referendum", "--cluster", cluster, "--node", node)
            assert code == 0 and "closed: 4 submissions" in out, (out, err)
        code, out, err = await mpc_cli("collection", "vote", "referendum", "--cluster", cluster)
        assert code == 0 and out.strip() == "YES", (out, err)                 # 3 yes of 4
        code, out, err = await mpc_cli("status", "--cluster", cluster)
        assert out.count("collection referendum: 4 submissions stored (ballot, minimum batch 3, closed)") == 3, out
    env.run(go(), timeout=300)
    assert sorted(v[0] for v in env.totals("referendum").values()) == [0, 1, 1, 1]


def test_an_option_poll_and_an_auction_through_the_cli(env: Env, tmp_path: Path) -> None:
    """`mpc collection create --kind option --options 3`, `mpc submit` of option indices, and
    `mpc collection vote --options`; a range collection of bids and `mpc collection auction`."""
    cluster = str(env.lc.cluster.path)
    owner = tmp_path / "owner"

    async def everywhere(*args: str) -> None:
        for node in TRIO:
            code, out, err = await mpc_cli(*args, "--cluster", cluster, "--node", node)
            assert code == 0, (args, out, err)

    async def go() -> None:
        assert (await mpc_cli("credentials", "keygen", "--out", str(owner)))[0] == 0
        for name in ("fruit", "sale", "ages"):
            code, _, err = await mpc_cli("credentials", "issue", "--key", f"{owner}.key", "--collection", name,
                                         "--count", "4", "--out", str(tmp_path / f"{name}.txt"))
            assert code == 0, err
        common = ("--min-batch", "2", "--owner-pub", f"{owner}.pub", "--nodes", ",".join(TRIO))
        code, out, err = await mpc_cli("collection", "create", "fruit", "--kind", "option", "--options", "3", "--lo", "1",
                                       *common,
                                       "--cluster", cluster, "--node", "alice")
        assert code != 0 and "leave out --lo and --hi" in err, (out, err)
        for nodes, words in (("", "name at least two nodes that hold its shares"), (",", "name at least two"),
                             ("alice", "name at least two"),       # held by none (or one): never usable
                             ("alice,zed", "--nodes: zed not in the cluster file"),
                             ("bob,carlos", "--nodes bob,carlos leaves out node alice, whose store this is")):
            code, out, err = await mpc_cli("collection", "create", "fruit", "--kind", "option", "--options", "3",
                                           *common[:-1], nodes, "--cluster", cluster, "--node", "alice")
            assert code != 0 and words in err, (nodes, out, err)
            assert "Traceback" not in err
        code, out, err = await mpc_cli("collection", "list", "--cluster", cluster, "--node", "alice")
        assert "fruit" not in out, out                                 # nothing was created
        await everywhere("collection", "create", "fruit", "--kind", "option", "--options", "3", *common)
        await everywhere("collection", "create", "sale", "--kind", "range", "--lo", "1", "--hi", "1000", *common)
        await everywhere("collection", "create", "ages", "--kind", "range", "--lo", "0", "--hi", "120", *common)
        (tmp_path / "ages.csv").write_text("30\n41\n50\n", encoding="utf-8")
        (tmp_path / "fruit.csv").write_text("2\n0\n2\n", encoding="utf-8")
        (tmp_path / "sale.csv").write_text("250\n999\n40\n", encoding="utf-8")
        for name in ("fruit", "sale", "ages"):
            code, out, err = await mpc_cli("submit", name, "--batch", str(tmp_path / f"{name}.csv"), "--cluster",
                                           cluster, "--credential", str(tmp_path / f"{name}.txt"))
            assert code == 0 and "3 of 3 submissions accepted" in out, (out, err)
        code, out, err = await mpc_cli("submit", "fruit", "3", "--cluster", cluster, "--credential",
                                       str(tmp_path / "fruit.txt"), "--index", "4")
        assert code == 1 and "an option is an index 0..2" in err, (out, err)
        code, out, err = await mpc_cli("collection", "list", "--cluster", cluster, "--node", "bob")
        assert "fruit: one of 3 options, 1 per submission" in out, out
        await everywhere("collection", "close", "fruit")
        await everywhere("collection", "close", "sale")
        await everywhere("collection", "close", "ages")
        code, out, err = await mpc_cli("collection", "average", "ages", "--cluster", cluster)
        assert code == 0 and out.strip() == "40.333333333333336 (valid submissions: 3 of 3 complete)", (out, err)
        code, out, err = await mpc_cli("collection", "vote", "fruit", "--options", "apple,banana,cherry",
                                       "--cluster", cluster)
        assert code == 0 and out.splitlines() == ["apple: 1", "banana: 0", "cherry: 2",
                                                  "(valid votes: 3 of 3 complete)"], (out, err)
        code, out, err = await mpc_cli("collection", "vote", "fruit", "--winner-only", "--cluster", cluster)
        assert code != 0 and "go with --options" in err, (out, err)
        code, out, err = await mpc_cli("collection", "auction", "sale", "--second-price", "--cluster", cluster,
                                       "--json")
        assert code == 0, (out, err)
        result = json.loads(out)
        winner = credential_id(parse_credential((tmp_path / "sale.txt").read_text().splitlines()[1], "t")).hex()
        assert (result["winner"], result["price"], result["valid"]) == ({"credential": winner}, 250, 3)
        # each node's audit log records the sessions over its collections, and what it sent in them
        for node in TRIO:
            code, out, err = await mpc_cli("audit", "--input", "sale", "--json", "--cluster", cluster, "--node", node)
            entries = json.loads(out)
            assert code == 0 and [(e["protocol"], e["outcome"], e["inputs"]) for e in entries] == \
                [("collection-auction", "done", ["sale"])], (out, err)
            assert entries[0]["release"] and entries[0]["bytes_sent"] > 0
    env.run(go(), timeout=300)


# ---- sessions over closed collections (mpc/protocols/collection.py) ---------------------------------------


def crafted(env: Env, collection: str, credential: str, value: int | Sequence[int],
            nodes: Sequence[str] = TRIO) -> None:
    """A malicious contributor's submission: shares of any values in Z_2^64 (one, or a vector, as they
    are: an option collection's too), sent straight to `nodes`."""
    values = [value] if isinstance(value, int) else list(value)
    token, nonce = parse_credential(credential, "test"), os.urandom(16)
    parts = [[int.from_bytes(os.urandom(8), "little") for _ in values] for _ in range(len(TRIO) - 1)]
    parts.append([(v - sum(p[j] for p in parts)) % (1 << 64) for j, v in enumerate(values)])
    for node, part in zip(TRIO, parts):
        if node in nodes:
            request = mpc_pb2.SubmitRequest(collection=collection, submissions=[mpc_pb2.Submission(
                token=token, nonce=nonce, share=b"".join(w.to_bytes(8, "little") for w in part))])
            reply = env.run(raw_submit(env, node, request))
            assert reply.results[0].stored, reply


async def _sum(env: Env, name: str) -> Any:
    async with Coordinator(env.lc.cluster) as c:
        return await c.collection_sum(name)


def session_views(env: Env, session_id: str) -> dict[str, list[tuple[str, str, bytes]]]:
    """What each node received from its peers in one session: (sender, step, payload)."""
    return {n: [(s, st, p) for sid, s, st, p in env.lc.recorder.received[n] if sid == session_id] for n in TRIO}


def assert_only_coins_and_validity(env: Env, session_id: str, complete: int) -> None:
    """Each node received the key lists, masked openings that look like coins, and the validity bits."""
    for node, messages in session_views(env, session_id).items():
        keys = [p for _, st, p in messages if st == "coll/keys"]
        assert len(keys) == 2 and all(len(p) >= 32 * complete and len(p) % 32 == 0 for p in keys), node
        run = [(st, p) for _, st, p in messages if st.startswith("coll/run/") and not st.endswith("/valid")]
        openings = b"".join(p for st, p in run if "/b2a" not in st)
        assert len(openings) > 1000
        assert_balanced(openings)                          # every masked opening looks like fair coins
        # an auction's bit conversions open one masked bit per word (b XOR a daBit's bit): a fair coin each
        converted = [np.frombuffer(p, dtype="<u8") for st, p in run if "/b2a" in st]
        if converted:
            bits = np.concatenate(converted)
            assert (bits <= 1).all()
            assert_balanced(np.packbits(bits.astype(np.uint8)), alpha=1e-4)
        valid = [p for _, st, p in messages if st.endswith("/valid")]
        assert len(valid) == 2                             # one XOR share of the validity bits per peer


@pytest.mark.parametrize("first", ["sum", "vote"])
def test_a_vote_and_a_sum_over_a_closed_collection_count_the_honest_ballots_only(env: Env, first: str) -> None:
    name = f"ballots_{first}"
    owner = new_owner_key()
    spec = CollectionSpec(name, "ballot", 0, 1, 1, 10, "refuse", bytes(owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(owner, name, 40)
    honest = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0] if first == "sum" else [0, 1, 0, 0, 1, 0, 0, 1, 0, 1]

    async def vote_in() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            reports = await c.submit_many(name, [(cred, [b]) for cred, b in zip(credentials, honest)])
        return [r.accepted for r in reports]
    assert all(env.run(vote_in()))
    # malicious contributors: 2, -1, 2^63, 2^64 - 1 and 2^63 + 1 as "ballots" (if they counted, the vote
    # would flip); and one partial submission
    for i, value in enumerate((2, -1, 1 << 63, (1 << 64) - 1, (1 << 63) + 1)):
        crafted(env, name, credentials[20 + i], value)
    crafted(env, name, credentials[30], 1, nodes=("alice", "bob"))

    async def session(kind: str) -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await (c.collection_sum(name) if kind == "sum" else c.collection_vote(name))
    # an open collection releases nothing
    with pytest.raises(Exception, match=f"collection '{name}' is open"):
        env.run(session(first))
    env.close(name)
    result = env.run(session(first), timeout=120)
    if first == "sum":
        assert (result.value, result.valid, result.complete) == (sum(honest), len(honest), len(honest) + 5)
    else:
        assert result.passed is (2 * sum(honest) >= len(honest)) is False
    # the owner's rules across sessions hold for collections too: by default one distinct release
    with pytest.raises(Exception, match="max_releases"):
        env.run(session("vote" if first == "sum" else "sum"))
    again = env.run(session(first), timeout=120)                # the same query again is allowed
    assert {k: v for k, v in again.as_dict().items() if k != "session"} == \
        {k: v for k, v in result.as_dict().items() if k != "session"}
    # a closed collection takes nothing more
    report = env.run(env.submit(name, credentials[35], [1]))
    assert not report.accepted and "closed" in report.problem()   # type: ignore[attr-defined]


def test_below_its_minimum_batch_a_collection_releases_nothing_and_other_protocols_refuse_it(env: Env) -> None:
    owner = new_owner_key()
    spec = CollectionSpec("small", "range", 0, 100, 1, 5, "refuse", bytes(owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(owner, "small", 6)

    async def send() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            reports = await c.submit_many("small", [(cred, [v]) for cred, v in zip(credentials, (5, 50, 95, 7))])
        return [r.accepted for r in reports]
    assert all(env.run(send()))
    crafted(env, "small", credentials[5], 3, nodes=("alice", "carlos"))   # partial: not complete
    env.close("small")

    async def run_sum() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_sum("small")
    with pytest.raises(Exception, match="4 complete submission.*minimum batch of 5"):
        env.run(run_sum())

    async def plain_sum() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.sum("small")
    with pytest.raises(Exception, match="is a collection of contributors' submissions"):
        env.run(plain_sum())

    # a session must take exactly the nodes that hold the shares: here a collection held by alice and bob
    pair = CollectionSpec("pair", "range", 0, 100, 1, 1, "refuse", bytes(owner.verify_key), ("alice", "bob"))
    env.create(pair, ("alice", "bob"))
    env.close("pair", ("alice", "bob"))

    async def three_nodes() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_sum("pair")
    with pytest.raises(Exception, match="held by alice, bob; a session over it takes exactly these nodes"):
        env.run(three_nodes())


def test_invalid_submissions_do_not_pad_the_minimum_batch(env: Env) -> None:
    """Four Sybil credentials submit invalid ballots around one honest one: complete 5, valid 1 < 5."""
    owner = new_owner_key()
    spec = CollectionSpec("padded", "ballot", 0, 1, 1, 5, "refuse", bytes(owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(owner, "padded", 5)
    assert env.run(env.submit("padded", credentials[0], [1])).accepted   # type: ignore[attr-defined]
    for i in range(1, 5):
        crafted(env, "padded", credentials[i], 7)
    env.close("padded")

    async def run_sum() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_sum("padded")
    with pytest.raises(Exception, match="of the 5 complete submissions, fewer than the collection's minimum "
                                        "batch of 5 are valid; nothing is released") as err:
        env.run(run_sum())
    assert "1 of" not in str(err.value)   # the coordinator is not told how many were valid


def test_mpc_submit_completes_a_partial_submission_when_run_again(env: Env, tmp_path: Path) -> None:
    """carlos is down: the submission stays partial; after its restart the same command sends the very
    same shares (from the seed it kept), and the submission is complete, counted once. Other values
    with the same credential are refused while it is partial, sending nothing: a fresh submission
    would be refused by the nodes that hold the partial one, and the partial one could never complete."""
    cluster = str(env.lc.cluster.path)
    credential_file = tmp_path / "mine.txt"
    credential_file.write_text(env.credentials["poll"][58] + "\n", encoding="ascii")
    pending = Path(f"{credential_file}.pending")
    cid = credential_id(parse_credential(env.credentials["poll"][58], "test"))

    async def submit(ballot: str = "1") -> tuple[int, str, str]:
        return await mpc_cli("submit", "poll", ballot, "--cluster", cluster, "--credential", str(credential_file))
    env.run(env.lc.stop("carlos"))
    try:
        code, out, err = env.run(submit(), timeout=120)
        assert code == 1 and out == "" and "node carlos" in err and "run the same command again" in err, (out, err)
        assert pending.exists() and (pending.stat().st_mode & 0o777) == 0o600
        assert cid in env.shares("alice", "poll") and cid not in env.totals("poll")
    finally:
        env.run(env.restart("carlos"))
    kept, nonce = pending.read_bytes(), env.shares("alice", "poll")[cid][0]
    code, out, err = env.run(submit("0"), timeout=120)
    assert code != 0 and f"{credential_file}:1: a submission of other values ('[1]') with this credential is still " \
        f"partial (kept in {pending}); run the command with those values to complete it" in err, (out, err)
    assert pending.read_bytes() == kept and env.shares("alice", "poll")[cid][0] == nonce
    assert cid not in env.totals("poll")
    assert cid not in env.shares("carlos", "poll")   # nothing was sent
    code, out, err = env.run(submit(), timeout=120)
    assert code == 0 and "accepted" in out, (out, err)
    assert env.totals("poll")[cid] == [1] and not pending.exists()
    assert len({env.shares(n, "poll")[cid][0] for n in TRIO}) == 1


def test_a_submission_refused_before_sending_or_to_another_collection_keeps_what_is_partial(
        env: Env, tmp_path: Path) -> None:
    """`mpc submit` keeps each submission's seed in a pending file until every node has its share. It
    saved a fresh seed before its own checks, so a value out of range (nothing sent) left a "still
    partial" entry that blocked the corrected value; and the same credential file used with another
    collection's name replaced a partial submission's seed, stranding it for good. Now a run refused
    before anything is sent leaves the file as it was, and a credential pending for one collection is
    not used for another: the partial one completes when run again."""
    cluster = str(env.lc.cluster.path)
    credential_file = tmp_path / "mine.txt"
    credential_file.write_text(env.credentials["poll"][59] + "\n", encoding="ascii")
    pending = Path(f"{credential_file}.pending")
    cid = credential_id(parse_credential(env.credentials["poll"][59], "test"))

    async def submit(collection: str, ballot: str) -> tuple[int, str, str]:
        return await mpc_cli("submit", collection, ballot, "--cluster", cluster, "--credential", str(credential_file))
    code, out, err = env.run(submit("poll", "2"), timeout=120)        # a ballot is 0 or 1: nothing is sent
    assert code == 1 and out == "" and "mpc: error:" in err and "Traceback" not in err, (out, err)
    assert not pending.exists() and cid not in env.shares("alice", "poll")
    env.run(env.lc.stop("carlos"))
    try:
        code, out, err = env.run(submit("poll", "1"), timeout=120)    # partial: carlos is down
        assert code == 1 and f"node carlos at {env.lc.cluster.node('carlos').submit} " in err, (out, err)
        kept = pending.read_bytes()
        code, out, err = env.run(submit("no-such-poll", "1"), timeout=120)
        assert code == 1 and f"this credential's submission to collection 'poll' is still partial" in err, (out, err)
        assert pending.read_bytes() == kept
    finally:
        env.run(env.restart("carlos"))
    code, out, err = env.run(submit("poll", "1"), timeout=120)
    assert code == 0 and "accepted" in out, (out, err)
    assert env.totals("poll")[cid] == [1] and not pending.exists()


def test_a_range_collection_excludes_out_of_range_and_inconsistent_shares_and_the_nodes_see_only_coins(
        env: Env) -> None:
    """A vector collection in [-50, 50]: honest submissions, and crafted ones with lo - 1, hi + 1,
    2^63 or 2^63 - 1 in one element, and shares from two different splits (they add up to some
    other value). Only the honest ones count; what each node receives in the session is the key
    lists, masked openings that look like coins, and the validity bits."""
    owner = new_owner_key()
    spec = CollectionSpec("survey", "range", -50, 50, 2, 4, "refuse", bytes(owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(owner, "survey", 20)
    honest = [[-50, 50], [7, -3], [0, 0], [25, 49], [-1, -50]]

    async def send() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            reports = await c.submit_many("survey", list(zip(credentials, honest)))
        return [r.accepted for r in reports]
    assert all(env.run(send()))
    # (2^64 - 1 is -1 in Z_2^64: inside this range, a valid value; as a ballot it is refused, above)
    bad = [[-51, 0], [0, 51], [1 << 63, 0], [0, (1 << 63) - 1]]
    for i, values in enumerate(bad):
        crafted(env, "survey", credentials[10 + i], values)
    # shares from two honest splits of two different vectors, under one credential and nonce
    token, nonce = parse_credential(credentials[15], "test"), os.urandom(16)
    first, second = ([[int.from_bytes(os.urandom(8), "little") for _ in range(2)] for _ in range(3)] for _ in range(2))
    first[2] = [(v - first[0][j] - first[1][j]) % (1 << 64) for j, v in enumerate((1, 1))]
    mixed = [first[0], first[1], second[2]]
    for node, part in zip(TRIO, mixed):
        reply = env.run(raw_submit(env, node, mpc_pb2.SubmitRequest(collection="survey", submissions=[
            mpc_pb2.Submission(token=token, nonce=nonce, share=b"".join(w.to_bytes(8, "little") for w in part))])))
        assert reply.results[0].stored
    env.close("survey")

    async def run_sum() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_sum("survey")
    result = env.run(run_sum(), timeout=120)
    assert result.value == [sum(v[0] for v in honest), sum(v[1] for v in honest)]
    assert result.value == [-19, 46] and result.average == [-19 / 5, 46 / 5]
    assert (result.valid, result.complete) == (len(honest), len(honest) + len(bad) + 1)
    assert_only_coins_and_validity(env, result.session_id, result.complete)


def test_a_threshold_over_a_collection_opens_one_bit_per_element(env: Env) -> None:
    owner = new_owner_key()
    spec = CollectionSpec("levels", "range", 0, 100, 3, 3, "refuse", bytes(owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(owner, "levels", 4)
    rows = [[10, 90, 0], [20, 80, 0], [30, 0, 0], [40, 1, 100]]      # sums 100, 171, 100

    async def send() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            return [r.accepted for r in await c.submit_many("levels", list(zip(credentials, rows)))]
    assert all(env.run(send()))
    env.close("levels")

    async def at_least() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_at_least("levels", 101)
    assert env.run(at_least(), timeout=120).bits == [False, True, False]


def test_a_plurality_over_an_option_collection_counts_one_hot_votes_only_and_spends_the_dp_budget(env: Env) -> None:
    """Votes for 3 options arrive one-hot. Crafted ones (no option, two options, a 2, and 2 and -1 that
    add up to one vote) are excluded; the counts, the winner alone, and noisy counts follow the owner's
    rules across sessions and the collection's DP budget (1 by default)."""
    owner = new_owner_key()
    spec = CollectionSpec("colour", "option", 0, 1, 3, 4, "refuse", bytes(owner.verify_key), TRIO)
    env.create(spec)
    credentials = issue(owner, "colour", 12)
    honest = [0, 2, 2, 1, 2]

    async def send() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            return [r.accepted for r in await c.submit_many("colour", [(cr, [o]) for cr, o in zip(credentials, honest)])]
    assert all(env.run(send()))
    with pytest.raises(InputError, match="an option is an index 0..2"):
        env.run(env.submit("colour", credentials[11], [3]))
    for i, votes in enumerate(([0, 0, 0], [1, 1, 0], [0, 2, 0], [2, -1, 0], [0, 1 << 63, (1 << 63) + 1])):
        crafted(env, "colour", credentials[5 + i], votes)
    assert {tuple(v) for v in env.totals("colour").values()} >= {(1, 0, 0), (0, 0, 1), (0, 1, 0)}
    env.close("colour")

    async def plurality(**options: Any) -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_plurality("colour", 3, **options)
    result = env.run(plurality(), timeout=120)
    assert (result.counts, result.winner, result.valid, result.complete) == ([1, 1, 3], 2, 5, 10)
    assert_only_coins_and_validity(env, result.session_id, 10)
    assert env.run(plurality(winner_only=True), timeout=120).winner == 2   # implied by the counts: no new release
    with pytest.raises(Exception, match="max_releases"):                  # another protocol is a distinct release
        env.run(_sum(env, "colour"))
    from mpc.coordinator.client import Privacy
    noisy = env.run(plurality(privacy=Privacy(0.6, 1e-7)), timeout=120)
    assert noisy.noise is not None and noisy.noise.std > 1 and (noisy.valid, noisy.complete) == (5, 10)
    assert all(abs(c - t) <= noisy.noise.interval * 3 for c, t in zip(noisy.counts, [1, 1, 3]))
    with pytest.raises(Exception, match="budget"):                        # 0.6 + 0.6 > 1
        env.run(plurality(privacy=Privacy(0.6, 1e-7)), timeout=120)
    with pytest.raises(Exception, match="noise is made jointly"):
        env.run(plurality(privacy=Privacy(0.1, 1e-7, "local")), timeout=120)

    async def wrong_kind() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_vote("colour")
    with pytest.raises(Exception, match="holds option submissions; collection-vote takes a collection of ballot"):
        env.run(wrong_kind())


@pytest.mark.parametrize("second_price", [False, True])
def test_an_auction_over_a_collection_of_bids_names_the_winning_credential(env: Env, second_price: bool) -> None:
    """Honest bids in [0, 10^6], and crafted ones that would win if they counted: hi + 1, 2^31, 2^63;
    and lo - 1. The winner is the credential of the highest valid bid; the price is that bid, or the
    second-highest valid one."""
    name = f"lots_{int(second_price)}"
    owner = new_owner_key()
    env.create(CollectionSpec(name, "range", 0, 10**6, 1, 3, "refuse", bytes(owner.verify_key), TRIO))
    credentials = issue(owner, name, 10)
    honest = [500, 9000, 120, 8000, 3]

    async def send() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            return [r.accepted for r in await c.submit_many(name, [(cr, [b]) for cr, b in zip(credentials, honest)])]
    assert all(env.run(send()))
    for i, bid in enumerate((10**6 + 1, 1 << 31, 1 << 63, -1)):
        crafted(env, name, credentials[5 + i], bid)
    crafted(env, name, credentials[9], 10**6, nodes=("alice", "bob"))    # partial: never counted
    env.close(name)

    async def sell() -> Any:
        async with Coordinator(env.lc.cluster) as c:
            return await c.collection_auction(name, second_price=second_price)
    result = env.run(sell(), timeout=180)
    assert result.winner == credential_id(parse_credential(credentials[1], "test")).hex()
    assert (result.price, result.valid, result.complete) == (8000 if second_price else 9000, 5, 9)
    assert_only_coins_and_validity(env, result.session_id, 9)


def test_a_session_range_checks_in_chunks_over_real_daemons(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """With at most 4 values per program (CHUNK_VALUES, 2^13, scaled down), the range
    checks run chunk after chunk, each with its own preprocessing, and a last program finishes: the
    release is the same, and what the nodes open is still masked values and validity bits."""
    from mpc.protocols import collection
    monkeypatch.setattr(collection, "CHUNK_VALUES", 4)
    owner = new_owner_key()
    env.create(CollectionSpec("chunked", "range", 0, 100, 1, 5, "refuse", bytes(owner.verify_key), TRIO))
    credentials = issue(owner, "chunked", 14)
    honest = [5, 50, 95, 7, 100, 0, 33, 64, 12, 41]

    async def send() -> list[bool]:
        async with Contributor(env.lc.cluster) as c:
            return [r.accepted for r in await c.submit_many("chunked", [(cr, [v]) for cr, v in zip(credentials, honest)])]
    assert all(env.run(send()))
    for i, bad in enumerate((101, -1, 1 << 63)):
        crafted(env, "chunked", credentials[10 + i], bad)
    env.close("chunked")
    result = env.run(_sum(env, "chunked"), timeout=180)
    assert (result.value, result.valid, result.complete) == (sum(honest), len(honest), len(honest) + 3)
    for node, messages in session_views(env, result.session_id).items():
        programs = {st.split("/")[1] for _, st, _ in messages if st.startswith("coll/") and st != "coll/keys"}
        assert programs == {"c0", "c4", "c8", "c12", "f"}, (node, programs)
        openings = b"".join(p for _, st, p in messages if st.startswith("coll/c") and "/run/" in st
                            and not st.endswith("/valid"))
        assert len(openings) > 1000
        assert_balanced(openings)
        # the last program only adds up each node's shares of the valid submissions: it opens nothing
        assert {st for _, st, _ in messages if st.startswith("coll/f/")} == {"coll/f/mpc/hello"}, node


def test_a_collection_held_by_some_of_the_clusters_nodes_runs_under_the_default_policy(tmp_path: Path) -> None:
    """The README makes a collection of three nodes beside a four-node cluster. Under the default policy
    (participants = "cluster") every session over it was refused: the policy pinned the whole cluster,
    the collection exactly its own nodes. A collection's sessions now take the nodes it names, which its
    operators gave it; `mpc collection vote --nodes` runs one from the four-node cluster file, and any
    other set of nodes is still refused."""
    owner = new_owner_key()
    spec = CollectionSpec("trio-poll", "ballot", 0, 1, 1, 3, "refuse", bytes(owner.verify_key), TRIO)
    credentials = issue(owner, "trio-poll", 4)

    async def go() -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        async with running_cluster(tmp_path, 4, submit=True) as lc:
            for node in TRIO:
                with lc.store(node) as store:
                    assert store.create_collection(spec)
            async with Contributor(lc.cluster, timeout=5.0) as c:
                for credential, ballot in zip(credentials, (1, 1, 0, 1)):
                    assert (await c.submit("trio-poll", credential, [ballot])).accepted
            for node in TRIO:
                with lc.store(node) as store:
                    assert store.close_collection("trio-poll")
            cluster = str(lc.cluster.path)
            whole = await mpc_cli("collection", "vote", "trio-poll", "--cluster", cluster)
            held = await mpc_cli("collection", "vote", "trio-poll", "--cluster", cluster, "--nodes", ",".join(TRIO))
            return whole, held
    (code, out, err), held = asyncio.run(go())
    assert code == 1 and out == "" and "is held by alice, bob, carlos; a session over it takes exactly these " \
        "nodes" in err, (code, out, err)
    code, out, err = held
    assert code == 0 and "YES" in out, (code, out, err)


def test_mpc_collection_revoke_takes_only_the_collections_own_credentials(env: Env, tmp_path: Path) -> None:
    """Credentials issued for another collection were "revoked" all the same (counted, exit 0), though
    no submission of this collection could ever carry them: an owner who passed the wrong file believed
    the right ones revoked. Now each is checked against the collection's owner key first, and a file
    with any other credential revokes nothing, naming its line."""
    data_dir = env.lc.cluster.node("alice").data_dir
    assert data_dir is not None
    wrong, right = tmp_path / "wrong.txt", tmp_path / "right.txt"
    wrong.write_text(env.credentials["poll"][41] + "\n" + env.credentials["scores"][41] + "\n", encoding="ascii")
    right.write_text(env.credentials["poll"][41] + "\n", encoding="ascii")
    cid = credential_id(parse_credential(env.credentials["poll"][41], "test"))

    async def revoke(path: Path) -> tuple[int, str, str]:
        return await mpc_cli("collection", "revoke", "poll", "--credentials", str(path), "--data-dir", str(data_dir))
    code, out, err = env.run(revoke(wrong), timeout=120)
    assert code == 1 and out == "" and f"{wrong}:2: not a credential of collection 'poll'" in err, (code, out, err)
    with env.store("alice") as store:
        assert not store.is_revoked("poll", cid)
    code, out, err = env.run(revoke(right), timeout=120)
    assert code == 0 and "1 credential(s) revoked" in out, (code, out, err)
    with env.store("alice") as store:
        assert store.is_revoked("poll", cid)
