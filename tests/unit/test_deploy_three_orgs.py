"""The three-organisation samples in deploy/three-orgs/ must not rot.

Every cluster file there loads with mpc.config.load_cluster (the paths it names are deployment
paths such as /etc/mpc/tls/...: load_cluster only resolves them, it does not open them), every
key in it carries a comment, and the README's commands are real `mpc` commands that agree with
the file: the certificates its `mpc certs init` issues carry exactly the names the cluster file
dials, under the file names the cluster file reads.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path

import pytest
from cryptography import x509

from mpc.cli.app import build_parser, main
from mpc.config import ClusterConfig, load_cluster
from mpc.pki import identity_dns_name, identity_from_pem

SAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "three-orgs"
CLUSTER = SAMPLES / "cluster.toml"
README = SAMPLES / "README.md"
NODES = ("org-a", "org-b", "org-c")


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.toml"))


def readme_commands() -> list[list[str]]:
    """Every `mpc ...` command in the README's ```sh blocks, continuation lines joined: also one run as
    another user (`sudo -u USER VAR=value mpc ...`) or at the end of a pipe (`echo 1 | ... mpc ...`)."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(" | "):
                words = shlex.split(part, comments=True)
                if words[:2] == ["sudo", "-u"]:
                    words = words[3:]
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]
                if words[:1] == ["mpc"]:
                    commands.append(words[1:])
    return commands


@pytest.fixture(scope="module")
def cluster() -> ClusterConfig:
    return load_cluster(CLUSTER)


def test_there_are_samples() -> None:
    assert CLUSTER in sample_files() and README.is_file()


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_sample_loads(path: Path) -> None:
    loaded = load_cluster(path)
    assert loaded.nodes and loaded.coordinator is not None


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_key_is_commented(path: Path) -> None:
    uncommented = [line for line in path.read_text(encoding="utf-8").splitlines()
                   if re.match(r"\s*[A-Za-z0-9_-]+\s*=", line) and "#" not in line]
    assert not uncommented, uncommented


def test_three_orgs_one_node_each_on_its_own_host(cluster: ClusterConfig) -> None:
    assert tuple(cluster.nodes) == NODES
    coordinator = cluster.require_coordinator()
    hosts = set()
    for name, node in cluster.nodes.items():
        host, _, port = node.address.rpartition(":")
        org = name.removeprefix("org-")
        assert host == f"node.org-{org}.example" and port == "7443", node.address
        with pytest.raises(ValueError):
            ipaddress.ip_address(host)          # dialled by name, never by IP
        assert node.host == host, (node.host, host)
        hosts.add(host)
        assert node.cert is not None and node.cert.name == f"{name}.pem"
        assert node.key is not None and node.key.name == f"{name}.key"
        assert node.cert.parent == node.key.parent == cluster.ca.parent
        assert node.data_dir is not None and node.data_dir.name == name
        assert node.policy.min_participants == 3
    assert len(hosts) == 3
    assert len({n.data_dir for n in cluster.nodes.values()}) == 3
    assert coordinator.cert.name == f"coordinator-{coordinator.name}.pem"
    assert coordinator.key.name == f"coordinator-{coordinator.name}.key"
    assert cluster.ca.is_absolute() and cluster.ca.name == "ca.pem"


def test_readme_commands_parse_and_name_nodes_of_the_file(cluster: ClusterConfig) -> None:
    commands = readme_commands()
    assert {c[0] for c in commands} >= {"certs", "input", "node", "status", "sum", "average", "vote"}, commands
    parser = build_parser()
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: mpc {shlex.join(argv)}")
        named = getattr(args, {"node": "name", "health": "name", "input": "node"}.get(args.command, "-"), None)
        assert named is None or named in cluster.nodes, f"mpc {shlex.join(argv)}: no node {named!r} in {CLUSTER.name}"
        cluster_arg = getattr(args, "cluster", None)
        assert cluster_arg is None or str(cluster_arg) == "/etc/mpc/cluster.toml", argv


def test_readme_certificates_carry_the_names_the_file_dials(cluster: ClusterConfig, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    inits = [c for c in readme_commands() if c[:2] == ["certs", "init"] and len(c) > 6]
    assert len(inits) == 1, inits
    argv = inits[0]
    at = argv.index("--dir")
    argv = [*argv[:at + 1], str(tmp_path / "ca"), *argv[at + 2:]]
    assert main(argv) == 0
    capsys.readouterr()
    issued = tmp_path / "ca"
    assert (issued / cluster.ca.name).is_file()
    for name, node in cluster.nodes.items():
        assert node.cert is not None and node.key is not None
        pem = (issued / node.cert.name).read_bytes()
        assert (issued / node.key.name).stat().st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate(pem)
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
        assert dns == [node.host, identity_dns_name(name)], (name, dns)   # the host, then the identity
        ident = identity_from_pem(pem)
        assert (ident.role, ident.name) == ("node", name)
    coordinator = cluster.require_coordinator()
    ident = identity_from_pem((issued / coordinator.cert.name).read_bytes())
    assert (ident.role, ident.name) == ("coordinator", coordinator.name)
    assert (issued / coordinator.key.name).is_file()


def test_readme_stores_inputs_as_the_policy_expects(cluster: ClusterConfig) -> None:
    """The referendum is stored as ballots (a vote refuses anything else), the raise with public bounds."""
    parser = build_parser()
    puts = {args.name: args for args in (parser.parse_args(c) for c in readme_commands() if c[:2] == ["input", "put"])}
    assert set(puts) == {"raise", "referendum"}, puts
    assert puts["referendum"].ballots and all(v in ("0", "1") for v in puts["referendum"].values)
    assert not puts["raise"].ballots and puts["raise"].bounds is not None
    votes = [c for c in readme_commands() if c[:1] == ["vote"]]
    assert votes and all(parser.parse_args(v).name == "referendum" for v in votes), votes
    org_a = cluster.node("org-a").policy
    for argv in votes:                 # the rule the README's vote uses is one org A allows
        threshold = parser.parse_args(argv).threshold
        allowed = org_a.rules("referendum").thresholds
        assert allowed is None or ("half" if threshold is None else threshold) in allowed, argv
    for node in cluster.nodes.values():  # every node: sessions of the whole cluster, one query per version
        assert node.policy.rules("raise").pinned(list(cluster.nodes)) == frozenset(cluster.nodes)
        assert node.policy.rules("referendum").max_releases == 1
