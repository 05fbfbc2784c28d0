"""mpc: secure multiparty computation daemons (secure sum, average, voting) over mutual-TLS gRPC."""

import os as _os

__version__ = "0.1.0"

# The longest deadline a session may have: a node caps what a coordinator asks for at this, a cluster
# file's session_timeout and the CLI's --timeout may not exceed it, nor may Coordinator.open's.
MAX_SESSION_TIMEOUT_S = 24 * 3600.0

# gRPC reads GRPC_EXPERIMENTS (its doc/environment_variables.md) once, when it starts, so this runs
# before any module of mpc imports grpc. Servers here keep gRPC's classic TCP listener instead of the
# EventEngine one that 1.85 turns on by default ("event_engine_listener"): with the EventEngine one,
# every message a node receives takes one more hand-over between threads before its event loop sees
# it, and a vote, then eight rounds of small messages between the nodes, took 6-10% longer
# (benchmarks/ab.py; README, "Performance"). An operator's own GRPC_EXPERIMENTS is kept, and so is
# its own word on this one.
GRPC_EXPERIMENT = "-event_engine_listener"
_chosen = _os.environ.get("GRPC_EXPERIMENTS", "")
if "event_engine_listener" not in _chosen:
    _os.environ["GRPC_EXPERIMENTS"] = f"{_chosen},{GRPC_EXPERIMENT}" if _chosen else GRPC_EXPERIMENT
