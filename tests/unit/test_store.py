"""Tests of mpc.store: inputs, session records, concurrency and crash durability."""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mpc.errors import InputError, StoreError
from mpc.prg import SystemRng, random_words
from mpc.encoding import default_bounds
from mpc.store import (
    SESSION_STATES,
    TERMINAL_STATES,
    InputInfo,
    SessionRecord,
    Store,
    StoredInput,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = 987654321


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open_dir(tmp_path / "data")
    yield s
    s.close()


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# -- inputs ---------------------------------------------------------------------------------


def test_round_trip_scalar_vector_and_large(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    big = random_words(SystemRng(), 10**6).view(np.int64)  # CSPRNG only, even for test data
    vec = np.array([-(2**63), -1, 0, 1, 2**63 - 1], dtype=np.int64)
    with Store(path) as s:
        s.put_input("raise", np.array([SECRET], dtype=np.int64), 0, True)
        s.put_input("prices.v1", vec, 16, False, bounds=(-(2**63), 2**63 - 1))  # declared: the whole int64 range
        s.put_input("big", big, 0, False, bounds=(-(2**63), 2**63 - 1))
        got = s.get_input("raise")
        assert got.name == "raise" and got.is_scalar and got.frac_bits == 0
        assert got.values.tolist() == [SECRET]
    with Store(path) as s:  # survives close/reopen
        assert s.get_input("raise").values.tolist() == [SECRET]
        v = s.get_input("prices.v1")
        assert v.values.dtype == np.int64 and v.values.ndim == 1
        np.testing.assert_array_equal(v.values, vec)
        assert v.frac_bits == 16 and not v.is_scalar
        np.testing.assert_array_equal(s.get_input("big").values, big)


@pytest.mark.slow
def test_ten_million_elements_round_trip(tmp_path: Path) -> None:
    big = np.arange(10**7, dtype=np.int64) * 3 - 7
    with Store(tmp_path / "node.sqlite3") as s:
        s.put_input("huge", big, 0, False)
        assert s.list_inputs()[0].length == 10**7
        np.testing.assert_array_equal(s.get_input("huge").values, big)


def test_values_are_copied_and_timestamps_are_utc(store: Store) -> None:
    arr = np.array([1, 2, 3], dtype=np.int64)
    store.put_input("a", arr, 0, False)
    arr[0] = 99
    got = store.get_input("a")
    assert got.values.tolist() == [1, 2, 3]
    assert got.created_at.endswith("+00:00") and got.created_at == got.updated_at


def test_non_native_int64_is_accepted(store: Store) -> None:
    store.put_input("be", np.array([1, -2], dtype=">i8"), 0, False)
    got = store.get_input("be").values
    assert got.dtype == np.int64 and got.tolist() == [1, -2]


def test_list_inputs_metadata(store: Store) -> None:
    assert store.list_inputs() == []
    store.put_input("zeta", np.arange(7, dtype=np.int64), 8, False)
    store.put_input("Alpha", np.array([5], dtype=np.int64), 0, True)
    infos = store.list_inputs()
    assert [i.name for i in infos] == ["Alpha", "zeta"]
    assert infos[1] == InputInfo("zeta", 7, 8, False, infos[1].updated_at, 1, "number", default_bounds(8))
    assert infos[0].length == 1 and infos[0].is_scalar
    assert not any(hasattr(i, "values") for i in infos)


def test_overwrite_rules(store: Store) -> None:
    store.put_input("x", np.array([1], dtype=np.int64), 0, True)
    first = store.get_input("x")
    with pytest.raises(StoreError) as err:
        store.put_input("x", np.array([2], dtype=np.int64), 0, True)
    assert str(err.value) == (
        "input 'x' already exists at this node; pass --overwrite to replace it"
    )
    assert store.get_input("x").values.tolist() == [1]
    store.put_input("x", np.array([2, 3], dtype=np.int64), 4, False, overwrite=True)
    again = store.get_input("x")
    assert again.values.tolist() == [2, 3] and again.frac_bits == 4 and not again.is_scalar
    assert again.created_at == first.created_at and again.updated_at >= first.updated_at
    store.put_input("fresh", np.array([1], dtype=np.int64), 0, True, overwrite=True)
    assert store.get_input("fresh").values.tolist() == [1]


@pytest.mark.parametrize(
    "name",
    ["", "-lead", ".hidden", "_x", "has space", "a/b", "é", "x" * 129, "a\n", "a;DROP", 7],
)
def test_bad_names_are_refused(store: Store, name: object) -> None:
    with pytest.raises(InputError) as err:
        store.put_input(name, np.array([1], dtype=np.int64), 0, True)  # type: ignore[arg-type]
    assert repr(name) in str(err.value)
    assert store.list_inputs() == []


@pytest.mark.parametrize("name", ["a", "A9", "x" * 128, "v1.2_final-3", "0"])
def test_good_names_are_accepted(store: Store, name: str) -> None:
    store.put_input(name, np.array([1], dtype=np.int64), 0, True)
    assert store.get_input(name).name == name


def test_empty_vector_is_refused(store: Store) -> None:
    with pytest.raises(InputError, match=r"^input 'x' is empty$"):
        store.put_input("x", np.array([], dtype=np.int64), 0, False)


@pytest.mark.parametrize(
    ("values", "frac_bits", "is_scalar"),
    [
        (np.array([1.5]), 0, True),
        (np.array([1], dtype=np.int32), 0, True),
        (np.array([[1, 2]], dtype=np.int64), 0, False),
        ([1, 2], 0, False),
        (np.array([1, 2], dtype=np.int64), 0, True),  # scalar with two values
        (np.array([1], dtype=np.int64), -1, True),
        (np.array([1], dtype=np.int64), 33, True),
        (np.array([1], dtype=np.int64), True, True),
        (np.array([1], dtype=np.int64), 1.0, True),
        (np.array([1], dtype=np.int64), 0, 1),
    ],
)
def test_malformed_values_are_refused(
    store: Store, values: object, frac_bits: object, is_scalar: object
) -> None:
    with pytest.raises(InputError, match="'x'"):
        store.put_input("x", values, frac_bits, is_scalar)  # type: ignore[arg-type]
    assert store.list_inputs() == []


def test_frac_bits_bounds_are_inclusive(store: Store) -> None:
    store.put_input("lo", np.array([1], dtype=np.int64), 0, True)
    store.put_input("hi", np.array([1], dtype=np.int64), 32, True)
    assert store.get_input("hi").frac_bits == 32


def test_missing_input_message_names_it(store: Store) -> None:
    with pytest.raises(StoreError, match=r"^no input named 'salary' at this node$"):
        store.get_input("salary")
    with pytest.raises(StoreError, match="'salary'"):
        store.delete_input("salary")


def test_delete_input(store: Store) -> None:
    store.put_input("x", np.array([1], dtype=np.int64), 0, True)
    store.delete_input("x")
    assert store.list_inputs() == []
    with pytest.raises(StoreError):
        store.get_input("x")


def test_repr_and_str_do_not_show_values(store: Store) -> None:
    store.put_input("raise", np.array([SECRET], dtype=np.int64), 0, True)
    got = store.get_input("raise")
    assert repr(got) == "StoredInput(name='raise', length=1, frac_bits=0, <values redacted>)"
    for text in (repr(got), str(got), f"{got}", repr([got])):
        assert str(SECRET) not in text
    assert str(SECRET) not in repr(store.list_inputs())


def test_secret_is_not_left_in_the_file_after_delete(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    marker = np.array([0x5EC2E75EC2E75EC2] * 64, dtype=np.int64)
    with Store(path) as s:
        s.put_input("x", marker, 0, False, bounds=(0, 2**63 - 1))
        s.delete_input("x")
    # close() checkpoints the WAL into the main file; secure_delete zeroed the freed pages.
    needle = marker[:4].tobytes()
    for f in tmp_path.iterdir():
        assert needle not in f.read_bytes(), f.name


def test_old_values_leave_the_write_ahead_log_too_while_the_node_keeps_the_store_open(tmp_path: Path) -> None:
    """A node keeps its store open for its lifetime, so its write-ahead log is never deleted, and a
    checkpoint alone reuses it without shrinking it: the frames that wrote an input stay there after the
    operator (another connection: `mpc input put --overwrite`, `mpc input rm`) replaced or deleted it,
    readable by anyone with the data directory or a backup of it. After a replacement and after a
    deletion, neither the database file nor its log holds the old values, while the node's connection,
    which has just read them, is still open."""
    old = np.array([0x5EC2E75EC2E75EC2] * 512, dtype=np.int64)
    newer = np.array([0x0DDBA11C0FFEE000 + i for i in range(512)], dtype=np.int64)
    bounds = (0, 2**63 - 1)

    def found(needle: bytes) -> list[str]:
        return [f.name for f in tmp_path.iterdir() if f.is_file() and needle in f.read_bytes()]

    with Store.open_dir(tmp_path) as node, Store.open_dir(tmp_path) as operator:
        operator.put_input("salary", old, 0, False, bounds=bounds)
        assert node.get_input("salary").values.tolist() == old.tolist()   # the node has read them
        for _ in range(5):   # other traffic meanwhile, as a node's sessions make
            node.append_audit("refused", "0" * 32, "spiffe://mpc/coordinator/c", "sum", ["salary"], ["a", "b"],
                              reason="test")
        assert found(old[:4].tobytes())   # where they are while the input holds them
        operator.put_input("salary", newer, 0, False, bounds=bounds, overwrite=True)
        assert found(old[:4].tobytes()) == []
        assert node.get_input("salary").values.tolist() == newer.tolist()
        operator.delete_input("salary")
        assert found(newer[:4].tobytes()) == [] and found(old[:4].tobytes()) == []
        with pytest.raises(StoreError):
            node.get_input("salary")


def test_file_and_directory_modes(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    with Store.open_dir(data) as s:
        s.put_input("x", np.array([1], dtype=np.int64), 0, True)
        assert s.path == data / "node.sqlite3"
        assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        for extra in ("node.sqlite3-wal", "node.sqlite3-shm"):
            if (data / extra).exists():
                assert stat.S_IMODE(os.stat(data / extra).st_mode) == 0o600


def test_schema_version_and_newer_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    Store(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 999"):
        Store(path)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(path)


def test_closed_store_raises(tmp_path: Path) -> None:
    s = Store(tmp_path / "node.sqlite3")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.list_inputs()


# -- two stores, two processes, kill -9 -----------------------------------------------------


def test_second_store_sees_writes_of_the_first(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    with Store(path) as daemon, Store(path) as cli:
        cli.put_input("x", np.array([1, 2], dtype=np.int64), 0, False)
        assert daemon.get_input("x").values.tolist() == [1, 2]
        daemon.record_session("s1", "sum", "x", ["a", "b", "c"], "coord")
        assert cli.get_session("s1") is not None
        cli.put_input("x", np.array([3], dtype=np.int64), 0, True, overwrite=True)
        assert daemon.get_input("x").values.tolist() == [3]


def _put_many(path: str, prefix: str, count: int) -> None:
    with Store(Path(path)) as s:
        for i in range(count):
            s.put_input(f"{prefix}{i}", np.full(100, i, dtype=np.int64), 0, False)


def test_concurrent_writers_from_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    Store(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_put_many, args=(str(path), p, 50)) for p in ("a", "b")]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    with Store(path) as s:
        infos = s.list_inputs()
        assert len(infos) == 100
        assert s.get_input("b49").values.tolist() == [49] * 100
    assert _integrity(path) == "ok"


_CRASHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from mpc.store import Store
    s = Store(Path(sys.argv[1]))
    s.put_input("durable", np.array([11, 22, 33], dtype=np.int64), 3, False)
    s.record_session("s-crash", "sum", "durable", ["a", "b", "c"], "coord")
    s.set_session_status("s-crash", "running")
    print("ok", flush=True)
    time.sleep(120)
    """
)


def test_kill_9_durability(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        assert line.strip() == b"ok", proc.stderr.read() if proc.poll() is not None else line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    with Store(path) as s:
        got = s.get_input("durable")
        assert got.values.tolist() == [11, 22, 33] and got.frac_bits == 3
        assert s.mark_unfinished_interrupted() == 1
        rec = s.get_session("s-crash")
        assert rec is not None and rec.status == "interrupted"
    assert _integrity(path) == "ok"


# -- sessions -------------------------------------------------------------------------------


def test_session_lifecycle(store: Store) -> None:
    assert store.get_session("s1") is None
    store.record_session("s1", "sum", "raise", ("alice", "bob", "carol"), "coord")
    rec = store.get_session("s1")
    assert isinstance(rec, SessionRecord)
    assert rec.status == "prepared" and rec.reason == ""
    assert rec.participants == ("alice", "bob", "carol")
    assert (rec.protocol, rec.input_name, rec.coordinator) == ("sum", "raise", "coord")
    store.set_session_status("s1", "running")
    assert store.get_session("s1").status == "running"  # type: ignore[union-attr]
    store.set_session_status("s1", "failed", "peer bob timed out")
    done = store.get_session("s1")
    assert done is not None and done.status == "failed" and done.reason == "peer bob timed out"
    assert done.created_at == rec.created_at and done.updated_at >= rec.updated_at


@pytest.mark.parametrize("final", sorted(TERMINAL_STATES))
def test_terminal_state_is_immutable(store: Store, final: str) -> None:
    store.record_session("s1", "sum", "x", ["a", "b", "c"], "coord")
    store.set_session_status("s1", final, "why")
    for status in SESSION_STATES:
        with pytest.raises(StoreError, match="'s1' has already ended"):
            store.set_session_status("s1", status)
    rec = store.get_session("s1")
    assert rec is not None and rec.status == final and rec.reason == "why"


def test_bad_status_and_unknown_session(store: Store) -> None:
    store.record_session("s1", "sum", "x", ["a", "b", "c"], "coord")
    with pytest.raises(StoreError, match="unknown status 'finished'"):
        store.set_session_status("s1", "finished")
    with pytest.raises(StoreError, match="no session 'nope'"):
        store.set_session_status("nope", "running")


def test_duplicate_session_id_is_refused(store: Store) -> None:
    store.record_session("s1", "sum", "x", ["a", "b", "c"], "coord")
    store.set_session_status("s1", "done")
    with pytest.raises(StoreError, match="'s1' is already known"):
        store.record_session("s1", "vote", "y", ["a", "b", "c"], "other")
    rec = store.get_session("s1")
    assert rec is not None and rec.protocol == "sum" and rec.status == "done"


@pytest.mark.parametrize("participants", ["abc", [], ["a", ""], ["a", 3]])
def test_bad_participants_are_refused(store: Store, participants: object) -> None:
    with pytest.raises(StoreError):
        store.record_session("s1", "sum", "x", participants, "c")  # type: ignore[arg-type]
    assert store.get_session("s1") is None


def test_mark_unfinished_interrupted(store: Store) -> None:
    for sid in ("p", "r", "d", "f"):
        store.record_session(sid, "sum", "x", ["a", "b", "c"], "coord")
    store.set_session_status("r", "running")
    store.set_session_status("d", "done")
    store.set_session_status("f", "failed", "boom")
    assert store.mark_unfinished_interrupted() == 2
    status = {sid: store.get_session(sid) for sid in ("p", "r", "d", "f")}
    for sid in ("p", "r"):
        rec = status[sid]
        assert rec is not None and rec.status == "interrupted"
        assert rec.reason == "node restarted during the session"
    assert status["d"].status == "done"  # type: ignore[union-attr]
    assert status["f"].reason == "boom"  # type: ignore[union-attr]
    assert store.mark_unfinished_interrupted() == 0


def test_list_sessions_newest_first(store: Store) -> None:
    for i in range(5):
        store.record_session(f"s{i}", "sum", "x", ["a", "b", "c"], "coord")
    assert [r.session_id for r in store.list_sessions()] == ["s4", "s3", "s2", "s1", "s0"]
    assert [r.session_id for r in store.list_sessions(limit=2)] == ["s4", "s3"]
    with pytest.raises(StoreError):
        store.list_sessions(limit=0)


def test_store_is_usable_from_threads(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def put(i: int) -> None:
        store.put_input(f"t{i}", np.array([i], dtype=np.int64), 0, True)
        store.record_session(f"s{i}", "sum", f"t{i}", ["a", "b", "c"], "coord")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, range(40)))
    assert len(store.list_inputs()) == 40
    assert len(store.list_sessions(limit=100)) == 40


def test_stored_input_type() -> None:
    rec = StoredInput("n", np.array([SECRET], dtype=np.int64), 0, True, "t", "t")
    assert str(SECRET) not in repr(rec)
