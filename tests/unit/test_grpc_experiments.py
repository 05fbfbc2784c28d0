"""Which gRPC endpoints mpc's servers and clients run (mpc/__init__.py): gRPC's classic ones, set through
GRPC_EXPERIMENTS before gRPC starts, whatever entry point loads mpc first; an operator's own setting
is kept, and its word on either one wins. Each case runs in a fresh interpreter, since gRPC reads the variable once. What it is worth
is measured in benchmarks/ab.py, never here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mpc

# Prints what GRPC_EXPERIMENTS holds after `import mpc`, and whether that import loaded grpc (it must
# not: every module of mpc that does is imported after the package, so the variable is set first).
SHOW = """
import json, os, sys
import mpc
print(json.dumps({"value": os.environ.get("GRPC_EXPERIMENTS"), "grpc_loaded": "grpc" in sys.modules}))
"""


def experiments_after_import(preset: str | None) -> str | None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if preset is not None:
        env["GRPC_EXPERIMENTS"] = preset
    proc = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, timeout=60, check=True,
                          env=env)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert not out["grpc_loaded"]
    value: str | None = out["value"]
    return value


CLASSIC = "-event_engine_listener,-event_engine_client"


@pytest.mark.parametrize(("preset", "expected"), [
    (None, CLASSIC),                                             # nothing set: the classic listener and client
    ("", CLASSIC),
    ("tcp_rcv_lowat", "tcp_rcv_lowat," + CLASSIC),               # another experiment of the operator's: all
    ("event_engine_listener", "event_engine_listener,-event_engine_client"),   # the operator's word on one wins
    ("-event_engine_listener", "-event_engine_listener,-event_engine_client"),
    ("event_engine_client", "event_engine_client,-event_engine_listener"),
    (" event_engine_client ,-event_engine_listener", " event_engine_client ,-event_engine_listener"),
    # A name that merely contains one of ours is another experiment.
    ("event_engine_client_channel_resolver", "event_engine_client_channel_resolver," + CLASSIC),
])
def test_servers_and_clients_get_the_classic_endpoints_unless_the_operator_says_otherwise(preset: str | None,
                                                                                          expected: str) -> None:
    assert experiments_after_import(preset) == expected


def test_this_test_process_runs_the_setting_too() -> None:
    """The suite's own servers and clients run what the nodes and the CLI run (tests/__init__.py imports
    mpc before grpc)."""
    assert set(mpc.GRPC_EXPERIMENTS) <= set(os.environ.get("GRPC_EXPERIMENTS", "").split(","))
