"""Three organisations, three hosts, one coordinator host: names, certificates and addresses as
in a real deployment (issue 4), with the namespace lab of netns.py (needs root; skipped, saying
why, when `ip netns add` is not permitted).

    mpc-mh-<pid>-br      a namespace holding a Linux bridge, br0
    mpc-mh-<pid>-coord   10.98.0.20  coordinator.org-a.test   the `mpc` CLI (sum, average, vote, status)
    mpc-mh-<pid>-alice   10.98.0.21  alice.org-a.test         `mpc node --name alice`
    mpc-mh-<pid>-bob     10.98.0.22  bob.org-b.test           `mpc node --name bob`
    mpc-mh-<pid>-carlos  10.98.0.23  carlos.org-c.test        `mpc node --name carlos`

Every namespace gets its own /etc/hosts (/etc/netns/<ns>/hosts, bind-mounted by `ip netns exec`)
mapping those names to the addresses, and an /etc/resolv.conf that points DNS at the
namespace's own loopback, so a name that is not in the hosts file fails inside the namespace.
Both ends of every connection are inside the test's namespaces; the test process itself only
writes files and starts processes, and never sends a packet.

Everything is done with the `mpc` command, as the parties would: the certificates are issued
by `mpc certs init --node alice=alice.org-a.test ...` (here by the coordinator's operator, who
holds the CA key), the cluster file names every node by host name (never by IP), each node's
inputs are stored by `mpc input put` run in that node's namespace, and the nodes listen on
their own host name (the default `listen` is the `address`, resolved in their namespace).
The one exception: a certificate as an older mpc issued it (without the identity name
`bob.node.mpc.invalid`), which today's `mpc certs init` cannot make, is written by the test
process with mpc.pki.issue(identity_dns=False).

What it shows:
- `mpc status`, `mpc sum`, `mpc average` and `mpc vote` (both rules, which each owner's policy
  allows on the ballots; a third is refused) give the right results across the hosts;
- clients check whom they reached (the node's identity name in its certificate), not the host
  name: the coordinator's cluster file naming bob by an alias that is not in his certificate
  still reaches bob;
- a party that is not the node dialled is refused, and nothing is revealed, in three ways:
  bob running with a certificate from an older mpc (coordinator -> bob), the coordinator's
  cluster file giving bob carlos's host name (coordinator -> bob, reaching carlos), and
  alice's resolver sending bob's name to carlos's host (alice -> bob, peer to peer; the
  coordinator still reaches every node);
- and the error says so clearly: it names the node, where it was dialled, that the
  certificate there is not that node's (it lacks its identity name), and what to do; it does
  not call the node unreachable (mpc/transport/peers.py recognises gRPC's name check failure).

The nodes are started once for the module and restarted only when a test needs one of them in
another configuration (`Lab.ensure`), so each test also runs on its own (`-k`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mpc.pki import Identity, identity_dns_name, issue

from .netns import ENV, NetnsLab, hosts_file, netns_lab, show

pytestmark = pytest.mark.slow

SUBNET = "10.98.0"              # test_partition.py uses 10.99.0
OCTETS = {"coord": 20, "alice": 21, "bob": 22, "carlos": 23}
NODES = ("alice", "bob", "carlos")
HOST = {"coord": "coordinator.org-a.test", "alice": "alice.org-a.test", "bob": "bob.org-b.test",
        "carlos": "carlos.org-c.test"}
BOB_ALIAS = "mpc.org-b.test"             # also bob's host, but not a name in his certificate
PORT = 7443
SESSION_TIMEOUT_S = 6.0
CONNECT_TIMEOUT_S = 2.0
VOTE_TIMEOUT_S = 30.0
RAISES = {"alice": 3800, "bob": 2514, "carlos": 3390}               # scalar inputs "raise"
BALLOTS = {"alice": [1, 0, 1], "bob": [1, 0], "carlos": [0, 0, 1, 0]}  # 4 yes out of 9
# Each owner lets the ballots answer exactly the two questions asked of them (at least half? at
# least 4?); by default an input version takes part in one distinct query (as `mpc demo` does).
BALLOTS_POLICY = """[nodes.{name}.policy.per_input.ballots]
max_releases = 2
thresholds = ["half", 4]"""

@dataclass
class Lab:
    """The network, the certificates and cluster files, and the running nodes."""

    net: NetnsLab
    workdir: Path
    # node -> the variant it runs now: "ok", "older-cert" (bob) or "misdirected" (alice)
    running: dict[str, str] = field(default_factory=dict)
    memo: dict[str, object] = field(default_factory=dict)

    # ---- set-up --------------------------------------------------------------------------

    def build(self) -> None:
        for role, octet in OCTETS.items():
            self.net.add_host(role, octet)
        for role in OCTETS:
            self.write_hosts(role)
            # No DNS server: a name missing from /etc/hosts fails inside the namespace.
            self.net.write_etc(role, "resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")

    def names(self) -> dict[str, str]:
        """The host names every namespace resolves, and their addresses."""
        entries = {HOST[role]: self.net.addresses[role] for role in OCTETS}
        return entries | {BOB_ALIAS: self.net.addresses["bob"]}

    def write_hosts(self, role: str, override: dict[str, str] | None = None) -> None:
        self.net.write_etc(role, "hosts", hosts_file(self.names() | (override or {})))

    def mpc_in(self, role: str, *args: str | Path, timeout: float = 30.0,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        """`mpc ARGS` run inside `role`'s namespace."""
        return self.net.in_ns(role, sys.executable, "-m", "mpc", *args, timeout=timeout, check=check)

    def issue_certificates(self) -> None:
        """As the CA operator would: `mpc certs init` with each node's host name."""
        nodes = [arg for n in NODES for arg in ("--node", f"{n}={HOST[n]}")]
        self.mpc_in("coord", "certs", "init", "--dir", self.workdir / "certs", *nodes,
                    "--coordinator", "coordinator", check=True)
        # bob's certificate as an older mpc issued it: same CA, same host name, but without his
        # identity name (today's `mpc certs init` always adds it, so it is written here).
        certs = self.workdir / "certs"
        issue(self.workdir / "certs-older", certs, Identity("node", "bob"), hosts=[HOST["bob"]], identity_dns=False)

    def write_cluster(self, file: str, *, address: dict[str, str] | None = None,
                      certs: dict[str, str] | None = None) -> Path:
        """A cluster file naming the nodes by host name; `address`/`certs` override one node's
        host name or certificate directory (that party's own, differing copy)."""
        address, certs = address or {}, certs or {}
        lines = ["[cluster]", 'name = "three-orgs"', 'ca = "certs/ca.pem"',
                 f"session_timeout_s = {SESSION_TIMEOUT_S}", f"connect_timeout_s = {CONNECT_TIMEOUT_S}", "",
                 "[coordinator]", 'name = "coordinator"', 'cert = "certs/coordinator-coordinator.pem"',
                 'key = "certs/coordinator-coordinator.key"']
        for n in NODES:
            d = certs.get(n, "certs")
            lines += ["", f"[nodes.{n}]", f'address = "{address.get(n, HOST[n])}:{PORT}"',
                      f'cert = "{d}/{n}.pem"', f'key = "{d}/{n}.key"', f'data_dir = "data/{n}"',
                      "", BALLOTS_POLICY.format(name=n)]
        path = self.workdir / file
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def store_inputs(self) -> None:
        """`mpc input put` in each node's own namespace (concurrently: it is local, no network)."""
        cluster = self.workdir / "cluster.toml"
        procs = []
        for n in NODES:
            for args in (["raise", str(RAISES[n]), "--bounds", "0,100000"],
                         ["ballots", *map(str, BALLOTS[n]), "--ballots"]):
                argv = ["ip", "netns", "exec", self.net.ns(n), sys.executable, "-m", "mpc", "input", "put",
                        *args, "--cluster", str(cluster), "--node", n]
                procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, text=True, env=ENV))
        failed = []
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate(timeout=5)
            if proc.returncode != 0 or "stored" not in out:
                failed.append(f"{proc.args}: exit {proc.returncode}\n{out}")
        assert not failed, "\n".join(failed)

    # ---- the nodes -------------------------------------------------------------------------

    def ensure(self, **variants: str) -> None:
        """Run every node in the given variant ("ok" unless named), restarting only those that
        run in another one; all (re)starts happen concurrently."""
        wanted = {n: variants.pop(n, "ok") for n in NODES}
        assert not variants, variants
        changed = [n for n in NODES if self.running.get(n) != wanted[n]]
        for n in changed:
            if n in self.net.procs:
                problems = self.net.stop(n)
                assert not problems, problems
            self.running.pop(n, None)
        for n in changed:
            cluster = "cluster.toml"
            if wanted[n] == "older-cert":
                assert n == "bob"
                cluster = "cluster-bob-older-cert.toml"      # bob's own copy: his cert paths differ
            if wanted[n] == "misdirected":
                assert n == "alice"
                self.write_hosts("alice", {HOST["bob"]: self.net.addresses["carlos"]})
            else:
                self.write_hosts(n)
            self.net.spawn(n, n, [sys.executable, "-m", "mpc", "--log-level", "info", "node",
                                  "--cluster", self.workdir / cluster, "--name", n])
        for n in changed:
            self.net.wait_ready(n, f"node {n} serving on", expect=("mpc", "node", n))
            self.running[n] = wanted[n]

    def assert_nodes_alive(self) -> None:
        for n in NODES:
            proc = self.net.procs[n]
            assert proc.poll() is None, f"node {n} exited {proc.returncode}:\n{self.net.log(n).read_text()}"

    # ---- the coordinator -------------------------------------------------------------------

    def coordinator(self, *args: str, cluster: str = "cluster.toml",
                    timeout: float = 30.0) -> tuple[subprocess.CompletedProcess[str], float]:
        """`mpc ARGS --cluster FILE` in the coordinator's namespace. Returns: result and duration."""
        start = time.monotonic()
        proc = self.mpc_in("coord", *args, "--cluster", self.workdir / cluster, timeout=timeout)
        return proc, time.monotonic() - start

    def once(self, key: str, scenario: Callable[[], object]) -> object:
        """Run a scenario once per module; the tests that look at it share its result."""
        if key not in self.memo:
            self.memo[key] = scenario()
        return self.memo[key]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("multihost")
    with netns_lab("mh", SUBNET, workdir) as net:
        lab = Lab(net, workdir)
        lab.build()
        lab.issue_certificates()
        lab.write_cluster("cluster.toml")
        lab.write_cluster("cluster-bob-older-cert.toml", certs={"bob": "certs-older"})
        lab.write_cluster("cluster-bob-alias.toml", address={"bob": BOB_ALIAS})
        lab.write_cluster("cluster-bob-at-carlos.toml", address={"bob": HOST["carlos"]})
        lab.store_inputs()
        yield lab


# ---- helpers -------------------------------------------------------------------------------


def numbers_in(text: str, values: Sequence[int]) -> list[int]:
    """The values that appear in text as numbers of their own (not inside a port or an id)."""
    return [v for v in values if re.search(rf"(?<![\w.:]){v}(?![\w])", text)]


def status_lines(stdout: str) -> dict[str, str]:
    """`mpc status` output: node name -> its line."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.split()}


def assert_refused_without_revealing(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    """A failed computation: exit 1, a one-line error naming `names`, no number on stdout, no
    input or sum on stderr."""
    assert proc.returncode == 1, show(proc)
    assert proc.stderr.startswith("mpc: error:") and "Traceback" not in proc.stderr, show(proc)
    assert "nothing was revealed" in proc.stderr, show(proc)
    for name in names:
        assert re.search(rf"\bnode {name}\b|\b{name} -> node\b", proc.stderr), show(proc)
    assert not re.search(r"\d", proc.stdout), show(proc)
    secrets_ = [*RAISES.values(), sum(RAISES.values())]
    assert not numbers_in(proc.stderr, secrets_), show(proc)


def mismatch_problems(message: str, node: str, host: str) -> list[str]:
    """What a clear "that is not the node dialled" error would say but `message` does not."""
    problems = []
    if not re.search(rf"\bnode {node}\b", message):
        problems.append(f"does not name node {node}")
    if host not in message:
        problems.append(f"does not name the host name {host} it was dialled by")
    if "certificate" not in message.lower():
        problems.append("does not mention the certificate")
    if f"is not node {node}'s" not in message:
        problems.append(f"does not say that the certificate is not node {node}'s")
    if f"lacks {node}'s identity {identity_dns_name(node)}" not in message:
        problems.append(f"does not say that it lacks {node}'s identity name")
    if not re.search(r"another node answers at that address.*older mpc.*reissue the certificate with "
                     r"`mpc certs init`", message):
        problems.append("does not say what may cause it and what to do")
    if re.search(r"unreachable", message, re.I):
        problems.append("calls a node that answered 'unreachable'")
    return problems


# ---- scenarios (each run once, looked at by a refusal test and a message test) -----------------


def older_cert_sum(lab: Lab) -> subprocess.CompletedProcess[str]:
    """Bob runs with a certificate from an older mpc (his host name, no identity name)."""
    def go() -> subprocess.CompletedProcess[str]:
        lab.ensure(bob="older-cert")
        proc, _ = lab.coordinator("sum", "raise")
        return proc
    return lab.once("older-cert", go)  # type: ignore[return-value]


def alias_status(lab: Lab) -> subprocess.CompletedProcess[str]:
    """The coordinator's copy names bob by an alias of his host that is not in his certificate."""
    def go() -> subprocess.CompletedProcess[str]:
        lab.ensure()
        proc, _ = lab.coordinator("status", cluster="cluster-bob-alias.toml")
        return proc
    return lab.once("alias", go)  # type: ignore[return-value]


def other_host_status(lab: Lab) -> subprocess.CompletedProcess[str]:
    """The coordinator's copy gives bob carlos's host name: carlos answers there."""
    def go() -> subprocess.CompletedProcess[str]:
        lab.ensure()
        proc, _ = lab.coordinator("status", cluster="cluster-bob-at-carlos.toml")
        return proc
    return lab.once("other-host", go)  # type: ignore[return-value]


def misdirected_sum(lab: Lab) -> tuple[subprocess.CompletedProcess[str], float]:
    """Alice's resolver sends bob.org-b.test to carlos's host: carlos's certificate does not carry it."""
    def go() -> tuple[subprocess.CompletedProcess[str], float]:
        lab.ensure(alice="misdirected")
        return lab.coordinator("sum", "raise")
    return lab.once("misdirected", go)  # type: ignore[return-value]


# ---- tests ---------------------------------------------------------------------------------


def test_node_with_certificate_from_an_older_mpc_is_refused(lab: Lab) -> None:
    proc = older_cert_sum(lab)
    assert_refused_without_revealing(proc, "bob")
    assert HOST["bob"] in proc.stderr, show(proc)
    assert not re.search(r"\bnode (alice|carlos)\b", proc.stderr), show(proc)
    lab.assert_nodes_alive()


def test_all_computations_across_three_hosts(lab: Lab) -> None:
    lab.ensure()
    status, _ = lab.coordinator("status")
    assert status.returncode == 0, show(status)
    lines = status_lines(status.stdout)
    for n in NODES:
        # Ballots are listed without their count; the raise with its declared bounds.
        assert re.match(rf"{n}\s+{re.escape(HOST[n])}:{PORT}\s+up\b.*\bsessions=0\b.*inputs: .*"
                        rf"\bballots\[ballots\] v1\b", lines.get(n, "")), show(status)
        assert "raise v1 (0..100000, epsilon left 1)" in lines[n], show(status)   # the owner's DP budget too
        assert not numbers_in(lines[n], [len(BALLOTS[n])]), show(status)

    total = sum(RAISES.values())
    sum_, _ = lab.coordinator("sum", "raise")
    assert sum_.returncode == 0 and sum_.stdout.strip() == str(total), show(sum_)

    average, _ = lab.coordinator("average", "raise", "--json")
    assert average.returncode == 0, show(average)
    result = json.loads(average.stdout)
    assert result["nodes"] == list(NODES), show(average)
    assert (result["sum"], result["count"]) == (total, len(NODES)), show(average)
    assert result["average"] == pytest.approx(total / len(NODES)), show(average)

    # 4 yes ballots out of 9: not half (NO), but at least 4 (YES). Neither count is printed.
    # The first vote sets up oblivious transfer between every pair of nodes (seconds of CPU):
    # its session gets more time than the cluster's default.
    vote, _ = lab.coordinator("vote", "ballots", "--timeout", str(VOTE_TIMEOUT_S), timeout=VOTE_TIMEOUT_S + 10)
    assert vote.returncode == 0 and vote.stdout.strip() == "NO", show(vote)
    vote4, _ = lab.coordinator("vote", "ballots", "--threshold", "4")
    assert vote4.returncode == 0 and vote4.stdout.strip() == "YES", show(vote4)
    # A third question on the same ballots is one the owners did not allow.
    vote5, _ = lab.coordinator("vote", "ballots", "--threshold", "5")
    assert_refused_without_revealing(vote5, *NODES)
    assert "(thresholds)" in vote5.stderr, show(vote5)
    lab.assert_nodes_alive()


def test_address_alias_not_in_certificate_still_reaches_the_node(lab: Lab) -> None:
    # Clients check the node's identity, not the host name it is dialled by.
    proc = alias_status(lab)
    assert proc.returncode == 0, show(proc)
    lines = status_lines(proc.stdout)
    assert re.match(rf"bob\s+{re.escape(BOB_ALIAS)}:{PORT}\s+up\b", lines.get("bob", "")), show(proc)
    for n in ("alice", "carlos"):
        assert re.match(rf"{n}\s+\S+\s+up\b", lines.get(n, "")), show(proc)
    lab.assert_nodes_alive()


def test_address_of_another_node_is_refused(lab: Lab) -> None:
    proc = other_host_status(lab)
    assert proc.returncode == 1, show(proc)
    lines = status_lines(proc.stdout)
    reached = f"(reached {lab.net.addresses['carlos']}:{PORT})"
    assert re.match(rf"bob\s+{re.escape(HOST['carlos'])}:{PORT}\s+DOWN\s+node bob at "
                    rf"{re.escape(HOST['carlos'])}:{PORT} {re.escape(reached)}", lines.get("bob", "")), show(proc)
    for n in ("alice", "carlos"):
        assert re.match(rf"{n}\s+\S+\s+up\b", lines.get(n, "")), show(proc)
    lab.assert_nodes_alive()


def test_peer_whose_certificate_does_not_match_is_refused(lab: Lab) -> None:
    proc, took = misdirected_sum(lab)
    assert_refused_without_revealing(proc, "alice")
    # alice could not send to bob: her part of the error names both (bob waited for alice in vain)
    assert re.search(rf"alice -> node bob at {re.escape(HOST['bob'])}:{PORT}", proc.stderr), show(proc)
    assert took < SESSION_TIMEOUT_S + 8, f"took {took:.1f} s\n{show(proc)}"
    # The coordinator itself reaches all three, bob included: only the alice -> bob link is refused.
    status, _ = lab.coordinator("status")
    assert status.returncode == 0, show(status)
    lab.assert_nodes_alive()


CASES = {
    # case: (scenario's message, node named, host name it was dialled by)
    "older-cert": (lambda lab: older_cert_sum(lab).stderr, "bob", HOST["bob"]),
    "other-host": (lambda lab: status_lines(other_host_status(lab).stdout).get("bob", ""), "bob", HOST["carlos"]),
    "peer": (lambda lab: misdirected_sum(lab)[0].stderr, "bob", HOST["bob"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mismatch_error_says_so(lab: Lab, case: str) -> None:
    message_of, node, host = CASES[case]
    message = message_of(lab)
    problems = mismatch_problems(message, node, host)
    assert not problems, f"{'; '.join(problems)}:\n{message}"
