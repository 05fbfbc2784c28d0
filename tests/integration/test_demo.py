"""`mpc demo` end to end: the raises example on four local daemons, and nothing left running after it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpc.config import HALF, Rules, load_cluster
from mpc.store import Store

pytestmark = pytest.mark.slow

DEMO_TIMEOUT = 120.0
ENV = {k: v for k, v in os.environ.items() if k != "MPC_CLUSTER"} | {"PYTHONUNBUFFERED": "1"}


def _children(pid: int) -> list[int]:
    """Direct child PIDs of `pid` (Linux /proc), for cleaning up after a demo that overran its deadline."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def run_demo(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m mpc demo ARGS` with a deadline; on overrun stop it and its children by PID."""
    proc = subprocess.Popen([sys.executable, "-m", "mpc", "demo", *map(str, args)], env=ENV, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        for kid in _children(proc.pid):
            try:
                os.kill(kid, 9)
            except ProcessLookupError:
                pass
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"mpc demo did not finish in {DEMO_TIMEOUT:.0f} s\nstdout: {out}\nstderr: {err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def daemon_ports(stdout: str) -> dict[str, int]:
    """The node ports the demo printed ("four node daemons up: alice 127.0.0.1:PORT, ...")."""
    ports = {m[0]: int(m[1]) for m in re.findall(r"\b([a-z]+) 127\.0\.0\.1:(\d+)", stdout)}
    assert set(ports) == {"alice", "bob", "carlos", "david"}, stdout
    return ports


def assert_nothing_listens(ports: dict[str, int]) -> None:
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            with pytest.raises(ConnectionRefusedError):
                s.connect(("127.0.0.1", port))
                pytest.fail(f"node {name}'s port {port} still accepts connections after the demo")


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def test_demo_prints_the_raises_example_and_stops_its_daemons() -> None:
    start = time.monotonic()
    proc = run_demo()
    elapsed = time.monotonic() - start
    report = f"exit {proc.returncode} after {elapsed:.1f} s\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode == 0, report
    assert "Traceback" not in proc.stderr, report
    assert "12686" in proc.stdout and "3171.5" in proc.stdout, report
    assert re.search(r"secure sum of the raises: 12686\b", proc.stdout), report
    # The referendum (T = 6 of N = 9): only YES/NO lines, never a tally or a ballot count.
    assert re.search(r"at least half voted for\?\s+YES", proc.stdout), report
    assert re.search(r"at least 7 voted for\?\s+NO", proc.stdout), report
    assert re.search(r"unanimous referendum:\s+YES", proc.stdout), report
    vote_lines = [line for line in proc.stdout.splitlines() if "voted for" in line or "unanimous" in line]
    assert not any(re.search(r"\b(6|9|12)\b", line) for line in vote_lines), report
    # The differentially private average, with its interval, next to the exact one.
    private = re.search(r"average raise, differentially private \(epsilon 1, .*\): (-?\d+) \+- (\d+) \(95%\), "
                        r"next to the exact 3171\.5", proc.stdout)
    assert private, report
    # Nobody's raise is printed, only the sum and the averages (the noisy one is a random draw: it
    # may happen to equal a raise, so its own number is left out of this check).
    shown = proc.stdout.replace(private.group(0), "")
    for raise_ in ("3800", "2514", "2982", "3390"):
        assert not re.search(rf"(?<![\w.]){raise_}(?!\w)", shown), report
    assert_nothing_listens(daemon_ports(proc.stdout))
    workdir = re.search(r"cluster: (\S+)/cluster\.toml", proc.stdout)
    assert workdir, report
    assert processes_mentioning(workdir[1]) == [], "demo node processes still alive"
    assert not Path(workdir[1]).exists(), "the demo's temporary directory was not removed"
    assert "stopped 4 node daemons (exit codes [0])" in proc.stdout, "every node should exit 0 on SIGTERM"



def test_demo_loosens_only_the_referendums_thresholds(tmp_path: Path) -> None:
    """The demo's cluster file keeps the default rules across sessions, except that every owner lets
    the referendum answer exactly the demo's two questions and the sealed bids run as a first- and a
    second-price auction (two releases); its inputs declare bounds, ballots and bids."""
    proc = run_demo("--dir", tmp_path / "demo")
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    cluster = load_cluster(tmp_path / "demo" / "cluster.toml")
    assert list(cluster.nodes) == ["alice", "bob", "carlos", "david"]
    for name, node in cluster.nodes.items():
        policy = node.policy
        assert policy.defaults == Rules(), name                    # one query per version, the whole cluster
        assert dict(policy.per_input) == {"referendum": Rules(2, "cluster", frozenset({HALF, 7})),
                                          "bids": Rules(2, "cluster", None)}, name
        assert node.data_dir is not None
        with Store.open_dir(node.data_dir) as store:
            kinds = {i.name: (i.kind, i.version) for i in store.list_inputs()}
        assert kinds == {"raise": ("number", 1), "referendum": ("ballots", 1), "unanimous": ("ballots", 1),
                         "bids": ("bids", 1)}, kinds   # bids for the auction alone
