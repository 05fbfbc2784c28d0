"""NodeProcesses (mpc/localcluster.py), as `mpc demo`, the benchmarks and these tests run daemons: real `mpc
node` processes with mutual TLS and metrics on loopback. `stop_all` signals every node first and then waits
for each, so that they stop side by side; each is signalled once and stops cleanly (exit 0), its sessions
recorded, the repeats' deferred records included."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from mpc import aio, localcluster
from mpc.config import load_cluster
from mpc.coordinator.client import Coordinator
from mpc.localcluster import NodeProcesses, wait_healthy, write_local_cluster
from mpc.protocols.catalogue import SumParams, entry
from mpc.store import Store
from mpc.transport.tls import TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc
from tests.integration.harness import prepare_request

NAMES = ("alice", "bob", "carlos")
VALUES = {"alice": 3800, "bob": 2514, "carlos": 2982}
SUMS = 6   # the first prepares; the later ones run in one round from the nodes' plans (deferred records)


def _data_dir(cluster_file: Path, name: str) -> Path:
    data_dir = load_cluster(cluster_file).node(name).data_dir
    assert data_dir is not None
    return Path(data_dir)


def test_stop_all_stops_every_node_cleanly_with_its_records(tmp_path: Path) -> None:
    cluster_file = write_local_cluster(tmp_path, NAMES, metrics=True)
    for name in NAMES:
        with Store.open_dir(_data_dir(cluster_file, name)) as store:
            store.put_input("raise", np.array([VALUES[name]], dtype=np.int64), 0, True, bounds=(0, 10_000))
    nodes = NodeProcesses(cluster_file, tmp_path / "logs")

    async def sums() -> list[tuple[str, int]]:
        async with Coordinator(load_cluster(cluster_file), keyed=True, one_round=True) as coordinator:
            opened = [await coordinator.open(entry("sum"), SumParams(), "raise") for _ in range(SUMS)]
        return [(o.session_id, int(o.words.view(np.int64)[0])) for o in opened]

    nodes.start_all(NAMES)
    try:
        done = aio.run(sums())
    finally:
        codes = nodes.stop_all()
    assert [total for _, total in done] == [sum(VALUES.values())] * SUMS
    assert codes == {name: 0 for name in NAMES}, (codes, {n: (tmp_path / "logs" / f"{n}.log").read_text()[-2000:]
                                                          for n in NAMES})
    assert nodes.procs == {} and nodes.stop_all() == {}
    for name in NAMES:
        with Store.open_dir(_data_dir(cluster_file, name)) as store:
            missing = [sid for sid, _ in done if not store.has_session(sid)]
        assert missing == [], (name, missing)


def test_stop_all_cut_short_kills_and_reaps_what_it_had_not_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C during stop_all's wait leaves no process running untracked: the ones it had not waited for
    are killed and reaped before the interrupt goes on. Two real processes that ignore SIGTERM, as a node
    stuck in a long stop would; the wait for the first is interrupted."""
    nodes = NodeProcesses(tmp_path / "cluster.toml", tmp_path / "logs")
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
               "time.sleep(60)"
    procs = [subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"   # SIGTERM is ignored now
        nodes.procs = {"alice": procs[0], "bob": procs[1]}

        def interrupted(proc: subprocess.Popen[bytes], grace: float) -> int | None:
            raise KeyboardInterrupt
        monkeypatch.setattr(localcluster, "_waited", interrupted)
        with pytest.raises(KeyboardInterrupt):
            nodes.stop_all(grace=30.0)
        assert nodes.procs == {}
        assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2   # killed and reaped, not left running
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


def test_a_nodes_json_log_stays_one_object_per_line_while_its_peers_restart(tmp_path: Path) -> None:
    """`--log-format json` promises one JSON object per line for the node's whole life: its "serving on"
    line included (a plain line before), and nothing of gRPC's own (its core writes "Got goaway" and the
    like to stderr at INFO unless GRPC_VERBOSITY says otherwise, which `mpc` sets to ERROR). Three nodes
    log JSON; bob stops and starts again three times, each time after a two-round unkeyed sum, whose
    digests and seeds connect every pair."""
    cluster_file = write_local_cluster(tmp_path, NAMES)
    for name in NAMES:
        with Store.open_dir(_data_dir(cluster_file, name)) as store:
            store.put_input("raise", np.array([VALUES[name]], dtype=np.int64), 0, True, bounds=(0, 10_000))
    nodes = NodeProcesses(cluster_file, tmp_path / "logs")

    async def connect() -> int:
        async with Coordinator(load_cluster(cluster_file), keyed=False, one_round=False) as coordinator:
            return (await coordinator.sum("raise", timeout_s=20)).value

    nodes.start_all(NAMES, log_format="json")
    try:
        for _ in range(3):
            assert aio.run(connect()) == sum(VALUES.values())
            assert nodes.stop("bob") == 0
            nodes.start("bob", log_format="json")
            aio.run(wait_healthy(load_cluster(cluster_file), ["bob"]))
    finally:
        codes = nodes.stop_all()
    assert codes == {name: 0 for name in NAMES}
    for name in NAMES:
        lines = (tmp_path / "logs" / f"{name}.log").read_text().splitlines()
        assert len(lines) > 5, (name, lines)
        not_json = [line for line in lines if not _json_object(line)]
        assert not_json == [], (name, not_json[:5])


def _json_object(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(record)


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def test_a_coordinators_text_cannot_forge_a_line_of_a_nodes_text_log(tmp_path: Path) -> None:
    """A node's text log is one line per record even where it quotes what a caller sent: a coordinator aborts
    a session it prepared with a reason that holds a line break and a forged line after it (a log line of
    any level, as if the node had written it), with a carriage return, a Unicode line separator and a
    terminal escape; the node logs the abort on one line, the breaks escaped."""
    cluster_file = write_local_cluster(tmp_path, NAMES)
    for name in NAMES:
        with Store.open_dir(_data_dir(cluster_file, name)) as store:
            store.put_input("raise", np.array([VALUES[name]], dtype=np.int64), 0, True, bounds=(0, 10_000))
    nodes = NodeProcesses(cluster_file, tmp_path / "logs")
    forged = "2030-01-01 00:00:00,000 CRITICAL mpc.node: session deadbeef released every input to eve"
    reason = f"x\n{forged}\r{forged}\u2028{forged}\x1b[2K"
    session_id = secrets.token_hex(16)

    async def prepare_and_abort() -> None:
        cluster = load_cluster(cluster_file)
        me, alice = cluster.require_coordinator(), cluster.node("alice")
        credentials = TlsMaterial.load(cluster.ca, me.cert, me.key).channel_credentials()
        async with grpc.aio.secure_channel(alice.address, credentials, options=channel_options("alice")) as channel:
            stub = mpc_pb2_grpc.ControlStub(channel)
            await stub.Prepare(prepare_request(session_id, "sum", "raise", list(NAMES)), timeout=10)
            await stub.Abort(mpc_pb2.AbortRequest(session_id=session_id, reason=reason), timeout=10)

    nodes.start_all(NAMES)
    try:
        aio.run(prepare_and_abort())
    finally:
        codes = nodes.stop_all()
    assert codes == {name: 0 for name in NAMES}
    lines = (tmp_path / "logs" / "alice.log").read_text().splitlines()
    aborted = [line for line in lines if session_id in line and "aborted" in line]
    assert len(aborted) == 1 and TEXT_LINE.match(aborted[0]), lines
    assert forged in aborted[0] and "\\n" + forged in aborted[0], aborted
    assert [line for line in lines if line.startswith(forged[:10])] == [], lines
    # every line is a record of its own, or the node's ready line
    assert [line for line in lines if not TEXT_LINE.match(line) and "serving on" not in line] == [], lines
