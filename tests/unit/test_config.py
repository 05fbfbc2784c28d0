"""Tests of mpc.config.load_cluster: defaults, relative paths, and every way a cluster file can be wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mpc.config import (
    DEFAULT_MIN_PARTICIPANTS,
    DEFAULT_TRIPLE_POOL,
    MAX_TRIPLE_POOL,
    PROTOCOL_NAMES,
    ClusterConfig,
    Policy,
    Rules,
    load_cluster,
)
from mpc.errors import ConfigError

FULL = """\
{top}
[cluster]
name = "test-cluster"
ca = "certs/ca.pem"
{cluster}

[coordinator]
cert = "certs/coordinator.pem"
key = "certs/coordinator.key"
{coordinator}

[nodes.alice]
address = "alice.example:7001"
{alice}

[nodes.alice.policy]
min_participants = 3
{policy}

[nodes.bob]
address = "10.0.0.2:7002"
host = "bob.example"
listen = "0.0.0.0:7002"
cert = "certs/bob.pem"
key = "/etc/mpc/bob.key"
data_dir = "data/bob"

[nodes.bob.policy]
min_participants = 4
protocols = ["sum"]
inputs = ["salary", "age"]
"""

MINIMAL = """\
[cluster]
ca = "ca.pem"

[nodes.alice]
address = "alice:7001"

[nodes.bob]
address = "bob:7002"
"""


def write(tmp_path: Path, text: str, name: str = "conf/cluster.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def full(**sections: str) -> str:
    """The full sample with extra lines put into the named sections."""
    slots = dict.fromkeys(("top", "cluster", "coordinator", "alice", "policy"), "")
    slots.update(sections)
    return FULL.format(**slots)


def refused(path: Path, *fragments: str) -> str:
    """Load `path`, expect a ConfigError, check that its message names each fragment; return it."""
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPC_CLUSTER", raising=False)


# -- a valid file --------------------------------------------------------------------------------


def test_full_file_loads_with_defaults_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, full())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths follow the file, not the working directory
    conf = load_cluster(path)
    base = path.resolve().parent
    assert isinstance(conf, ClusterConfig)
    assert conf.path == path
    assert conf.name == "test-cluster"
    assert conf.ca == base / "certs" / "ca.pem"
    assert conf.session_timeout_s == 30.0 and conf.connect_timeout_s == 5.0
    assert list(conf.nodes) == ["alice", "bob"]  # file order is the party order

    alice = conf.node("alice")
    assert alice.name == "alice"
    assert alice.address == "alice.example:7001"
    assert alice.host == "alice.example"        # from the address
    assert alice.listen == "alice.example:7001"  # = address
    assert alice.cert is None and alice.key is None and alice.data_dir is None
    assert alice.policy == Policy()
    assert alice.policy.min_participants == DEFAULT_MIN_PARTICIPANTS == 3
    assert alice.policy.protocols == frozenset(PROTOCOL_NAMES)
    assert alice.policy.inputs is None

    bob = conf.node("bob")
    assert bob.host == "bob.example" and bob.listen == "0.0.0.0:7002"
    assert bob.cert == base / "certs" / "bob.pem"
    assert bob.key == Path("/etc/mpc/bob.key")
    assert bob.data_dir == base / "data" / "bob"
    assert bob.policy == Policy(4, frozenset({"sum"}), frozenset({"salary", "age"}))

    coordinator = conf.require_coordinator()
    assert coordinator.name == "coordinator"
    assert coordinator.cert == base / "certs" / "coordinator.pem"
    assert coordinator.key == base / "certs" / "coordinator.key"


def test_the_deploy_sample_loads_and_sets_what_its_comments_say() -> None:
    """deploy/cluster.sample.toml, which the README points to for every key, must not rot."""
    sample = Path(__file__).resolve().parents[2] / "deploy" / "cluster.sample.toml"
    conf = load_cluster(sample)
    assert list(conf.nodes) == ["alice", "bob", "carlos", "david"]
    alice = conf.node("alice")
    assert alice.host == "alice.example.org" and alice.metrics == "127.0.0.1:9464"
    assert alice.triple_pool == DEFAULT_TRIPLE_POOL == 4194304 and conf.node("bob").triple_pool == DEFAULT_TRIPLE_POOL
    assert (alice.submit, alice.submit_listen) == ("alice.example.org:7101", "alice.example.org:7101")
    assert conf.node("bob").submit is None
    policy = alice.policy
    # Its rules across sessions are written out with their default values ...
    assert policy.defaults == Rules() and policy.defaults.participants == "cluster"
    assert (policy.max_sessions, policy.max_sessions_per_coordinator) == (64, 16)
    # ... and the referendum's own table changes only what it names.
    assert policy.rules("referendum") == Rules(2, "cluster", frozenset({"half", 7}))
    assert policy.allow["vote"] == frozenset({"referendum"})
    assert all(conf.node(n).policy == Policy() for n in ("bob", "carlos", "david"))


def test_minimal_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    conf = load_cluster(str(path))
    assert conf.name == "mpc"
    assert conf.coordinator is None
    assert [n.host for n in conf.nodes.values()] == ["alice", "bob"]
    assert all(n.policy == Policy() for n in conf.nodes.values())


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    conf = load_cluster(write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.node("alice").address = "x:1"  # type: ignore[misc]


def test_optional_keys_are_read(tmp_path: Path) -> None:
    text = full(cluster="session_timeout_s = 120\nconnect_timeout_s = 2.5",
                coordinator='name = "ops"', policy='protocols = ["average"]')
    conf = load_cluster(write(tmp_path, text))
    assert conf.session_timeout_s == 120.0 and isinstance(conf.session_timeout_s, float)
    assert conf.connect_timeout_s == 2.5
    assert conf.require_coordinator().name == "ops"
    assert conf.node("alice").policy.protocols == frozenset({"average"})


def test_ipv6_address_host_loses_its_brackets(tmp_path: Path) -> None:
    conf = load_cluster(write(tmp_path, MINIMAL.replace('"alice:7001"', '"[::1]:7001"')))
    assert conf.node("alice").host == "::1"
    assert conf.node("alice").listen == "[::1]:7001"


def test_unknown_node_is_named(tmp_path: Path) -> None:
    conf = load_cluster(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match="'carol'"):
        conf.node("carol")


# -- the file itself -----------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    refused(tmp_path / "nope.toml", str(tmp_path / "nope.toml"), "does not exist")


def test_a_directory_is_not_a_cluster_file(tmp_path: Path) -> None:
    refused(tmp_path, str(tmp_path), "cannot be read")


@pytest.mark.parametrize("text", ["[cluster\nca = 1", "ca = ", "[nodes.a]\naddress = 'a:1'\n[nodes.a]\n"])
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    refused(path, str(path), "not valid TOML")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_bytes(b'[cluster]\nname = "caf\xe9"\n')
    refused(path, str(path), "not valid TOML")


# -- unknown keys at every level -----------------------------------------------------------------


@pytest.mark.parametrize(("section", "line", "where"), [
    ("top", "colour = 1", ""),
    ("cluster", "nmae = 'x'", "[cluster]"),
    ("coordinator", "keyfile = 'x'", "[coordinator]"),
    ("alice", "adress = 'x:1'", "[nodes.alice]"),
    ("policy", "min_participant = 3", "[nodes.alice].policy"),
])
def test_unknown_keys_are_named(tmp_path: Path, section: str, line: str, where: str) -> None:
    path = write(tmp_path, full(**{section: line}))
    refused(path, str(path), "unknown key", line.split(" = ")[0], where)


def test_unknown_top_level_table_is_named(tmp_path: Path) -> None:
    refused(write(tmp_path, MINIMAL + "\n[extras]\nx = 1\n"), "unknown key", "extras")


# -- wrong types and missing keys ----------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "key"), [
    ('address = "alice.example:7001"', "address = 7001", "address"),
    ('ca = "certs/ca.pem"', "ca = 1", "ca"),
    ('name = "test-cluster"', "name = ['a']", "name"),
    ('min_participants = 3', 'min_participants = "3"', "min_participants"),
    ('min_participants = 3', "min_participants = true", "min_participants"),
    ('min_participants = 3', "min_participants = 3.0", "min_participants"),
    ('protocols = ["sum"]', 'protocols = "sum"', "protocols"),
    ('inputs = ["salary", "age"]', 'inputs = "salary"', "inputs"),
    ('host = "bob.example"', "host = 1", "host"),
    ('listen = "0.0.0.0:7002"', "listen = 7002", "listen"),
    ('data_dir = "data/bob"', "data_dir = false", "data_dir"),
    ('cert = "certs/coordinator.pem"', "cert = {}", "cert"),
])
def test_wrong_types_are_named(tmp_path: Path, old: str, new: str, key: str) -> None:
    text = full()
    assert old in text
    refused(write(tmp_path, text.replace(old, new, 1)), f"{key!r} must be a")


@pytest.mark.parametrize("line", ['session_timeout_s = "30"', "connect_timeout_s = true"])
def test_wrong_timeout_types(tmp_path: Path, line: str) -> None:
    refused(write(tmp_path, full(cluster=line)), line.split(" = ")[0], "must be a float")


@pytest.mark.parametrize("line", ["session_timeout_s = 0", "session_timeout_s = -1", "session_timeout_s = 86401",
                                  "connect_timeout_s = 0", "connect_timeout_s = 61"])
def test_timeouts_out_of_range(tmp_path: Path, line: str) -> None:
    refused(write(tmp_path, full(cluster=line)), "timeouts")


@pytest.mark.parametrize(("text", "fragment"), [
    ('cluster = "x"\n[nodes.a]\naddress = "a:1"\n[nodes.b]\naddress = "b:1"\n', "'cluster' must be a dict"),
    ('nodes = 3\n[cluster]\nca = "ca.pem"\n', "'nodes' must be a dict"),
    ('coordinator = "c"\n' + MINIMAL, "'coordinator' must be a dict"),
])
def test_tables_of_the_wrong_type(tmp_path: Path, text: str, fragment: str) -> None:
    refused(write(tmp_path, text), fragment)


def test_policy_must_be_a_table(tmp_path: Path) -> None:
    text = MINIMAL.replace('address = "alice:7001"', 'address = "alice:7001"\npolicy = 3')
    refused(write(tmp_path, text), "'policy' must be a dict")


@pytest.mark.parametrize(("old", "new", "key"), [
    ('[cluster]\nca = "ca.pem"\n', "[cluster]\n", "'ca'"),
    ('[cluster]\nca = "ca.pem"\n', "", "'cluster'"),
    ('address = "bob:7002"', 'host = "bob"', "'address'"),
])
def test_missing_keys_are_named(tmp_path: Path, old: str, new: str, key: str) -> None:
    refused(write(tmp_path, MINIMAL.replace(old, new)), "missing key", key)


def test_missing_nodes_table(tmp_path: Path) -> None:
    refused(write(tmp_path, '[cluster]\nca = "ca.pem"\n'), "missing key", "'nodes'")


@pytest.mark.parametrize("line", ['cert = "c.pem"', 'key = "c.key"'])
def test_coordinator_needs_cert_and_key(tmp_path: Path, line: str) -> None:
    missing = "'key'" if line.startswith("cert") else "'cert'"
    refused(write(tmp_path, MINIMAL + f"\n[coordinator]\n{line}\n"), "[coordinator]", "missing key", missing)


def test_a_node_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    text = '[cluster]\nca = "ca.pem"\n[nodes]\nalice = 3\n[nodes.bob]\naddress = "bob:1"\n'
    refused(write(tmp_path, text), "[nodes.alice]")


# -- addresses and names -------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["alice", "alice:", ":7001", "alice:0", "alice:65536", "alice:port",
                                     "alice:-1", "alice:70 01", "", "alice:+80"])
@pytest.mark.parametrize("key", ["address", "listen"])
def test_bad_addresses_are_refused(tmp_path: Path, address: str, key: str) -> None:
    line = f'{key} = "{address}"'
    text = MINIMAL.replace('address = "alice:7001"', line if key == "address" else f'address = "alice:7001"\n{line}')
    refused(write(tmp_path, text), "[nodes.alice]", repr(address), "host:port")


@pytest.mark.parametrize("value", ["-128", "100", "true", '"4096"', "1.5", str(MAX_TRIPLE_POOL + 128)])
def test_a_bad_triple_pool_is_refused(tmp_path: Path, value: str) -> None:
    text = MINIMAL.replace('address = "alice:7001"', f'address = "alice:7001"\ntriple_pool = {value}')
    refused(write(tmp_path, text), "[nodes.alice]", "triple_pool")


@pytest.mark.parametrize("lines, fragment", [
    ('submit = "alice"', "host:port"),
    ('submit = "alice:0"', "host:port"),
    ('submit_listen = "0.0.0.0:7101"', "submit_listen without submit"),
    ('submit = "alice:7101"\nsubmit_listen = "alice:7001"', "its own port"),
    ("submit = 7101", "'submit' must be a str"),
])
def test_a_bad_submission_address_is_refused(tmp_path: Path, lines: str, fragment: str) -> None:
    text = MINIMAL.replace('address = "alice:7001"', f'address = "alice:7001"\n{lines}')
    refused(write(tmp_path, text), "[nodes.alice]", fragment)


@pytest.mark.parametrize("value", [0, 128, MAX_TRIPLE_POOL])
def test_triple_pool_edges_are_accepted(tmp_path: Path, value: int) -> None:
    text = MINIMAL.replace('address = "alice:7001"', f'address = "alice:7001"\ntriple_pool = {value}')
    assert load_cluster(write(tmp_path, text)).node("alice").triple_pool == value


@pytest.mark.parametrize("port", ["1", "65535"])
def test_port_edges_are_accepted(tmp_path: Path, port: str) -> None:
    conf = load_cluster(write(tmp_path, MINIMAL.replace("alice:7001", f"alice:{port}")))
    assert conf.node("alice").address == f"alice:{port}"


def test_a_superscript_port_is_a_config_error(tmp_path: Path) -> None:
    refused(write(tmp_path, MINIMAL.replace("alice:7001", "alice:7²")), "host:port")


@pytest.mark.parametrize("name", ["Alice", "al_ice", "-alice", "al.ice", "a" * 64, "ali ce", "\"é\""])
def test_bad_node_names_are_refused(tmp_path: Path, name: str) -> None:
    quoted = name if name.startswith('"') else f'"{name}"'
    text = MINIMAL.replace("[nodes.alice]", f"[nodes.{quoted}]")
    refused(write(tmp_path, text), "node name", "lowercase")


@pytest.mark.parametrize("name", ["a", "0", "node-1", "a" * 63])
def test_good_node_names_are_accepted(tmp_path: Path, name: str) -> None:
    conf = load_cluster(write(tmp_path, MINIMAL.replace("[nodes.alice]", f'[nodes."{name}"]')))
    assert list(conf.nodes) == [name, "bob"]


@pytest.mark.parametrize("nodes", ["", '[nodes]\n', '[nodes.alice]\naddress = "alice:1"\n'])
def test_fewer_than_two_nodes(tmp_path: Path, nodes: str) -> None:
    found = "1" if "alice" in nodes else "0"
    text = ("" if nodes else "nodes = {}\n") + '[cluster]\nca = "ca.pem"\n' + nodes
    refused(write(tmp_path, text), "at least two nodes", f"found {found}")


# -- policies ------------------------------------------------------------------------------------


# Protocols added with the catalogue (mpc/protocols/catalogue.py); named here so that dropping
# one from the catalogue fails a test instead of silently shrinking what a policy accepts.
NEW_PROTOCOLS = ("auction", "clearing-price", "plurality")


def test_unknown_protocols_are_named(tmp_path: Path) -> None:
    message = refused(write(tmp_path, full(policy='protocols = ["sum", "lottery"]')), "[nodes.alice].policy",
                      "unknown protocol", "'lottery'", "'vote'")
    for name in PROTOCOL_NAMES:  # the message lists every known protocol
        assert repr(name) in message


def test_every_catalogue_protocol_is_accepted(tmp_path: Path) -> None:
    assert set(NEW_PROTOCOLS) <= set(PROTOCOL_NAMES)
    listed = ", ".join(f'"{name}"' for name in PROTOCOL_NAMES)
    conf = load_cluster(write(tmp_path, full(policy=f"protocols = [{listed}]")))
    assert conf.node("alice").policy.protocols == frozenset(PROTOCOL_NAMES)


@pytest.mark.parametrize("name", NEW_PROTOCOLS)
def test_a_new_protocol_alone_is_accepted(tmp_path: Path, name: str) -> None:
    conf = load_cluster(write(tmp_path, full(policy=f'protocols = ["{name}"]')))
    assert conf.node("alice").policy.protocols == frozenset({name})


@pytest.mark.parametrize("minimum", [1, 0, -3])
def test_min_participants_below_two(tmp_path: Path, minimum: int) -> None:
    refused(write(tmp_path, full().replace("min_participants = 3", f"min_participants = {minimum}")),
            "min_participants", str(minimum))


def test_policy_inputs_are_strings(tmp_path: Path) -> None:
    conf = load_cluster(write(tmp_path, full(policy="inputs = []")))
    assert conf.node("alice").policy.inputs == frozenset()


# -- where the file comes from -------------------------------------------------------------------


def test_mpc_cluster_env_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("MPC_CLUSTER", str(path))
    assert load_cluster().path == path
    # An explicit path wins over the environment.
    other = write(tmp_path, MINIMAL.replace("alice", "carol"), "other.toml")
    assert list(load_cluster(other).nodes) == ["carol", "bob"]


def test_mpc_cluster_env_naming_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPC_CLUSTER", str(tmp_path / "gone.toml"))
    refused(None, "gone.toml", "does not exist")  # type: ignore[arg-type]


@pytest.mark.parametrize("env", [None, ""])
def test_no_cluster_and_no_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, env: str | None) -> None:
    if env is not None:
        monkeypatch.setenv("MPC_CLUSTER", env)
    refused(None, "--cluster", "MPC_CLUSTER")  # type: ignore[arg-type]


def test_require_coordinator_when_absent(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    conf = load_cluster(path)
    with pytest.raises(ConfigError) as err:
        conf.require_coordinator()
    assert "[coordinator]" in str(err.value) and str(path) in str(err.value)


def test_metrics_address_is_optional_and_checked(tmp_path: Path) -> None:
    assert load_cluster(write(tmp_path, MINIMAL)).node("alice").metrics is None
    conf = load_cluster(write(tmp_path, full(alice='metrics = "127.0.0.1:9464"')))
    assert conf.node("alice").metrics == "127.0.0.1:9464" and conf.node("bob").metrics is None
    assert load_cluster(write(tmp_path, full(alice='metrics = "[::1]:0"'))).node("alice").metrics == "[::1]:0"
    for bad in ('"9464"', '"localhost:http"', '"127.0.0.1:70000"'):
        refused(write(tmp_path, full(alice=f"metrics = {bad}")), "[nodes.alice].metrics", "host:port")
    refused(write(tmp_path, full(alice="metrics = 9464")), "metrics", "str")
