"""Operating a node (issue 6): the audit log, Prometheus metrics and logs, on one real run.

One module-scoped scenario on three in-process node daemons (grpc.aio, mutual TLS, SQLite,
loopback; each serving metrics on its own loopback port) runs, with every logger at DEBUG in
the JSON format:

    1. a secure sum of `salary` (distinctive seven-digit inputs);
    2. a vote on `ballot` (T = 5 of N = 8: YES);
    3. a sum of `ballot`, which carlos's policy refuses (alice and bob, whose owners let a sum
       use their ballots after the vote, had prepared: aborted);

and keeps what it saw: every log line, every peer payload each node received, every output
share chunk the coordinator received, the audit log of each node, and each node's /metrics
scraped over HTTP. The tests below then check each feature against that record, and against
the others (the bytes the metrics count are the bytes the audit log lists).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import subprocess
import sys
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import grpc

from mpc.coordinator.client import Coordinator
from mpc.errors import SessionFailed
from mpc.logs import JsonFormatter
from mpc.node.daemon import NodeServer
from mpc.ot.pool import SETUP_ID_BYTES, STEP_FILL
from mpc.pki import Identity
from mpc.protocols.catalogue import NoParams, entry as catalogue_entry
from mpc.protocols.compute import STEP_HELLO
from mpc.store import AuditEntry, Store
from mpc.transport.tls import TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import LocalCluster, prepare_request, running_cluster

TRIO = ("alice", "bob", "carlos")
SALARY = {"alice": 7_340_211, "bob": 5_918_407, "carlos": 6_602_153}
BALLOT = {"alice": [1, 0, 1], "bob": [1, 1], "carlos": [0, 0, 1]}       # T = 5, N = 8: YES
COORDINATOR = "spiffe://mpc/coordinator/coordinator"
CAROL_POLICY = 'allow.sum = ["salary"]'                                 # carlos: ballots are never summed
# alice and bob: a sum may use the ballots, as a second release of their version after the vote.
LOOSE_POLICY = 'allow.sum = ["salary", "ballot"]\nmax_releases = 2'
SCRAPE_TIMEOUT = 5.0
FORGED_ID = "\x1b[2K\rFAKE 2026-01-01 sum done\n"


class ListHandler(logging.Handler):
    """Keeps every formatted record, and notes any record handed raw bytes or arrays to format
    (whatever their rendering: repr, hex, base64, the scan below would have to guess it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.binary_args: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        if any(isinstance(a, (bytes, bytearray, memoryview, np.ndarray)) for a in args):
            self.binary_args.append(f"{record.name}: {record.msg}")
        self.lines.append(self.format(record))


def control_stub(lc: LocalCluster, node: str) -> tuple[grpc.aio.Channel, mpc_pb2_grpc.ControlStub]:
    """A Control stub to `node` with the cluster's coordinator certificate (raw requests)."""
    me = lc.cluster.require_coordinator()
    target = lc.cluster.node(node)
    creds = TlsMaterial.load(lc.cluster.ca, me.cert, me.key).channel_credentials()
    channel = grpc.aio.secure_channel(target.address, creds, options=channel_options(target.name))
    return channel, mpc_pb2_grpc.ControlStub(channel)


async def prepare_raw(lc: LocalCluster, node: str, session_id: str, input_name: str,
                      timeout_ms: int = 30_000) -> grpc.aio.AioRpcError | None:
    """Send one Prepare for a sum over TRIO; returns the error, or None if accepted."""
    channel, stub = control_stub(lc, node)
    try:
        await stub.Prepare(prepare_request(session_id, "sum", input_name, TRIO, timeout_ms=timeout_ms), timeout=10)
        return None
    except grpc.aio.AioRpcError as exc:
        return exc
    finally:
        await channel.close()


@dataclass
class Scenario:
    """What the run produced and what each party saw."""

    workdir: Path
    data_dirs: dict[str, Path]
    total: int = 0
    vote: bool = False
    refusal: str = ""
    sessions: dict[str, str] = field(default_factory=dict)         # "sum", "vote", "refused" -> id
    binary_log_args: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    # Peer messages (all nodes) and output share chunks. Hello messages are left out, and the setup id
    # that begins a pool fill: they carry OT setup ids, which are public (the first half of an earlier
    # session's id).
    secret_blobs: list[bytes] = field(default_factory=list)
    audit: dict[str, list[AuditEntry]] = field(default_factory=dict)
    metrics: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = field(default_factory=dict)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics on loopback; parse every sample into {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def _run(tmp: Path) -> Scenario:
    handler = ListHandler()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        policies = {"alice": LOOSE_POLICY, "bob": LOOSE_POLICY, "carlos": CAROL_POLICY}
        async with running_cluster(tmp, 3, metrics=True, policies=policies) as lc:
            sc = Scenario(tmp, {n: lc.cluster.node(n).data_dir for n in TRIO})  # type: ignore[misc]
            for name in TRIO:
                lc.put(name, "salary", [SALARY[name]], scalar=True)
                lc.put(name, "ballot", BALLOT[name], ballots=True)

            def observe(session: str, node: str, chunk: bytes) -> None:
                sc.secret_blobs.append(chunk)

            async with Coordinator(lc.cluster, observer=observe) as coordinator:
                result = await coordinator.sum("salary")
                sc.total, sc.sessions["sum"] = int(result.value), result.session_id  # type: ignore[arg-type]
                vote = await coordinator.vote("ballot")
                sc.vote, sc.sessions["vote"] = vote.passed, vote.session_id
                with pytest.raises(SessionFailed) as refused:
                    await coordinator.sum("ballot")
                sc.refusal = str(refused.value)
            # Two requests a careless or hostile coordinator might send: a replay of the sum's id,
            # and an id that tries to rewrite the owner's terminal. Both refused, both audited.
            for session_id in (sc.sessions["sum"], FORGED_ID):
                error = await prepare_raw(lc, "alice", session_id, "salary")
                assert error is not None and error.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                                              grpc.StatusCode.INVALID_ARGUMENT), error
            for name, server in lc.servers.items():
                sc.audit[name] = server.store.audit_log()
                sc.metrics[name] = await asyncio.to_thread(scrape, server.metrics_port)
            for received in lc.recorder.received.values():
                sc.secret_blobs += [payload[SETUP_ID_BYTES:] if step == STEP_FILL else payload
                                    for _, _, step, payload in received if step != STEP_HELLO]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    sc.log_lines = handler.lines
    sc.binary_log_args = handler.binary_args
    refused = [e for e in sc.audit["carlos"] if e.outcome == "refused"]  # by carlos's policy
    sc.sessions["refused"] = refused[0].session_id if refused else ""
    return sc


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return asyncio.run(_run(tmp_path_factory.mktemp("operating")))


def by_session(run: Scenario, node: str, key: str) -> AuditEntry:
    # The session's own entry (a refused replay of its id is an entry of its own).
    [entry] = [e for e in run.audit[node] if e.session_id == run.sessions[key] and
               (e.outcome != "refused" or key == "refused")]
    return entry


def sent(entry: AuditEntry) -> dict[tuple[str, str], tuple[int, int]]:
    return {(t.kind, t.to): (t.messages, t.bytes) for t in entry.sent}


# ---- the run itself -------------------------------------------------------------------------------


def test_the_run_computed_what_it_should(run: Scenario) -> None:
    assert run.total == sum(SALARY.values())
    assert run.vote is True
    assert "carlos" in run.refusal and "policy" in run.refusal
    assert all(run.sessions.values()), run.sessions


# ---- audit log ------------------------------------------------------------------------------------


def test_audit_of_a_sum_names_who_what_and_every_byte_that_left(run: Scenario) -> None:
    for index, node in enumerate(TRIO):
        e = by_session(run, node, "sum")
        assert (e.coordinator, e.protocol, e.inputs, e.participants, e.outcome) == \
            (COORDINATOR, "sum", ("salary",), TRIO, "done")
        assert e.started_at <= e.ended_at and e.reason == ""
        # Agreement: one 32-byte digest of the session description to each other party.
        # Bonawitz masks: party i sends one 24-byte seed message (16-byte seed, 8-byte length
        # cross-check) to each later party; the coordinator gets one 8-byte output share.
        expected = {("agree/digest", other): (1, 32) for other in TRIO if other != node}
        expected |= {("sum/seed", later): (1, 24) for later in TRIO[index + 1:]}
        expected[("output share", COORDINATOR)] = (1, 8)
        assert sent(e) == expected, f"{node}: {e.sent}"


def test_audit_of_a_vote_lists_each_kind_of_message_with_sizes(run: Scenario) -> None:
    for node in TRIO:
        e = by_session(run, node, "vote")
        assert (e.protocol, e.inputs, e.participants, e.outcome) == ("vote", ("ballot",), TRIO, "done")
        s = sent(e)
        assert s.pop(("output share", COORDINATOR)) == (1, 8)     # one XOR share of the answer bit
        kinds = {kind for kind, _ in s}
        assert {"mpc/hello", "ot/base/a", "ot/base/b", "triples/u", "triples/t", "cmp/csa", "cmp/fan"} <= kinds
        assert "cmp/gen" not in kinds, s   # three nodes' vote on 25 bits: g folded into the first fan-in level
        # The sum before it left a pair key with every pair: the vote is keyed (mpc/protocols/pairing.py),
        # so no seed goes between the nodes; its digest still goes to each other party, with its hello.
        assert "sum/seed" not in kinds, s
        assert all(s[("agree/digest", other)] == (1, 32) for other in set(TRIO) - {node}), s
        peers = {to for _, to in s}
        assert peers == set(TRIO) - {node}
        assert all(messages >= 1 and size >= 0 for messages, size in s.values())
        assert sum(size for _, size in s.values()) > 10_000     # base OT and triples: kilobytes


def test_a_refused_session_is_logged_with_its_reason(run: Scenario) -> None:
    e = by_session(run, "carlos", "refused")
    assert (e.outcome, e.protocol, e.inputs, e.coordinator) == ("refused", "sum", ("ballot",), COORDINATOR)
    assert "policy" in e.reason and "ballot" in e.reason
    assert e.sent == ()
    for node in ("alice", "bob"):          # they had prepared; the coordinator then aborted
        other = by_session(run, node, "refused")
        assert other.outcome == "aborted" and "carlos" in other.reason and other.sent == ()


def test_a_replayed_or_malformed_request_is_an_entry_of_its_own(run: Scenario) -> None:
    entries = run.audit["alice"]
    replay = [e for e in entries if e.session_id == run.sessions["sum"] and e.outcome == "refused"]
    assert len(replay) == 1 and "already exists" in replay[0].reason
    original = [e for e in entries if e.session_id == run.sessions["sum"] and e.outcome != "refused"]
    assert len(original) == 1 and original[0].outcome == "done"     # the replay did not merge into it
    [forged] = [e for e in entries if e.session_id == FORGED_ID]
    assert forged.outcome == "refused" and "32 lowercase hex" in forged.reason


def test_the_audit_log_holds_no_value(run: Scenario) -> None:
    for node, data_dir in run.data_dirs.items():
        with sqlite3.connect(data_dir / "node.sqlite3") as db:
            rows = db.execute("SELECT * FROM audit").fetchall()
        assert len(rows) >= 5, rows
        text = json.dumps(rows)
        for value in SALARY.values():
            assert str(value) not in text, f"{node}'s audit log shows an input"
        assert str(run.total) not in text


def test_the_audit_log_is_append_only_and_survives_a_restart(run: Scenario) -> None:
    db_path = run.data_dirs["alice"] / "node.sqlite3"
    with sqlite3.connect(db_path) as db:
        for sql in ("UPDATE audit SET reason = 'x'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
    with Store(db_path) as store:
        assert [e.session_id for e in store.audit_log()] == [e.session_id for e in run.audit["alice"]]


def test_a_session_cut_by_a_restart_is_logged_interrupted(tmp_path: Path) -> None:
    async def scenario() -> list[AuditEntry]:
        async with running_cluster(tmp_path, 3) as lc:
            lc.put("alice", "salary", [1], scalar=True)
            core = lc.servers["alice"].core
            core.prepare(Identity("coordinator", "coordinator"), "ab" * 16, catalogue_entry("sum"), NoParams(),
                         "salary", list(TRIO), 30.0)
            await lc.stop("alice")                                # as if the machine went down
            restarted = NodeServer(lc.cluster, "alice")           # the daemon starts again
            try:
                return restarted.store.audit_log()
            finally:
                await restarted.stop(0)
    [entry] = asyncio.run(scenario())
    assert (entry.session_id, entry.outcome, entry.inputs) == ("ab" * 16, "interrupted", ("salary",))
    assert "restarted" in entry.reason


def test_a_session_that_times_out_is_logged_failed_with_what_was_sent(tmp_path: Path) -> None:
    """bob and carlos compute; alice never does. Each sends the others its digest of the session,
    bob sends carlos its seed, then both time out waiting for alice's; alice's prepared session
    expires."""
    session_id = "cd" * 16
    versions: dict[str, int] = {}

    async def compute(lc: LocalCluster, node: str) -> grpc.aio.AioRpcError | None:
        channel, stub = control_stub(lc, node)
        try:
            async for _ in stub.Compute(mpc_pb2.ComputeRequest(session_id=session_id, length=1,
                                                               input_versions=versions), timeout=10):
                pass
            return None
        except grpc.aio.AioRpcError as exc:
            return exc
        finally:
            await channel.close()

    async def scenario() -> tuple[dict[str, list[AuditEntry]], list[grpc.aio.AioRpcError | None]]:
        async with running_cluster(tmp_path, 3) as lc:
            for name in TRIO:
                versions[name] = lc.put(name, "salary", [SALARY[name]], scalar=True)
                assert await prepare_raw(lc, name, session_id, "salary", timeout_ms=1500) is None
            errors = await asyncio.gather(compute(lc, "bob"), compute(lc, "carlos"))
            await asyncio.sleep(0.5)    # alice's own deadline
            return {n: s.store.audit_log() for n, s in lc.servers.items()}, list(errors)

    audits, errors = asyncio.run(scenario())
    assert all(e is not None for e in errors), errors
    for node in TRIO:
        [entry] = audits[node]
        assert entry.outcome == "failed" and entry.session_id == session_id, entry
        assert "timed out" in entry.reason, entry.reason
    assert "alice" in audits["bob"][0].reason and "alice" in audits["carlos"][0].reason
    # Only what depends on no input left them (digests of the public description, a fresh
    # seed), and no output share.
    assert sent(audits["bob"][0]) == {("agree/digest", "alice"): (1, 32), ("agree/digest", "carlos"): (1, 32),
                                      ("sum/seed", "carlos"): (1, 24)}
    assert sent(audits["carlos"][0]) == {("agree/digest", "alice"): (1, 32), ("agree/digest", "bob"): (1, 32)}
    assert audits["alice"][0].sent == ()


def mpc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpc", *map(str, args)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_mpc_audit_prints_a_table_json_and_filters(run: Scenario) -> None:
    where = ("--data-dir", run.data_dirs["bob"])
    table = mpc("audit", *where)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    # 3 sessions, 2 release lines (the sum and the vote), 1 reason line (the aborted sum)
    assert lines[0].startswith("started (UTC)") and len(lines) == 1 + 3 + 2 + 1
    # bob's sent: a 32-byte digest to alice and to carlos, a 24-byte seed to carlos.
    assert re.search(r"sum\s+salary\s+done\s+coordinator/coordinator\s+alice,bob,carlos\s+"
                     r"output share of 8 B to the coordinator; 88 B in 3 messages to alice, carlos", table.stdout)
    assert re.search(r"^\s+released: sum over alice,bob,carlos: .*'salary' v1$", table.stdout, re.M), table.stdout
    as_json = json.loads(mpc("audit", *where, "--json").stdout)
    assert [e["session"] for e in as_json] == [e.session_id for e in run.audit["bob"]]
    assert as_json[0]["sent"] == [{"kind": "agree/digest", "to": "alice", "messages": 1, "bytes": 32},
                                  {"kind": "agree/digest", "to": "carlos", "messages": 1, "bytes": 32},
                                  {"kind": "sum/seed", "to": "carlos", "messages": 1, "bytes": 24},
                                  {"kind": "output share", "to": COORDINATOR, "messages": 1, "bytes": 8}]
    assert "sum over alice,bob,carlos" in as_json[0]["release"] and "'salary' v1" in as_json[0]["release"]
    assert as_json[2]["release"] == ""     # the aborted sum never got as far as a release
    salary_only = json.loads(mpc("audit", *where, "--json", "--input", "salary").stdout)
    assert [e["session"] for e in salary_only] == [run.sessions["sum"]]
    today = run.audit["bob"][0].started_at[:10]
    assert len(json.loads(mpc("audit", *where, "--json", "--since", today).stdout)) == 3
    assert json.loads(mpc("audit", *where, "--json", "--since", "2999-01-01").stdout) == []
    assert len(json.loads(mpc("audit", *where, "--json", "--until", today).stdout)) == 3
    assert [e["session"] for e in json.loads(mpc("audit", *where, "--json", "--limit", "1").stdout)] == \
        [run.audit["bob"][-1].session_id]
    detail = mpc("audit", *where, "--input", "salary", "--detail").stdout.splitlines()
    assert re.fullmatch(r"\s+released: sum over alice,bob,carlos: .*", detail[2]), detail
    assert re.fullmatch(r"\s+sent agree/digest\s+to alice\s+1 message\s+32 B", detail[3]), detail
    assert re.fullmatch(r"\s+sent agree/digest\s+to carlos\s+1 message\s+32 B", detail[4]), detail
    assert re.fullmatch(r"\s+sent sum/seed\s+to carlos\s+1 message\s+24 B", detail[5]), detail
    assert re.fullmatch(r"\s+sent output share\s+to coordinator/coordinator\s+1 message\s+8 B", detail[6]), detail
    bad = mpc("audit", *where, "--since", "last week")
    assert bad.returncode == 1 and "--since" in bad.stderr and "last week" in bad.stderr
    missing = mpc("audit", "--data-dir", run.workdir / "no-such-node")
    assert missing.returncode == 1 and "no node store" in missing.stderr
    assert not (run.workdir / "no-such-node").exists()


def test_mpc_audit_escapes_what_a_caller_put_in_a_request(run: Scenario) -> None:
    table = mpc("audit", "--data-dir", run.data_dirs["alice"])
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\r" not in table.stdout
    assert "\\x1b[2K\\rFAKE" in table.stdout             # shown escaped, on its own row
    assert not any(line.startswith("FAKE") for line in table.stdout.splitlines())


# ---- metrics --------------------------------------------------------------------------------------


def value(run: Scenario, node: str, name: str, **labels: str) -> float:
    return run.metrics[node].get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_sessions_by_protocol_and_outcome(run: Scenario) -> None:
    for node in TRIO:
        assert value(run, node, "mpc_sessions_total", protocol="sum", outcome="done") == 1
        assert value(run, node, "mpc_sessions_total", protocol="vote", outcome="done") == 1
        assert value(run, node, "mpc_active_sessions") == 0
        assert value(run, node, "mpc_output_share_bytes_total") == 16
    assert value(run, "carlos", "mpc_sessions_total", protocol="sum", outcome="refused") == 1
    for node in ("alice", "bob"):
        assert value(run, node, "mpc_sessions_total", protocol="sum", outcome="aborted") == 1
    # alice also refused the replayed and the malformed request.
    assert value(run, "alice", "mpc_sessions_total", protocol="sum", outcome="refused") == 2
    assert value(run, "bob", "mpc_sessions_total", protocol="sum", outcome="refused") == 0


def test_metrics_bytes_per_peer_match_the_audit_log(run: Scenario) -> None:
    received: dict[tuple[str, str], int] = defaultdict(int)     # (receiver, sender) -> bytes
    for node in TRIO:
        per_peer: dict[str, int] = defaultdict(int)
        for entry in run.audit[node]:
            for t in entry.sent:
                if t.to != COORDINATOR:
                    per_peer[t.to] += t.bytes
                    received[(t.to, node)] += t.bytes
        for peer in set(TRIO) - {node}:
            assert value(run, node, "mpc_peer_sent_bytes_total", peer=peer) == per_peer[peer] > 0
    for (node, peer), size in received.items():
        assert value(run, node, "mpc_peer_received_bytes_total", peer=peer) == size


def test_metrics_show_round_latency_and_triples(run: Scenario) -> None:
    for node in TRIO:
        rounds = sum(value(run, node, "mpc_peer_round_seconds_count", peer=p) for p in set(TRIO) - {node})
        messages = sum(value(run, node, "mpc_peer_sent_messages_total", peer=p) for p in set(TRIO) - {node})
        assert rounds == messages > 10
        generated = value(run, node, "mpc_triples_generated_total")
        consumed = value(run, node, "mpc_triples_consumed_total")
        assert 0 < consumed <= generated, (generated, consumed)
        assert generated % 64 == 0


# ---- logs -----------------------------------------------------------------------------------------


def secret_numbers(run: Scenario) -> set[str]:
    """Decimal forms of every input and of every 64-bit word of every share and peer message."""
    numbers = {str(v) for v in SALARY.values()}
    for blob in run.secret_blobs:
        for w in np.frombuffer(blob[:len(blob) // 8 * 8], dtype="<u8"):
            if int(w) >= 1 << 20:   # small words (lengths, single bits) are too common to mean anything
                numbers |= {str(int(w)), str(int(w) - (1 << 64))}
    return numbers


def shows_secret_bytes(line: str, blobs: list[bytes]) -> list[str]:
    """Hex runs in `line` any 8 bytes of which occur in a share or peer message."""
    hits = []
    for run_ in re.findall(r"[0-9a-fA-F]{16,}", line):
        for shift in (0, 1):            # a run may start mid-byte: try both alignments
            raw = bytes.fromhex(run_[shift:shift + (len(run_) - shift) // 2 * 2])
            if any(raw[i:i + 8] in blob for i in range(len(raw) - 7) for blob in blobs):
                hits.append(run_)
                break
    return hits


def test_logs_at_debug_are_json_with_session_ids_and_carry_no_secret(run: Scenario) -> None:
    assert len(run.log_lines) > 50
    assert run.binary_log_args == [], "bytes or arrays were handed to a logger"
    records = [json.loads(line) for line in run.log_lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    # The run's own sessions appear, each line about one of them carries its id as a field.
    for key in ("sum", "vote"):
        about = [r for r in records if run.sessions[key] in r["message"]]
        assert len(about) > 3 and all(r.get("session") == run.sessions[key] for r in about), key
    assert any(r["level"] == "debug" and "sum/seed to" in r["message"] for r in records)
    assert any("refused" in r["message"] and r.get("session") == run.sessions["refused"] for r in records)

    numbers = secret_numbers(run)
    assert len(numbers) > 200 and len(run.secret_blobs) > 50
    for line in run.log_lines:
        found = set(re.findall(r"-?\d+", line)) & numbers
        assert not found, f"a log line shows an input or a share/message word {found}: {line}"
        hexes = shows_secret_bytes(line, run.secret_blobs)
        assert not hexes, f"a log line shows bytes of a share or peer message {hexes}: {line}"
