"""The packages of mpc/ import only downwards (DESIGN.md §7, "Layout"): no import runs back up a layer.

Read from the source with `ast`, so a back-edge fails here whether or not it would make a cycle
at import time. Layers, lowest first; a module may import its own layer and any layer below.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "mpc"

# module or package prefix -> layer (the longest matching prefix decides)
LAYERS: dict[str, int] = {
    "mpc.v1": 0, "mpc.errors": 0, "mpc.ring": 0, "mpc.logs": 0, "mpc.fixedpoint": 0,
    "mpc.prg": 1, "mpc.encoding": 1, "mpc.sharing": 1, "mpc.events": 1, "mpc.results": 1, "mpc.pki": 1,
    "mpc.dp": 1,
    "mpc.ot": 2,
    "mpc.protocols": 3,
    "mpc.config": 4, "mpc.credentials": 4,
    "mpc.store": 5, "mpc.inputs": 5,
    "mpc.transport": 6,
    "mpc.node": 7, "mpc.coordinator": 7, "mpc.client": 7,
    "mpc.localcluster": 8,
    "mpc.cli": 9,
    "mpc": 10,   # the package's own __init__ (version)
}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mpc") and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mpc")}
    return found


def test_every_import_goes_down_or_sideways() -> None:
    back_edges = []
    for path in sorted(ROOT.rglob("*.py")):
        me = module_name(path)
        if me == "mpc":
            continue
        for target in imports(path):
            if target != "mpc" and layer(target) > layer(me):
                back_edges.append(f"{me} (layer {layer(me)}) imports {target} (layer {layer(target)})")
    assert not back_edges, "imports that run back up the layers:\n" + "\n".join(back_edges)


def test_the_layer_table_knows_every_module() -> None:
    unknown = [module_name(p) for p in ROOT.rglob("*.py")
               if not any(module_name(p) == k or module_name(p).startswith(k + ".") for k in LAYERS)]
    assert not unknown, f"modules with no layer: {unknown}"


def test_a_back_edge_is_caught() -> None:
    """The check itself can fail: an ot module importing the protocols would be reported."""
    assert layer("mpc.ot.triples") < layer("mpc.protocols.beaver")
    assert layer("mpc.transport.peers") < layer("mpc.node.core")
