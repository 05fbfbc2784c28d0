"""A node's live session never shows its input's values, a ballot tally or its output share in a repr."""

from __future__ import annotations

import asyncio

import numpy as np

from mpc.node.core import Session
from mpc.pki import Identity
from mpc.protocols.catalogue import Declared, NoParams, VoteParams, entry
from mpc.store.inputs import StoredInput

SESSION_ID = "a" * 32
PARTIES = ("alice", "bob", "carlos")
COORDINATOR = Identity("coordinator", "coordinator")
OUTPUT_WORD = 123456789


def session_repr(**fields: object) -> str:
    """The repr of a Session built in a running loop, its output share already set."""
    async def go() -> str:
        output: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        output.set_result(np.array([OUTPUT_WORD], dtype=np.uint64))
        return repr(Session(session_id=SESSION_ID, parties=PARTIES, coordinator=COORDINATOR, deadline=1.0,
                           output=output, **fields))  # type: ignore[arg-type]
    return asyncio.run(go())


def test_session_repr_hides_input_values_and_output() -> None:
    # A number input as prepare holds it (store.get_input): the values are in the session.
    values = np.array([987654321, -555444333], dtype=np.int64)
    stored = StoredInput("salary", values, 0, False, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", 3)
    declared = Declared("salary", "alice", "number", None, values.size, 0, False)
    text = session_repr(protocol=entry("sum"), params=NoParams(), stored=stored, declared=declared,
                        length=values.size)
    assert "aaaa" in text and "salary" in text
    for secret in ("987654321", "555444333", str(OUTPUT_WORD)):
        assert secret not in text, secret


def test_session_repr_hides_a_ballot_tally() -> None:
    # A vote reads only the tally kept beside the ballots (store.get_declared): no values are loaded,
    # and the tally is as private as the ballots (README "What is revealed").
    tally, cast = 271828, 314159
    stored = StoredInput("ballots", np.empty(0, dtype=np.int64), 0, False, "2026-01-01T00:00:00Z",
                         "2026-01-02T00:00:00Z", 1, "ballots", (0, 1), (cast - tally, tally))
    declared = Declared("ballots", "alice", "ballots", (0, 1), cast, 0, False)
    text = session_repr(protocol=entry("vote"), params=VoteParams(), stored=stored, declared=declared,
                        length=1)
    assert "aaaa" in text
    assert str(OUTPUT_WORD) not in text
    assert str(tally) not in text
    assert str(2 * tally - cast) not in text   # this node's contribution to "at least half"
