#!/usr/bin/env python3
"""Check one compose demo's result and that no party's input reached any other party.

Run by deploy/e2e/run.sh on what it collected from the demo's containers and volumes:

    DIR/containers/NAME.out, NAME.err   stdout and stderr of every container (`docker logs`)
    DIR/containers/NAME.json            `docker inspect` of every container
    DIR/containers/coordinator-run.out  stdout of a second `docker-compose run coordinator`
    DIR/volumes/VOLUME.tar              the contents of every volume of the project

A container or volume belongs to party P when its compose name is P or starts with "P-"
(alice, alice-input, alice-data, alice-tls); the others (certs, ca, coordinator,
coordinator-tls) belong to no party.

What is checked (each failure names the file and the reason; exit 1 if any):

1. The result: the coordinator printed exactly the expected line (the average of the scalars,
   or only YES/NO for ballots), both as part of `up` and in the second `run`.
2. Mounts: a party's containers mount only that party's volumes; a container of no party
   mounts no party's data volume, and only the `certs` job mounts the CA's volume or other
   parties' TLS volumes (it made them).
3. Keys: each TLS volume holds exactly the CA certificate and that party's own certificate
   and key (mode 0600); the CA key is only in the `ca` volume.
4. Stores: each node's data volume holds one store with exactly one input, that node's own
   value(s), declared as the demo declares it (ballots for a referendum, stored with
   `--ballots`; a number input with the demo's `--bounds`), and its release log names no
   other input; no other volume holds a store or any SQLite database at all. (Read with
   sqlite3 from the volume copy.)
5. Scalars only: the value, as a decimal word and as the 8-byte little-endian int64 the store
   keeps it as, occurs in no log, no container configuration (command, environment, labels,
   mounts) and no volume file of any other party or of the coordinator or certs job. As a
   positive control both forms must be found where they belong (the owner's store and the
   owner's input job), which shows the search would see a leak in those formats.
   Ballots are 0/1, so a byte or string search for them is meaningless (any "1" matches
   everywhere). For them the checks are 1, 2 and 4: the coordinator's whole output is the one
   word YES or NO (no tally, no count), each ballot vector is stored only in its own node's
   volume, and no container but the node's own and its input job ever had that volume.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import struct
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

STORE_PREFIX = "node.sqlite3"
SQLITE_MAGIC = b"SQLite format 3\x00"
MPC_UID = 10001


@dataclass
class Report:
    """Collects failures and what passed."""

    failures: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, why: str = "") -> None:
        """Record `what` as passed, or as failed with `why`."""
        if ok:
            self.passed.append(what)
        else:
            self.failures.append(f"{what}: {why}" if why else what)


def owner(name: str, parties: list[str]) -> str | None:
    """The party a compose service or volume name belongs to, or None."""
    for p in parties:
        if name == p or name.startswith(p + "-"):
            return p
    return None


def short_volume(full: str, project: str) -> str:
    """`raises_alice-data` -> `alice-data`."""
    prefix = project + "_"
    return full[len(prefix):] if full.startswith(prefix) else full


def load_containers(d: Path) -> dict[str, dict]:
    """Every collected container by its name (service, or service-N for several)."""
    out = {}
    for j in sorted((d / "containers").glob("*.json")):
        info = json.loads(j.read_text())
        info = info[0] if isinstance(info, list) else info
        out[j.stem] = info
    return out


def service_of(info: dict) -> str:
    """The compose service label of a container."""
    return info["Config"]["Labels"].get("com.docker.compose.service", "")


def config_text(info: dict) -> str:
    """What a container was given: command, entrypoint, environment, labels, mounts."""
    cfg = info.get("Config", {})
    given = {k: cfg.get(k) for k in ("Cmd", "Entrypoint", "Env", "Labels", "User", "WorkingDir")}
    given["Mounts"] = info.get("Mounts")
    return json.dumps(given, sort_keys=True)


def volume_files(tar_path: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """Regular files in a volume copy: name -> (content, mode, uid, gid)."""
    files = {}
    with tarfile.open(tar_path) as t:
        for m in t.getmembers():
            if m.isfile():
                f = t.extractfile(m)
                files[m.name.removeprefix("./")] = (f.read() if f else b"", m.mode, m.uid, m.gid)
    return files


@dataclass
class Store:
    """What a node's store holds: its inputs, what each declares in public, and its release log."""

    inputs: dict[str, tuple[list[int], int, bool]]     # name -> (values, frac_bits, is_scalar)
    declared: dict[str, tuple[str, int | None, int | None]]  # name -> (kind, lo, hi), as encoded
    released: list[str]                                 # the input name of every release


def read_store(files: dict[str, tuple[bytes, int, int, int]]) -> Store:
    """A store (with its WAL) from a volume copy."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, (data, *_rest) in files.items():
            if name.startswith(STORE_PREFIX):
                (Path(tmp) / name).write_bytes(data)
        con = sqlite3.connect(Path(tmp) / STORE_PREFIX)
        try:
            rows = con.execute("SELECT name, data, frac_bits, is_scalar FROM inputs").fetchall()
            meta = con.execute("SELECT name, kind, lo, hi FROM input_meta").fetchall()
            released = [n for (n,) in con.execute("SELECT input_name FROM releases")]
        finally:
            con.close()
    return Store({name: (list(struct.unpack(f"<{len(blob) // 8}q", blob)), bits, bool(scalar))
                  for name, blob, bits, scalar in rows},
                 {name: (kind, lo, hi) for name, kind, lo, hi in meta}, released)


def expected_result(kind: str, values: dict[str, list[int]]) -> str:
    """The line the coordinator must print."""
    flat = [v for vs in values.values() for v in vs]
    if kind == "scalar":
        total = sum(flat)
        return f"{total / len(flat)!r}  (revealed: sum {total}, count {len(flat)})"
    yes = sum(flat)
    return "YES" if 2 * yes >= len(flat) else "NO"


def main() -> int:
    """Run every check; print what passed and what failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--project", required=True)
    ap.add_argument("--input", required=True, help="the input name the demo stores")
    ap.add_argument("--kind", choices=["scalar", "ballots"], required=True)
    ap.add_argument("--bounds", metavar="LO,HI", default=None,
                    help="the bounds the input jobs declare (integers; default -2147483647,2147483647; "
                         "ballots: always 0,1)")
    ap.add_argument("--party", action="append", required=True, metavar="NAME=V[,V...]")
    args = ap.parse_args()

    values = {}
    for spec in args.party:
        name, _, vs = spec.partition("=")
        values[name] = [int(v) for v in vs.split(",")]
    parties = list(values)
    if args.kind == "ballots":
        bounds = (0, 1)
    elif args.bounds is None:
        bounds = (-2147483647, 2147483647)
    else:
        lo, _, hi = args.bounds.partition(",")
        bounds = (int(lo), int(hi))
    declared = ("ballots" if args.kind == "ballots" else "number", *bounds)
    r = Report()
    containers = load_containers(args.dir)
    volumes = {short_volume(p.stem, args.project): volume_files(p) for p in sorted((args.dir / "volumes").glob("*.tar"))}
    logs = {p.name: p.read_bytes() for p in sorted((args.dir / "containers").glob("*.out"))}
    logs.update({p.name: p.read_bytes() for p in sorted((args.dir / "containers").glob("*.err"))})

    # 1. The result.
    want = expected_result(args.kind, values)
    for name in ("coordinator.out", "coordinator-run.out"):
        got = logs.get(name, b"").decode(errors="replace").splitlines()
        r.check(got == [want], f"result: {name} is exactly {want!r}", f"got {got!r}")

    # 2. Mounts.
    for cname, info in containers.items():
        svc = service_of(info)
        me = owner(svc, parties)
        for m in info.get("Mounts", []):
            if m.get("Type") != "volume":
                continue
            vol = short_volume(m["Name"], args.project)
            vo = owner(vol, parties)
            if me is not None:
                r.check(vo == me, f"mounts: {svc} mounts only {me}'s volumes", f"it mounts {vol}")
            elif svc == "certs":
                r.check(not vol.endswith("-data"), "mounts: certs mounts no data volume", f"it mounts {vol}")
            else:
                r.check(vo is None and vol != "ca", f"mounts: {svc} mounts no party's volume and not the CA's",
                        f"it mounts {vol}")

    # 3. Keys.
    for vol, files in volumes.items():
        keys = sorted(n for n in files if n.endswith(".key"))
        if vol == "ca":
            r.check("ca.key" in keys, "keys: the CA key is in the ca volume")
            continue
        r.check("ca.key" not in keys, f"keys: no CA key in {vol}")
        if vol.endswith("-tls"):
            party = vol.removesuffix("-tls")
            stem = party if party in parties else f"coordinator-{party}"
            r.check(sorted(files) == sorted(["ca.pem", f"{stem}.pem", f"{stem}.key"]),
                    f"keys: {vol} holds only ca.pem, {stem}.pem and {stem}.key", f"it holds {sorted(files)}")
            if f"{stem}.key" in files:
                _, mode, uid, _ = files[f"{stem}.key"]
                r.check(mode & 0o077 == 0 and uid == MPC_UID, f"keys: {vol}/{stem}.key is 0600, uid {MPC_UID}",
                        f"mode {mode:o}, uid {uid}")
        else:
            r.check(not keys, f"keys: no private key in {vol}", f"found {keys}")

    # 4. Stores.
    for vol, files in volumes.items():
        has_store = STORE_PREFIX in files
        p = owner(vol, parties)
        if p is not None and vol == f"{p}-data":
            r.check(has_store, f"store: {vol} holds {p}'s store")
            if has_store:
                store = read_store(files)
                inputs = store.inputs
                ok = list(inputs) == [args.input] and inputs[args.input][0] == values[p]
                r.check(ok, f"store: {vol} holds only {p}'s own {args.input!r}",
                        f"it holds {sorted(inputs)} (values {'match' if ok else 'differ'})")
                got = store.declared.get(args.input)
                r.check(got == declared, f"store: {vol} declares {args.input!r} as {declared[0]} in "
                        f"[{declared[1]}, {declared[2]}]", f"it declares {got}")
                r.check(bool(store.released) and set(store.released) == {args.input},
                        f"store: {vol}'s release log records the demo's {args.input!r} and nothing else",
                        f"it records {sorted(set(store.released)) or 'no release'}")
        else:
            dbs = sorted(n for n, (data, *_) in files.items()
                         if n.startswith(STORE_PREFIX) or data.startswith(SQLITE_MAGIC))
            r.check(not dbs, f"store: no store or other SQLite database in {vol}", f"found {dbs}")

    # 5. Scalars: byte and string search everywhere else, with positive controls.
    if args.kind == "scalar":
        for p, (v,) in values.items():
            word = re.compile(rb"(?<![0-9A-Za-z_])" + str(v).encode() + rb"(?![0-9A-Za-z_])")
            raw = struct.pack("<q", v)
            seen_raw_home = any(raw in data for data, *_ in volumes.get(f"{p}-data", {}).values())
            r.check(seen_raw_home, f"control: {p}'s {v} found as int64 in {p}-data (the search sees the store format)")
            home_cfg = [config_text(i) for i in containers.values() if service_of(i) == f"{p}-input"]
            r.check(any(word.search(t.encode()) for t in home_cfg),
                    f"control: {p}'s {v} found in {p}-input's command (the search sees configuration)")
            for vol, files in volumes.items():
                if owner(vol, parties) == p:
                    continue
                hits = [n for n, (data, *_) in files.items() if raw in data or word.search(data)]
                r.check(not hits, f"leak: {p}'s {v} not in volume {vol}", f"found in {hits}")
            for cname, info in containers.items():
                svc = service_of(info)
                if owner(svc, parties) == p:
                    continue
                r.check(not word.search(config_text(info).encode()), f"leak: {p}'s {v} not in {cname}'s configuration")
                for ext in ("out", "err"):
                    data = logs.get(f"{cname}.{ext}", b"")
                    r.check(not (word.search(data) or raw in data), f"leak: {p}'s {v} not in {cname}'s std{ext}")
            for extra in ("coordinator-run.out", "coordinator-run.err"):
                data = logs.get(extra, b"")
                r.check(not (word.search(data) or raw in data), f"leak: {p}'s {v} not in {extra}")

    if not containers or not volumes:
        r.check(False, "artifacts", f"nothing collected in {args.dir}")
    for f in r.failures:
        print(f"FAIL {f}", file=sys.stderr)
    print(f"{args.project}: {len(r.passed)} checks passed, {len(r.failures)} failed "
          f"({len(containers)} containers, {len(volumes)} volumes)")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
