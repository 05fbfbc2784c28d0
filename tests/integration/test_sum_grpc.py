"""Secure sum and average over real grpc.aio daemons with mutual TLS on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from mpc.coordinator.client import Coordinator
from mpc.encoding import encode_floats
from mpc.errors import InputError, SessionFailed
from mpc.protocols.catalogue import NoParams, entry

from .harness import prepare_request, running_cluster

RAISES = {"alice": 3800, "bob": 2514, "carlos": 2982, "david": 3390}


def test_raises_example_exactly(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 4) as lc:
            for name, value in RAISES.items():
                lc.put(name, "raise", [value], scalar=True)
            async with Coordinator(lc.cluster) as c:
                total = await c.sum("raise")
                avg = await c.average("raise")
            assert total.value == 12686 and isinstance(total.value, int)
            assert avg.average == 3171.5 and avg.total == 12686 and avg.count == 4
    asyncio.run(go())


def test_vector_sums_negative_and_real(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            vectors = {"alice": [1, -5, 7, 2**40], "bob": [-1, -5, 0, 3], "carlos": [0, 10, -7, -(2**40)]}
            for name, v in vectors.items():  # 2**40 lies beyond the default bounds: declare wider ones
                lc.put(name, "v", v, bounds=(-(2**40), 2**40))
            reals = {"alice": [0.5, -1.25], "bob": [2.75, 1e-3], "carlos": [-0.125, 3.0]}
            for name, v in reals.items():
                lc.put(name, "r", encode_floats(v, 16), frac_bits=16)
            async with Coordinator(lc.cluster) as c:
                assert (await c.sum("v")).value == [0, 0, 0, 3]
                r = (await c.sum("r")).value
                assert isinstance(r, list)
                assert r[0] == 3.125
                assert abs(r[1] - (-1.25 + 1e-3 + 3.0)) <= 2**-16
                # Mixed scales: an integer input and a fixed-point one are summed at the finer scale.
                lc.put("alice", "m", [2])
                lc.put("bob", "m", encode_floats([0.5], 16), frac_bits=16)
                lc.put("carlos", "m", [1])
                assert (await c.sum("m")).value == [3.5]
    asyncio.run(go())


def test_average_records_and_elementwise(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            records = {"alice": [10, 20, 30], "bob": [40], "carlos": [50, 60]}
            for name, v in records.items():
                lc.put(name, "salary", v)
            vecs = {"alice": [1, 2], "bob": [3, 4], "carlos": [5, 9]}
            for name, v in vecs.items():
                lc.put(name, "grad", v)
            async with Coordinator(lc.cluster) as c:
                a = await c.average("salary")
                assert (a.average, a.total, a.count) == (35.0, 210, 6)
                e = await c.average("grad", elementwise=True)
                assert e.average == [3.0, 5.0] and e.total == [9, 15] and e.count == 3
    asyncio.run(go())


@pytest.mark.parametrize("length", [10**6, 10**7])
def test_long_vectors_stream_past_the_4mb_default(tmp_path: Path, length: int) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            base = np.arange(length, dtype=np.int64)
            for i, name in enumerate(("alice", "bob", "carlos")):
                lc.put(name, "big", base * (i + 1) - i)
            async with Coordinator(lc.cluster) as c:
                opened = await c.open(entry("sum"), NoParams(), "big")
            expected = (base * 6 - 3).view(np.uint64)
            assert opened.words.size == length
            assert np.array_equal(opened.words, expected)
    asyncio.run(go())


def test_lengths_that_differ_fail_naming_nodes(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            lc.put("alice", "v", [1, 2, 3])
            lc.put("bob", "v", [1, 2, 3])
            lc.put("carlos", "v", [1, 2, 3, 4, 5])
            async with Coordinator(lc.cluster) as c:
                with pytest.raises(SessionFailed, match=r"alice 3, bob 3, carlos 5") as err:
                    await c.sum("v")
            assert "nothing was shared" in str(err.value)
            assert all(not received for received in lc.recorder.received.values())
    asyncio.run(go())


def test_scalar_and_vector_mixed_fail_naming_nodes(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            lc.put("alice", "x", [5], scalar=True)
            lc.put("bob", "x", [6], scalar=True)
            lc.put("carlos", "x", [7])  # a vector of one element
            async with Coordinator(lc.cluster) as c:
                with pytest.raises(SessionFailed, match=r"scalar at alice, bob but a vector at carlos"):
                    await c.sum("x")
            assert all(not received for received in lc.recorder.received.values())
    asyncio.run(go())


def test_a_sum_that_could_overflow_is_refused_before_sharing(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            big = (1 << 63) // 3 + 1  # three of these would wrap int64
            # bob declares bounds wide enough for his value; the others keep the default bounds.
            for name in ("alice", "bob", "carlos"):
                lc.put(name, "huge", [1, big if name == "bob" else 2],
                       bounds=(-big, big) if name == "bob" else None)
            seen: list[bytes] = []
            async with Coordinator(lc.cluster, observer=lambda s, n, b: seen.append(b)) as c:
                # Refused at prepare on bob's declared bounds (public), not on his stored value.
                with pytest.raises(SessionFailed, match=r"input 'huge' at node bob declares bounds that could "
                                                        r"overflow a sum over 3 parties at 0 fractional bits; "
                                                        r"declare narrower bounds") as err:
                    await c.sum("huge")
                assert str(big) not in str(err.value)
                assert "nothing was shared" in str(err.value)
            assert seen == []  # the coordinator received no share at all
            assert all(not received for received in lc.recorder.received.values())  # no peer message either
            for server in lc.servers.values():
                assert server.core.sessions == {}
    asyncio.run(go())


def test_a_value_outside_its_declared_bounds_is_refused_at_put(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            big = (1 << 63) // 3 + 1
            # The default bounds (+-2147483647) refuse a larger value, naming its position, not the value.
            with pytest.raises(InputError, match=r"input 'huge': value 2 lies outside the declared bounds "
                                                 r"\(the default") as err:
                lc.put("alice", "huge", [1, big])
            assert str(big) not in str(err.value)
            # Declared bounds refuse a value outside them too.
            with pytest.raises(InputError, match=r"value 1 lies outside the declared bounds; nothing was stored"):
                lc.put("alice", "small", [11, 5], bounds=(0, 10))
            # Nothing was stored: the node has no such input.
            async with Coordinator(lc.cluster) as c:
                with pytest.raises(SessionFailed, match=r"huge"):
                    await c.sum("huge")
            assert all(not received for received in lc.recorder.received.values())
    asyncio.run(go())


def test_a_vote_refuses_a_fixed_point_scale(tmp_path: Path) -> None:
    """Compute asking a vote for a non-zero scale is refused (found by fuzzing: it was INTERNAL)."""
    import grpc
    import secrets as _secrets

    from mpc.transport.peers import Channels
    from mpc.transport.tls import TlsMaterial
    from mpc.v1 import mpc_pb2, mpc_pb2_grpc

    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            for name in ("alice", "bob", "carlos"):
                lc.put(name, "ballot", [1, 0], ballots=True)
            me = lc.cluster.require_coordinator()
            channels = Channels(lc.cluster, TlsMaterial.load(lc.cluster.ca, me.cert, me.key))
            try:
                stub = mpc_pb2_grpc.ControlStub(channels.channel("alice"))
                sid = _secrets.token_hex(16)
                await stub.Prepare(prepare_request(sid, "vote", "ballot", ["alice", "bob", "carlos"]), timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in stub.Compute(mpc_pb2.ComputeRequest(session_id=sid, frac_bits=1, length=1),
                                                timeout=5):
                        pass
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "a vote takes integers" in (err.value.details() or "")
            finally:
                await channels.close()
    asyncio.run(go())
