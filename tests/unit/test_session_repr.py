"""A node's live session never shows its raw contribution or its output share in a repr."""

from __future__ import annotations

import asyncio

import numpy as np

from mpc.node.core import Session
from mpc.pki import Identity


def test_session_repr_hides_contribution_and_output() -> None:
    async def go() -> str:
        output: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        output.set_result(np.array([123456789], dtype=np.uint64))
        session = Session("a" * 32, "sum", ("alice", "bob", "carlos"), Identity("coordinator", "coordinator"),
                          None, None, np.array([987654321], dtype=np.uint64), 0, 1.0, output)  # type: ignore[arg-type]
        return repr(session)

    text = asyncio.run(go())
    assert "aaaa" in text
    assert "987654321" not in text and "123456789" not in text
