"""Quick commands stay quick: what `mpc --version`, `mpc --help`, `mpc health` and `mpc status` import.

numpy, grpc, cryptography and the protocol catalogue each take a large part of a second to import
on a small machine. The CLI imports them only in the commands that use them (mpc/cli/app.py), and
loading a cluster file needs the catalogue only for a policy that names protocols or thresholds
(mpc/config.py). Checked by what ends up in sys.modules of a fresh interpreter, never by timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpc.localcluster import write_local_cluster

# Runs `mpc ARGS...` in this interpreter and prints, last, its exit code and every module loaded.
RUN = """
import json, sys
from mpc.cli.app import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
HEAVY = ("numpy", "grpc", "cryptography", "nacl", "mpc.protocols.catalogue", "mpc.coordinator.client",
         "mpc.node.daemon")


def run_mpc(*argv: str) -> tuple[object, set[str]]:
    """Run `mpc ARGV...` in a fresh interpreter.

    Returns: its exit code and the names of the modules it had imported at the end.
    """
    proc = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True, timeout=60,
                          check=True)
    last = json.loads(proc.stdout.splitlines()[-1])
    return last["code"], set(last["modules"])


@pytest.fixture(scope="module")
def cluster_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cluster file with certificates whose nodes are not running (its ports are free)."""
    return write_local_cluster(tmp_path_factory.mktemp("startup"), ["alice", "bob", "carol"])


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_import_nothing_heavy(argv: list[str]) -> None:
    code, modules = run_mpc(*argv)
    assert code == 0
    assert [m for m in HEAVY if m in modules] == []


# Besides the protocol names (mpc/protocols/names.py), nothing of mpc.protocols.
ENGINES = ("mpc.protocols.catalogue", "mpc.protocols.sum", "mpc.protocols.compute", "mpc.events")


def test_health_imports_neither_numpy_nor_the_protocols(cluster_file: Path) -> None:
    code, modules = run_mpc("health", "--cluster", str(cluster_file), "--name", "alice", "--timeout", "0.2")
    assert code == 1     # nothing serves there: PeerUnavailable, after the whole health check ran
    assert "grpc" in modules
    assert [m for m in ("numpy", "cryptography", *ENGINES) if m in modules] == []


def test_a_policy_that_names_protocols_and_thresholds_loads_without_the_catalogue(tmp_path: Path) -> None:
    """The compose referendum's nodes name protocols and vote rules in their policies: their
    healthchecks (`mpc health`) still load neither numpy nor the catalogue."""
    path = write_local_cluster(tmp_path, ["alice", "bob", "carol"],
                               every_policy='protocols = ["vote", "sum"]\nthresholds = ["half", 7]\n'
                                            'allow = { sum = ["raises"] }')
    code, modules = run_mpc("health", "--cluster", str(path), "--name", "alice", "--timeout", "0.2")
    assert code == 1
    assert [m for m in ("numpy", *ENGINES) if m in modules] == []


def test_the_protocol_names_are_the_catalogues() -> None:
    from mpc.protocols.catalogue import HALF, NAMES
    from mpc.protocols.names import HALF as NAMES_HALF
    from mpc.protocols.names import PROTOCOL_NAMES
    assert NAMES == PROTOCOL_NAMES and HALF == NAMES_HALF


def test_status_imports_neither_numpy_nor_the_protocols(cluster_file: Path) -> None:
    code, modules = run_mpc("status", "--cluster", str(cluster_file))
    assert code == 1     # every node DOWN
    assert "mpc.coordinator.client" in modules
    # decode_value lives in mpc.fixedpoint and COUNTS_HIDDEN in mpc.config, both without numpy.
    assert [m for m in ("numpy", "cryptography", "mpc.store", "mpc.dp", *ENGINES) if m in modules] == []
