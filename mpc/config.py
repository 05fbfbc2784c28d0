"""The only configuration loader: the cluster file (TOML) and each node's owner policy.

A cluster file names the nodes, their addresses and certificate paths, and the coordinator's
certificate. Relative paths are relative to the file. Unknown keys are an error, so a typo
never silently falls back to a default (as janus's deny_unknown_fields).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from mpc import MAX_SESSION_TIMEOUT_S
from mpc.errors import ConfigError
from mpc.protocols.names import HALF, PROTOCOL_NAMES   # numpy-free: `mpc health` loads this file quickly
DEFAULT_MIN_PARTICIPANTS = 3
# Across sessions (DESIGN.md §9): by default an input version takes part in one distinct query,
# over every node of the owner's own cluster file. Both defeat the differencing and the
# threshold-search attacks of a lone coordinator; README "What is protected, across sessions".
DEFAULT_MAX_RELEASES = 1
# Differential privacy (DESIGN.md §11): each input's budget over its lifetime, spent by DP
# releases by sequential composition (README "Differentially private releases").
DEFAULT_EPSILON_BUDGET = Decimal("1")
DEFAULT_DELTA_BUDGET = Decimal("1e-6")
REVEAL_MODES = ("size", "members", "sum")   # an intersection's outputs (mpc/protocols/psi.py); default: size only
DEFAULT_MAX_SESSIONS = 64
DEFAULT_MAX_SESSIONS_PER_COORDINATOR = 16
Pin = str | frozenset[str]       # "cluster", "any", or exactly these nodes


@dataclass(frozen=True, slots=True)
class Rules:
    """What a sequence of sessions may reveal about one input (the policy's defaults, or its own table)."""

    max_releases: int = DEFAULT_MAX_RELEASES
    participants: Pin = "cluster"
    thresholds: frozenset[int | str] | None = None   # None: any; else only these (ints, or "half")
    epsilon: Decimal = DEFAULT_EPSILON_BUDGET         # the input's DP budget, all versions together
    delta: Decimal = DEFAULT_DELTA_BUDGET
    exact: bool = True                                # False: only differentially private releases
    reveal: frozenset[str] = frozenset({"size"})      # what an intersection of the input may reveal
    exact_histograms: bool = False                    # exact histograms too (fine bins open the values)
    dp_per_element: bool = False                      # each element of a vector is a record of its own
    members_to: frozenset[str] | None = None          # who may receive an intersection's members (None: any)

    def pinned(self, cluster_nodes: Sequence[str]) -> frozenset[str] | None:
        """The participant set this input is pinned to, or None if any set may take part."""
        if self.participants == "any":
            return None
        if self.participants == "cluster":
            return frozenset(cluster_nodes)
        return frozenset(self.participants)
# What an input declares it is (mpc/store/inputs.py stores it). Each kind but "number" is made for
# one protocol, which alone may use it unless the owner's policy names it for another (`allow`):
# ballots (0/1) for a yes/no vote, options (indices 0..K-1) for a plurality vote, a net-demand curve
# for a clearing price, bids for an auction, a set of identifiers (each with an associated integer
# value, 0 if none) for a private set intersection. A vote's and a plurality's count is never shown;
# a curve never increases; a set's size is public, as a number input's length is.
KINDS = ("number", "ballots", "options", "curve", "bids", "set")
COUNTS_HIDDEN = ("ballots", "options")   # kinds whose number of values no other party sees

# The shapes of names, declared once: the store, the config and the node's checks of a request use these.
NODE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
INPUT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class Policy:
    """A node owner's rules for which sessions the node joins (DESIGN.md §6)."""

    # A two-party sum hands each side the other's input (sum minus own), hence 3.
    min_participants: int = DEFAULT_MIN_PARTICIPANTS
    protocols: frozenset[str] = frozenset(PROTOCOL_NAMES)
    # None: every stored input may be used; otherwise only the names listed.
    inputs: frozenset[str] | None = None
    # Per protocol, the only inputs it may use (protocols not named here: no extra limit). A
    # ballot input may be used by another protocol than a vote only where this names it.
    allow: Mapping[str, frozenset[str]] = field(default_factory=dict)
    defaults: Rules = field(default_factory=Rules)
    per_input: Mapping[str, Rules] = field(default_factory=dict)
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_sessions_per_coordinator: int = DEFAULT_MAX_SESSIONS_PER_COORDINATOR

    def rules(self, input_name: str) -> Rules:
        """The release rules of one input: its own table if the policy has one, else the defaults."""
        return self.per_input.get(input_name, self.defaults)

    def refusal(self, node: str, protocol: str, input_name: str) -> str | None:
        """Why this policy refuses `protocol` on `input_name`, or None if it allows it."""
        if protocol not in self.protocols:
            return (f"node {node}: policy does not allow protocol {protocol!r} (asked for input {input_name!r}; "
                    f"allowed: {', '.join(sorted(self.protocols)) or 'none'})")
        if self.inputs is not None and input_name not in self.inputs:
            return f"node {node}: policy does not allow input {input_name!r} to be used"
        allowed = self.allow.get(protocol)
        if allowed is not None and input_name not in allowed:
            return (f"node {node}: policy allows protocol {protocol!r} only on "
                    f"{', '.join(sorted(allowed)) or 'no input'}, not on {input_name!r}")
        return None


DEFAULT_TRIPLE_POOL = 1 << 22    # AND gates' worth of random OTs per peer and role: 0.5 MiB per bit array
MAX_TRIPLE_POOL = 1 << 28


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One node as the cluster file describes it."""

    name: str
    address: str              # host:port that peers and coordinators dial
    host: str                 # the DNS name its certificate is issued for (clients check its identity name)
    listen: str               # host:port the daemon binds
    cert: Path | None
    key: Path | None
    data_dir: Path | None
    policy: Policy = field(default_factory=Policy)
    metrics: str | None = None    # host:port to serve Prometheus metrics on (off when None)
    # Random OTs made ahead of time with each peer, per role (mpc/ot/pool.py); 0: none, every
    # session's triples come from IKNP while it runs.
    triple_pool: int = DEFAULT_TRIPLE_POOL
    # host:port where contributors reach this node (mpc submit), with TLS that authenticates the node
    # only; None: this node takes no submissions. submit_listen: what it binds (default: submit).
    submit: str | None = None
    submit_listen: str | None = None


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """The coordinator's identity material."""

    name: str
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A whole cluster file."""

    path: Path
    name: str
    ca: Path
    nodes: Mapping[str, NodeConfig]       # in file order: the session's party order
    coordinator: CoordinatorConfig | None
    session_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0

    def node(self, name: str) -> NodeConfig:
        """Look a node up by name.

        Returns: its NodeConfig.
        Raises: ConfigError naming the node and the file.
        """
        try:
            return self.nodes[name]
        except KeyError:
            raise ConfigError(f"{self.path}: no node named {name!r} (nodes: {', '.join(self.nodes)})") from None

    def require_coordinator(self) -> CoordinatorConfig:
        """Return the [coordinator] section.

        Raises: ConfigError if the file has none.
        """
        if self.coordinator is None:
            raise ConfigError(f"{self.path}: no [coordinator] section (cert and key) to run computations with")
        return self.coordinator


def _take(table: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    value = table.pop(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _no_leftovers(table: dict[str, Any], where: str) -> None:
    if table:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(table))}")


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _opt_path(base: Path, value: str | None) -> Path | None:
    return None if value is None else _path(base, value)


def split_address(address: str, where: str, *, any_port: bool = False) -> tuple[str, int]:
    """Split "HOST:PORT" (IPv6 in brackets).

    Args:
        any_port: also accept port 0 (the system picks one).
    Returns: (host without brackets, port).
    Raises: ConfigError naming `where` if it is not host:port.
    """
    host, sep, port = address.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not host or not (port.isascii() and port.isdigit()) or not lowest <= int(port) < 65536:
        raise ConfigError(f"{where}: address {address!r} must be host:port")
    return host.strip("[]"), int(port)


def _split_address(address: str, where: str) -> str:
    return split_address(address, where)[0]


def _rules(table: dict[str, Any], where: str, base: Rules) -> Rules:
    maximum = _take(table, "max_releases", int, where, base.max_releases)
    if maximum < 1:
        raise ConfigError(f"{where}: max_releases must be at least 1, got {maximum}")
    pin: Pin = base.participants
    if "participants" in table:
        raw = table.pop("participants")
        if raw in ("cluster", "any"):
            pin = raw
        elif isinstance(raw, list) and raw and all(isinstance(n, str) and NODE_NAME.match(n) for n in raw):
            pin = frozenset(raw)
        else:
            raise ConfigError(f"{where}: participants must be \"cluster\", \"any\" or a list of node names, "
                              f"got {str(raw)[:80]}")
    thresholds = base.thresholds
    if "thresholds" in table:
        raw = table.pop("thresholds")
        if not isinstance(raw, list) or not all(t == HALF or (isinstance(t, int) and not isinstance(t, bool))
                                                for t in raw):
            raise ConfigError(f"{where}: thresholds must be a list of integers and \"{HALF}\", got {str(raw)[:80]}")
        limit = 1 << 30   # the comparison's range (mpc/protocols/contribution.py, COMPARE_BOUND)
        if any(isinstance(t, int) and not -limit <= t <= limit for t in raw):
            raise ConfigError(f"{where}: thresholds must lie within +-{limit}")
        thresholds = frozenset(raw)
    epsilon = _budget(table, "epsilon", where, base.epsilon)
    delta = _budget(table, "delta", where, base.delta)
    if delta >= 1:
        raise ConfigError(f"{where}: delta must be below 1, got {delta}")
    exact = _take(table, "exact", bool, where, base.exact)
    reveal = base.reveal
    if "reveal" in table:
        raw = table.pop("reveal")
        if not isinstance(raw, list) or not all(r in REVEAL_MODES for r in raw):
            raise ConfigError(f"{where}: reveal must be a list of {', '.join(map(repr, REVEAL_MODES))}, "
                              f"got {str(raw)[:80]}")
        reveal = frozenset(raw)
    exact_histograms = _take(table, "exact_histograms", bool, where, base.exact_histograms)
    per_element = _take(table, "dp_per_element", bool, where, base.dp_per_element)
    members_to = base.members_to
    if "members_to" in table:
        raw = table.pop("members_to")
        if not isinstance(raw, list) or not raw or not all(isinstance(n, str) and NODE_NAME.match(n) for n in raw):
            raise ConfigError(f"{where}: members_to must be a non-empty list of node names (to send the members "
                              f"nowhere, leave \"members\" out of reveal), got {str(raw)[:80]}")
        members_to = frozenset(raw)
    _no_leftovers(table, where)
    return Rules(maximum, pin, thresholds, epsilon, delta, exact, reveal, exact_histograms, per_element, members_to)


def _budget(table: dict[str, Any], key: str, where: str, default: Decimal) -> Decimal:
    """A DP budget as an exact decimal ("0.1" stays 0.1): a non-negative finite number."""
    if key not in table:
        return default
    raw = table.pop(key)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
        raise ConfigError(f"{where}: {key} must be a non-negative number, got {str(raw)[:40]}")
    return Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)


def _policy(table: dict[str, Any], where: str) -> Policy:
    minimum = _take(table, "min_participants", int, where, DEFAULT_MIN_PARTICIPANTS)
    if minimum < 2:
        raise ConfigError(f"{where}: min_participants must be at least 2, got {minimum}")
    protocols = _take(table, "protocols", list, where, list(PROTOCOL_NAMES))
    unknown = [p for p in protocols if p not in PROTOCOL_NAMES]
    if unknown:
        raise ConfigError(f"{where}: unknown protocol(s) {unknown}; known: {list(PROTOCOL_NAMES)}")
    inputs = _take(table, "inputs", list, where, None)
    allow_table = dict(_take(table, "allow", dict, where, {}))
    allow: dict[str, frozenset[str]] = {}
    for protocol in list(allow_table):
        if protocol not in PROTOCOL_NAMES:
            raise ConfigError(f"{where}.allow: unknown protocol {protocol!r}; known: {list(PROTOCOL_NAMES)}")
        names = _take(allow_table, protocol, list, f"{where}.allow")
        allow[protocol] = frozenset(map(str, names))
    sessions = _take(table, "max_sessions", int, where, DEFAULT_MAX_SESSIONS)
    per_coordinator = _take(table, "max_sessions_per_coordinator", int, where,
                            min(DEFAULT_MAX_SESSIONS_PER_COORDINATOR, sessions))
    if not 1 <= per_coordinator <= sessions:
        raise ConfigError(f"{where}: need 1 <= max_sessions_per_coordinator <= max_sessions, "
                          f"got {per_coordinator} and {sessions}")
    per_input_table = dict(_take(table, "per_input", dict, where, {}))
    rule_keys: dict[str, Any] = {k: table.pop(k) for k in ("max_releases", "participants", "thresholds", "epsilon",
                                                           "delta", "exact", "reveal", "exact_histograms",
                                                           "dp_per_element", "members_to") if k in table}
    _no_leftovers(table, where)
    defaults = _rules(rule_keys, where, Rules())
    bad = [name for name in per_input_table if not INPUT_NAME.match(name)]
    if bad:
        raise ConfigError(f"{where}.per_input: {str(bad[0])[:80]!r} is not an input name")
    per_input = {name: _rules(dict(_take(per_input_table, name, dict, f"{where}.per_input")),
                              f"{where}.per_input.{name}", defaults)
                 for name in list(per_input_table)}
    return Policy(minimum, frozenset(protocols), None if inputs is None else frozenset(map(str, inputs)), allow,
                  defaults, per_input, sessions, per_coordinator)


def _node(name: str, table: dict[str, Any], base: Path, where: str) -> NodeConfig:
    if not NODE_NAME.match(name):
        raise ConfigError(f"{where}: node name {name!r} must be lowercase letters, digits and '-'")
    address = _take(table, "address", str, where)
    default_host = _split_address(address, where)
    host = _take(table, "host", str, where, default_host)
    listen = _take(table, "listen", str, where, address)
    _split_address(listen, where)
    cert = _opt_path(base, _take(table, "cert", str, where, None))
    key = _opt_path(base, _take(table, "key", str, where, None))
    data_dir = _opt_path(base, _take(table, "data_dir", str, where, None))
    metrics = _take(table, "metrics", str, where, None)
    if metrics is not None:
        split_address(metrics, f"{where}.metrics", any_port=True)
    triple_pool = _take(table, "triple_pool", int, where, DEFAULT_TRIPLE_POOL)
    if isinstance(triple_pool, bool) or not 0 <= triple_pool <= MAX_TRIPLE_POOL or triple_pool % 128:
        raise ConfigError(f"{where}.triple_pool: {triple_pool!r} must be a multiple of 128 from 0 (no pool) to "
                          f"{MAX_TRIPLE_POOL} AND gates per peer")
    submit = _take(table, "submit", str, where, None)
    if submit is not None:
        _split_address(submit, f"{where}.submit")
    submit_listen = _take(table, "submit_listen", str, where, submit)
    if submit_listen is not None:
        if submit is None:
            raise ConfigError(f"{where}: submit_listen without submit (the address contributors reach)")
        _split_address(submit_listen, f"{where}.submit_listen")
        if submit_listen == listen:
            raise ConfigError(f"{where}: submit_listen {submit_listen!r} is the node's own listen address; the "
                              f"submission listener needs its own port")
    policy = _policy(dict(_take(table, "policy", dict, where, {})), f"{where}.policy")
    _no_leftovers(table, where)
    return NodeConfig(name, address, host, listen, cert, key, data_dir, policy, metrics, triple_pool, submit,
                      submit_listen)


def load_cluster(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Load and validate a cluster file (default: $MPC_CLUSTER).

    Returns: the ClusterConfig.
    Raises: ConfigError naming the file and the key for a missing file, bad TOML, a missing
    or unknown key, a wrong type, or fewer than two nodes.
    """
    if path is None:
        path = os.environ.get("MPC_CLUSTER")
        if not path:
            raise ConfigError("no cluster file: pass --cluster FILE or set MPC_CLUSTER")
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"cluster file {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cluster file {file} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cluster file {file} is not valid TOML: {exc}") from None
    base = file.resolve().parent
    where = str(file)
    cluster = dict(_take(raw, "cluster", dict, where))
    name = _take(cluster, "name", str, f"{where} [cluster]", "mpc")
    ca = _path(base, _take(cluster, "ca", str, f"{where} [cluster]"))
    session_timeout = _take(cluster, "session_timeout_s", float, f"{where} [cluster]", 30.0)
    connect_timeout = _take(cluster, "connect_timeout_s", float, f"{where} [cluster]", 5.0)
    if not 0 < connect_timeout <= 60 or not 0 < session_timeout <= MAX_SESSION_TIMEOUT_S:
        raise ConfigError(f"{where} [cluster]: timeouts must be positive (connect <= 60 s, session <= 1 day)")
    _no_leftovers(cluster, f"{where} [cluster]")
    coordinator = None
    if "coordinator" in raw:
        table = dict(_take(raw, "coordinator", dict, where))
        cw = f"{where} [coordinator]"
        coordinator = CoordinatorConfig(
            _take(table, "name", str, cw, "coordinator"),
            _path(base, _take(table, "cert", str, cw)),
            _path(base, _take(table, "key", str, cw)),
        )
        _no_leftovers(table, cw)
    nodes_raw = _take(raw, "nodes", dict, where)
    _no_leftovers(raw, where)
    nodes = {n: _node(n, dict(t) if isinstance(t, dict) else {}, base, f"{where} [nodes.{n}]")
             for n, t in nodes_raw.items()}
    if len(nodes) < 2:
        raise ConfigError(f"{where}: a cluster needs at least two nodes, found {len(nodes)}")
    for node in nodes.values():
        _check_pins(node, f"{where} [nodes.{node.name}.policy]", list(nodes))
    return ClusterConfig(file, name, ca, nodes, coordinator, session_timeout, connect_timeout)


def _check_pins(node: NodeConfig, where: str, names: list[str]) -> None:
    """A pinned participant list must name nodes of this file, this node among them (else no session could run);
    members_to, nodes of this file."""
    tables = [("", node.policy.defaults), *((f".per_input.{n}", r) for n, r in node.policy.per_input.items())]
    for suffix, rules in tables:
        pinned = rules.participants
        if isinstance(pinned, frozenset):
            unknown = sorted(pinned - set(names))
            if unknown:
                raise ConfigError(f"{where}{suffix}: participants names nodes not in this file: {', '.join(unknown)}")
            if node.name not in pinned:
                raise ConfigError(f"{where}{suffix}: participants must include the node itself ({node.name})")
        unknown = sorted((rules.members_to or frozenset()) - set(names))
        if unknown:
            raise ConfigError(f"{where}{suffix}: members_to names nodes not in this file: {', '.join(unknown)}")
