"""mpc: secure multiparty computation daemons (secure sum, average, voting) over mutual-TLS gRPC."""

import os as _os

__version__ = "0.1.0"

# The longest deadline a session may have: a node caps what a coordinator asks for at this, a cluster
# file's session_timeout and the CLI's --timeout may not exceed it, nor may Coordinator.open's.
MAX_SESSION_TIMEOUT_S = 24 * 3600.0

# gRPC reads GRPC_EXPERIMENTS (its doc/environment_variables.md) once, when it starts, so this runs
# before any module of mpc imports grpc. mpc keeps gRPC's classic TCP endpoints instead of the
# EventEngine ones that 1.85 turns on by default: with those, every message takes one more hand-over
# between threads before the event loop sees it. Servers: "event_engine_listener" (a vote, eight rounds
# of small messages between the nodes, took 6-10% longer with it); clients, the coordinator's channels
# and a node's to its peers: "event_engine_client" (its EventEngine threads cost a coordinator a quarter
# of its CPU in a 4-party sum). Measured in benchmarks/ab.py and benchmarks/grpc_threads.py (README,
# "Performance"). An operator's own GRPC_EXPERIMENTS is kept, and so is its own word on either one.
GRPC_EXPERIMENTS = ("-event_engine_listener", "-event_engine_client")
_chosen = _os.environ.get("GRPC_EXPERIMENTS", "")
_named = {e.strip().lstrip("-") for e in _chosen.split(",")}
_added = [e for e in GRPC_EXPERIMENTS if e.lstrip("-") not in _named]
if _added:
    _os.environ["GRPC_EXPERIMENTS"] = ",".join(([_chosen] if _chosen else []) + _added)

# numpy's OpenBLAS starts a worker thread per core when numpy is imported, and on this project's 2-core
# machine that thread spun for about 0.09 s of CPU in every process (numpy's import: 0.20 s of CPU
# with it, 0.11 s with one thread), a second of CPU when ten nodes start side by side. mpc does no
# linear algebra (no BLAS call anywhere: its arrays are words, bits and sums), so one thread is all
# numpy needs here. An operator's own OPENBLAS_NUM_THREADS is kept. Only a process in which mpc is
# imported before numpy is affected (every `mpc` command and node is).
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
