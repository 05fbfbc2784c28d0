"""Agreement before anything value-dependent leaves (mpc/protocols/agreement.py), with secure-sum
engines behind it and an in-memory router delivering in a CSPRNG-shuffled order.

The attack it stops: a coordinator prepares the victim with one description (its salary) and the
others with another (an all-zero input); if any description differs, no party may emit its output
share or any message that depends on its input.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
import pytest

from mpc.errors import LocalProtocolError, PolicyError, RemoteProtocolError, RoundMismatch
from mpc.prg import AesCtrRng
from mpc.protocols.agreement import DIGEST_BYTES, STEP_DIGEST, AgreedParty, session_digest, session_digests
from mpc.events import Output, Send
from mpc.protocols.sum import SecureSumParty

SESSION = "0123456789abcdef0123456789abcdef"


def names(n: int) -> list[str]:
    return [f"node-{i}" for i in range(n)]


def party(me: str, parties: Sequence[str], length: int = 3) -> AgreedParty:
    return AgreedParty(SecureSumParty(SESSION, me, parties, length, AesCtrRng(secrets.token_bytes(16))),
                       SESSION, me, parties)


def description(input_name: str = "salary", **changes: object) -> dict[str, object]:
    base: dict[str, object] = {"session": SESSION, "aggregate": "sum", "threshold": None, "input": input_name,
                               "participants": ["node-0", "node-1", "node-2"], "frac_bits": 0, "length": 3,
                               "versions": {"node-0": 1, "node-1": 1, "node-2": 1}}
    base.update(changes)
    return base


def run(n: int, digests: Sequence[bytes], values: Sequence[list[int]]) -> tuple[list[list[object]], list[Exception]]:
    """Start every party, deliver every message in a shuffled order; returns (events out per party, errors)."""
    parties = names(n)
    engines = [party(p, parties) for p in parties]
    out: list[list[object]] = [[] for _ in parties]
    errors: list[Exception] = []
    queue: list[tuple[int, Send]] = []
    failed: set[int] = set()

    def emit(i: int, events: Sequence[object]) -> None:
        out[i].extend(events)
        queue.extend((i, e) for e in events if isinstance(e, Send))

    for i, e in enumerate(engines):
        emit(i, e.start(np.array(values[i], dtype=np.uint64), digests[i]))
        if e.failure is not None:   # an early digest differed: only our digests went out
            errors.append(e.failure)
            failed.add(i)
    while queue:
        i, send = queue.pop(secrets.randbelow(len(queue)))
        j = parties.index(send.to)
        if j in failed:
            continue
        try:
            emit(j, engines[j].receive(parties[i], send.step, send.payload))
        except RemoteProtocolError as exc:
            errors.append(exc)
            failed.add(j)
    return out, errors


@pytest.mark.parametrize("n", [3, 4, 6])
def test_agreeing_parties_sum_correctly(n: int) -> None:
    digest = session_digest(description())
    values = [[secrets.randbelow(1000) for _ in range(3)] for _ in range(n)]
    out, errors = run(n, [digest] * n, values)
    assert not errors
    shares = [[e for e in events if isinstance(e, Output)] for events in out]
    assert all(len(s) == 1 for s in shares)
    total = sum((s[0].words for s in shares), np.zeros(3, dtype=np.uint64))
    assert total.tolist() == [sum(col) for col in zip(*values)]


@pytest.mark.parametrize("victim", [0, 1, 2])
@pytest.mark.parametrize("field", ["input", "aggregate", "threshold", "participants", "frac_bits", "versions"])
def test_any_difference_holds_every_output_and_value_dependent_message(victim: int, field: str) -> None:
    other: dict[str, object] = {"input": "zeros", "aggregate": "average-records", "threshold": 7,
                                "participants": ["node-1", "node-0", "node-2"], "frac_bits": 16,
                                "versions": {"node-0": 1, "node-1": 2, "node-2": 1}}
    digests = [session_digest(description()) for _ in range(3)]
    digests[victim] = session_digest(description(**{field: other[field]}))
    out, errors = run(3, digests, [[5, 6, 7], [0, 0, 0], [0, 0, 0]])
    assert errors, "a differing description must fail the session somewhere"
    assert all("prepared a different session description" in str(e) for e in errors)
    for events in out:
        assert not any(isinstance(e, Output) for e in events)
        # Only digests and the fresh seeds (value-free) ever left.
        assert {e.step for e in events if isinstance(e, Send)} <= {STEP_DIGEST, "sum/seed"}


def test_output_waits_for_the_last_digest() -> None:
    parties = names(3)
    digest = session_digest(description())
    first = party("node-0", parties)
    # node-0 owes no seed and receives none: without agreement it would output at once.
    events = first.start(np.array([1, 2, 3], dtype=np.uint64), digest)
    assert not any(isinstance(e, Output) for e in events)
    assert sorted(e.to for e in events if isinstance(e, Send) and e.step == STEP_DIGEST) == ["node-1", "node-2"]
    assert first.waiting_for == ("node-1", "node-2")
    assert first.receive("node-1", STEP_DIGEST, digest) == []
    assert not first.agreed
    released = first.receive("node-2", STEP_DIGEST, digest)
    assert first.agreed and [type(e) for e in released] == [Output]


def test_a_digest_that_arrives_before_start_is_checked_at_start() -> None:
    parties = names(3)
    p = party("node-1", parties)
    assert p.receive("node-0", STEP_DIGEST, session_digest(description("zeros"))) == []
    mine = session_digest(description())
    events = p.start(np.zeros(3, dtype=np.uint64), mine)
    # Our digest still goes to every peer (so that they learn of the disagreement at once), nothing else.
    assert [(e.to, e.step, e.payload) for e in events if isinstance(e, Send)] == [
        ("node-0", STEP_DIGEST, mine), ("node-2", STEP_DIGEST, mine)]
    assert len(events) == 2
    assert p.failure is not None and "node node-0 prepared a different session description" in str(p.failure)


def test_malformed_digests_are_refused() -> None:
    parties = names(3)
    p = party("node-1", parties)
    digest = session_digest(description())
    p.start(np.zeros(3, dtype=np.uint64), digest)
    with pytest.raises(RemoteProtocolError, match="33 bytes"):
        p.receive("node-0", STEP_DIGEST, digest + b"x")
    with pytest.raises(RemoteProtocolError, match="not a peer"):
        p.receive("node-9", STEP_DIGEST, digest)
    p.receive("node-0", STEP_DIGEST, digest)
    with pytest.raises(RoundMismatch, match="second session digest"):
        p.receive("node-0", STEP_DIGEST, digest)
    with pytest.raises(LocalProtocolError):
        p.start(np.zeros(3, dtype=np.uint64), digest)
    with pytest.raises(LocalProtocolError):
        party("node-0", parties).start(np.zeros(3, dtype=np.uint64), b"short")


def test_the_digest_is_canonical_and_binds_every_field() -> None:
    base = description()
    reordered = dict(reversed(list(base.items())))
    assert session_digest(base) == session_digest(reordered)
    assert len(session_digest(base)) == DIGEST_BYTES
    seen = {session_digest(base)}
    for key, value in [("session", "f" * 32), ("aggregate", "vote"), ("threshold", 3), ("input", "salary2"),
                       ("participants", ["node-0", "node-2", "node-1"]), ("frac_bits", 1), ("length", 4),
                       ("versions", {"node-0": 1, "node-1": 1, "node-2": 2}), ("coordinator", "spiffe://x")]:
        seen.add(session_digest({**base, key: value}))
    assert len(seen) == 10


@pytest.mark.parametrize("other", [{}, {"input": "a\0b"}, {"params": {"k": "\0", "z": "\u00e9\"\\"}}])
def test_digests_made_around_a_place_for_the_session_id_are_the_digests_of_the_whole(other: dict[str, object]) -> None:
    """session_digests (a repeat run from its plan, mpc/node/core.py) gives session_digest's bytes for any
    id, whatever else the description holds (a NUL elsewhere: each digest is then made in full)."""
    base = {**description(), **other}
    digests = session_digests(base)
    for sid in ("0" * 32, secrets.token_hex(16), "\0", "\"}{", "é"):
        assert digests(sid) == session_digest({**base, "session": sid})
    assert session_digests(base, "input")("x") == session_digest({**base, "input": "x"})


def test_the_release_is_counted_at_agreement_and_a_refusal_releases_nothing() -> None:
    parties = names(3)
    digest = session_digest(description())
    calls: list[str] = []

    def refuse() -> None:
        calls.append("agreed")
        raise PolicyError("budget spent")

    inner = SecureSumParty(SESSION, "node-0", parties, 3, AesCtrRng(secrets.token_bytes(16)))
    p = AgreedParty(inner, SESSION, "node-0", parties, refuse)
    events = p.start(np.array([1, 2, 3], dtype=np.uint64), digest)
    assert calls == [] and not any(isinstance(e, Output) for e in events)
    p.receive("node-1", STEP_DIGEST, digest)
    assert calls == []                                   # not before the last digest
    with pytest.raises(PolicyError):
        p.receive("node-2", STEP_DIGEST, digest)
    assert calls == ["agreed"] and not p.agreed

    counted: list[str] = []
    q = AgreedParty(SecureSumParty(SESSION, "node-0", parties, 3, AesCtrRng(secrets.token_bytes(16))),
                    SESSION, "node-0", parties, lambda: counted.append("agreed"))
    q.receive("node-1", STEP_DIGEST, digest)
    q.receive("node-2", STEP_DIGEST, digest)
    assert counted == []                                 # digests alone: we have not started
    out = q.start(np.array([1, 2, 3], dtype=np.uint64), digest)
    assert counted == ["agreed"] and any(isinstance(e, Output) for e in out)
