"""numpy's OpenBLAS runs no worker threads in an mpc process (mpc/__init__.py): mpc makes no BLAS call,
and the threads OpenBLAS starts when numpy is imported spin on the CPU that nodes starting side by side
need. An operator's own OPENBLAS_NUM_THREADS is kept. Each case runs in a fresh interpreter (OpenBLAS
reads the variable once, when numpy loads); what it is worth is measured in the README, never here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Imports mpc, then a module of mpc that loads numpy (as a node or a command does), and prints the
# variable and how many threads the process then has (Linux: /proc/self/task).
SHOW = """
import json, os, sys
import mpc
loaded_first = "numpy" in sys.modules
import mpc.ring
print(json.dumps({"value": os.environ.get("OPENBLAS_NUM_THREADS"), "numpy_first": loaded_first,
                  "threads": len(os.listdir("/proc/self/task"))}))
"""


def after_import(preset: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    proc = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, timeout=60, check=True,
                          env=env)
    out: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    assert out["numpy_first"] is False   # `import mpc` itself loads no numpy: the variable is set before it
    return out


needs_proc_and_cores = pytest.mark.skipif(not Path("/proc/self/task").is_dir() or (os.cpu_count() or 1) < 2,
                                          reason="counts threads in /proc; OpenBLAS starts none on one core")


@needs_proc_and_cores
def test_numpy_in_an_mpc_process_starts_no_blas_threads() -> None:
    out = after_import(None)
    assert out["value"] == "1"
    assert out["threads"] == 1


@needs_proc_and_cores
def test_an_operators_own_setting_is_kept_and_starts_its_threads() -> None:
    out = after_import("2")
    assert out["value"] == "2"
    assert out["threads"] == 2   # the check above would see OpenBLAS's thread if it were there
