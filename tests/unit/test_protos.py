"""The committed protobuf modules under mpc/v1/ are exactly what tools/protogen.py makes from protos/."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "mpc" / "v1"
GENERATED_FILES = ("mpc_pb2.py", "mpc_pb2.pyi", "mpc_pb2_grpc.py")


def load_protogen() -> ModuleType:
    """Import tools/protogen.py from its path (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_protogen_under_test", REPO / "tools" / "protogen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protos")
    load_protogen().generate(out)
    return out / "mpc" / "v1"


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_committed_module_matches_a_fresh_generation(generated: Path, name: str) -> None:
    fresh = generated / name
    assert fresh.is_file(), f"tools/protogen.py did not produce mpc/v1/{name}"
    assert (COMMITTED / name).read_bytes() == fresh.read_bytes(), (
        f"mpc/v1/{name} differs from what protos/ generates: run `make protos`"
    )


def test_every_generated_file_is_committed(generated: Path) -> None:
    produced = sorted(p.name for p in generated.iterdir() if p.is_file())
    assert set(produced) <= {p.name for p in COMMITTED.iterdir()}, (
        f"protoc generates {produced} but some are not under mpc/v1/: run `make protos`"
    )
    assert set(produced) == set(GENERATED_FILES), f"update GENERATED_FILES in this test: protoc made {produced}"
