"""mpc vs MPyC, same machine, one run, each party its own process on loopback, TLS on for both.

    make bench                      # or: .venv/bin/python benchmarks/run.py [--big] [--json FILE]

Prints a Markdown table: computation time (after start-up) and end to end, and the ratios
MPyC / mpc (higher is better for mpc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mpc_runner import run_mpc_sum  # noqa: E402
from benchmarks.mpyc_runner import run_mpyc_sum  # noqa: E402


def _row(name: str, ours: dict[str, object], theirs: dict[str, object]) -> str:
    oc, tc = float(ours["compute_s"]), float(theirs["compute_s"])  # type: ignore[arg-type]
    oe, te = float(ours["end_to_end_s"]), float(theirs["end_to_end_s"])  # type: ignore[arg-type]
    return (f"| {name} | {oc:.4f} | {tc:.4f} | {tc / oc:.1f}x | {oe:.2f} | {te:.2f} | {te / oe:.1f}x |"
            f" {'yes' if ours['ok'] and theirs['ok'] else 'NO'} |")


def main() -> int:
    """Run the comparisons and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="vector lengths for the 3-party sum")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results: list[dict[str, object]] = []
    rows = []
    for length in sizes:
        ours, theirs = run_mpc_sum(length), run_mpyc_sum(length, timeout=900)
        results.append({"case": f"sum3-{length}", "mpc": ours, "mpyc": theirs})
        rows.append(_row(f"3-party sum, L = {length:,}", ours, theirs))
    ours, theirs = run_mpc_sum(1, raises=True), run_mpyc_sum(1, scalar_raises=True)
    results.append({"case": "raises4", "mpc": ours, "mpyc": theirs})
    rows.append(_row("4-party scalar sum (raises)", ours, theirs))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| case | mpc compute (s) | MPyC compute (s) | MPyC/mpc | mpc end to end (s) | MPyC end to end (s) "
          "| MPyC/mpc | both correct |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
