"""Which gRPC listener mpc's servers run (mpc/__init__.py): gRPC's classic one, set through
GRPC_EXPERIMENTS before gRPC starts, whatever entry point loads mpc first; an operator's own setting
is kept. Each case runs in a fresh interpreter, since gRPC reads the variable once. What it is worth
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


@pytest.mark.parametrize(("preset", "expected"), [
    (None, "-event_engine_listener"),                            # nothing set: the classic listener
    ("", "-event_engine_listener"),
    ("tcp_rcv_lowat", "tcp_rcv_lowat,-event_engine_listener"),   # another experiment of the operator's: both
    ("event_engine_listener", "event_engine_listener"),          # the operator's own word on this one wins
    ("-event_engine_listener", "-event_engine_listener"),
])
def test_servers_get_the_classic_listener_unless_the_operator_says_otherwise(preset: str | None,
                                                                              expected: str) -> None:
    assert experiments_after_import(preset) == expected


def test_this_test_process_runs_the_setting_too() -> None:
    """The suite's own servers run what the nodes run (tests/__init__.py imports mpc before grpc)."""
    assert mpc.GRPC_EXPERIMENT in os.environ.get("GRPC_EXPERIMENTS", "").split(",")
