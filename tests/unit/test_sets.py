"""Set inputs for private set intersection (issue 14, item 1): the store's `set` kind and its
`set_members` table, the identifiers' normalisation and CSV reading, and `mpc input put-set`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mpc.store.inputs as store_inputs
from mpc.cli.app import main
from mpc.errors import InputError, StoreError
from mpc.inputs import IDENTIFIER_RULES, normalise_identifier, put_set_csv, read_csv_column, read_set_csv
from mpc.store import (
    _MIGRATIONS,
    KINDS,
    COUNTS_HIDDEN,
    MAX_IDENTIFIER_BYTES,
    MAX_SET_SIZE,
    SCHEMA_VERSION,
    Store,
    StoredSet,
)

SECRET = b"SECRET-ID-7f3a9c"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open_dir(tmp_path / "data")
    yield s
    s.close()


def csv_file(tmp_path: Path, text: str, name: str = "ids.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def input_error(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(InputError) as err:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(err.value)


def members_row(store: Store, name: str) -> tuple[object, ...] | None:
    with sqlite3.connect(store.path) as conn:
        row = conn.execute("SELECT size, has_values FROM set_members WHERE name = ?", (name,)).fetchone()
    return None if row is None else tuple(row)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# -- the store ------------------------------------------------------------------------------------


def test_set_is_a_kind_whose_size_is_public() -> None:
    assert "set" in KINDS and "set" not in COUNTS_HIDDEN
    assert (MAX_SET_SIZE, MAX_IDENTIFIER_BYTES) == (1_000_000, 256)


def test_round_trip_keeps_identifiers_values_and_order(store: Store) -> None:
    ids = [b"zed", SECRET, b"\x00\xffbinary", b"a" * MAX_IDENTIFIER_BYTES, "é".encode()]
    assert store.put_set("patients", ids, ints(5, -7, 0, 2**31 - 1, 3), bounds=(-10, 2**31 - 1)) == 1
    got = store.get_set("patients")
    assert isinstance(got, StoredSet)
    assert (got.name, got.version, got.identifiers, got.has_values, got.bounds) == (
        "patients", 1, tuple(ids), True, (-10, 2**31 - 1))
    assert got.values.dtype == np.int64 and got.values.tolist() == [5, -7, 0, 2**31 - 1, 3]
    assert not got.values.flags.writeable
    for text in (repr(got), str(got), repr([got])):
        assert "SECRET" not in text and "2147483647" not in text and "size=5" in text
    # The other readers see a set as an input of kind "set", its length the set's size.
    stored = store.get_input("patients")
    assert (stored.kind, stored.values.tolist(), stored.frac_bits, stored.is_scalar) == (
        "set", [5, -7, 0, 2**31 - 1, 3], 0, False)
    declared, yes, length = store.get_declared("patients")
    assert (declared.kind, declared.version, declared.bounds, yes, length) == ("set", 1, (-10, 2**31 - 1), 0, 5)
    (info,) = store.list_inputs()
    assert (info.kind, info.length, info.has_values, info.bounds, info.frac_bits) == (
        "set", 5, True, (-10, 2**31 - 1), 0)
    assert "SECRET" not in repr(store.list_inputs())


def test_a_set_without_values_stores_zeros_and_default_bounds(store: Store) -> None:
    store.put_set("ids", [b"b", b"a"])
    got = store.get_set("ids")
    assert (got.identifiers, got.values.tolist(), got.has_values, got.bounds) == (
        (b"b", b"a"), [0, 0], False, (-2147483647, 2147483647))
    assert store.list_inputs()[0].has_values is False
    assert members_row(store, "ids") == (2, 0)


def test_schema_6_adds_the_set_kind_and_its_table() -> None:
    assert SCHEMA_VERSION == len(_MIGRATIONS) == 9   # 7: release_queries (tests/unit/test_releases.py)
    # The earlier steps are as they were: only step 6 knows of sets.
    assert not any("set_members" in s or "'set'" in s for step in _MIGRATIONS[:5] for s in step)
    assert any("set_members" in s for s in _MIGRATIONS[5]) and any("'set'" in s for s in _MIGRATIONS[5])


def test_migration_from_a_version_5_store_keeps_every_input(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    raw = sqlite3.connect(path)
    for statement in [s for step in _MIGRATIONS[:5] for s in step]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 5")
    blob = np.array([3, 1], dtype="<i8").tobytes()
    raw.execute("INSERT INTO inputs VALUES ('bid', 2, 0, 0, 't', 't', ?)", (blob,))
    raw.execute("INSERT INTO input_meta VALUES ('bid', 4, 'bids', 0, 10, NULL, NULL)")
    raw.execute("INSERT INTO inputs VALUES ('poll', 2, 0, 0, 't', 't', ?)", (np.array([0, 2], dtype="<i8").tobytes(),))
    raw.execute("INSERT INTO input_meta VALUES ('poll', 1, 'options', 0, 2, NULL, '[1,0,1]')")
    with pytest.raises(sqlite3.IntegrityError):     # schema 5 knows no sets
        raw.execute("INSERT INTO input_meta VALUES ('s', 1, 'set', 0, 1, NULL, NULL)")
    raw.commit()
    raw.close()
    with Store(path) as store:
        bid = store.get_input("bid")
        assert (bid.kind, bid.version, bid.bounds, bid.values.tolist()) == ("bids", 4, (0, 10), [3, 1])
        assert store.get_declared("poll")[0].tally == (1, 0, 1)
        assert store.put_set("bid", [b"x"], overwrite=True) == 5          # versions go on
        assert store.get_set("bid").identifiers == (b"x",)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with pytest.raises(sqlite3.IntegrityError):  # the CHECK still refuses unknown kinds
            conn.execute("INSERT INTO input_meta VALUES ('z', 1, 'zzz', 0, 1, NULL, NULL)")


@pytest.mark.parametrize("identifiers, values, bounds, message", [
    ([], None, None, "input 's': the set is empty"),
    ([b"a", b"", b"c"], None, None, "input 's': identifier 2 is empty"),
    ([b"a", b"x" * 257], None, None, "input 's': identifier 2 is longer than 256 bytes"),
    ([b"a", SECRET, b"c", SECRET], None, None, "input 's': identifiers 2 and 4 are equal"),
    ([b"a", "b"], None, None, "input 's': identifier 2 is not bytes (got str)"),
    (b"abc", None, None, "the identifiers must be a sequence of bytes, got bytes"),
    ([b"a", b"b"], ints(1), None, "input 's': 1 values for 2 identifiers"),
    ([b"a", b"b"], ints(1, 2, 3), None, "input 's': 3 values for 2 identifiers"),
    ([b"a", b"b"], ints(1, 2**31), None, "input 's': value 2 lies outside the declared bounds (the default"),
    ([b"a", b"b"], ints(5, -1), (0, 10), "input 's': value 2 lies outside the declared bounds; nothing"),
    ([b"a", b"b"], ints(1, 2), (3, 1), "input 's': the lower bound is above the upper bound"),
    ([b"a", b"b"], np.array([1.0, 2.0]), None, "input 's' must be a 1-D int64 array"),
    ([b"a", b"b"], None, (0, 1), "input 's': a set without values takes no bounds"),
])
def test_put_set_refusals_name_the_position_never_the_identifier(
        store: Store, identifiers: object, values: np.ndarray | None, bounds: tuple[int, int] | None,
        message: str) -> None:
    err = input_error(store.put_set, "s", identifiers, values, bounds=bounds)
    assert message in err and "SECRET" not in err and "2147483648" not in err
    assert store.list_inputs() == [] and members_row(store, "s") is None


def test_more_than_the_declared_limit_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_inputs, "MAX_SET_SIZE", 3)
    store.put_set("s", [b"a", b"b", b"c"])
    err = input_error(store.put_set, "t", [b"a", b"b", b"c", b"d"])
    assert "input 't': at most 3 identifiers per set, got 4" in err


def test_put_input_refuses_the_set_kind_and_get_set_a_non_set(store: Store) -> None:
    assert "put-set" in input_error(store.put_input, "s", ints(1), 0, False, kind="set")
    store.put_input("n", ints(1, 2), 0, False)
    assert "input 'n' is not a set (it holds number)" in input_error(store.get_set, "n")
    with pytest.raises(StoreError, match="no input named 'missing'"):
        store.get_set("missing")


def test_existing_name_needs_overwrite_and_the_set_members_row_follows_the_input(store: Store) -> None:
    assert store.put_set("s", [b"a", b"b"], ints(1, 2)) == 1
    with pytest.raises(StoreError, match="already exists"):
        store.put_set("s", [b"c"])
    assert store.get_set("s").identifiers == (b"a", b"b")
    assert store.put_set("s", [b"c"], overwrite=True) == 2                 # replaced, in one transaction
    assert (store.get_set("s").identifiers, members_row(store, "s")) == ((b"c",), (1, 0))
    assert store.put_input("s", ints(7), 0, True, overwrite=True) == 3     # now a number: identifiers gone
    assert members_row(store, "s") is None
    assert "not a set" in input_error(store.get_set, "s")
    assert store.put_set("s", [b"d", b"e"], ints(4, 5), overwrite=True) == 4
    assert members_row(store, "s") == (2, 1)
    store.delete_input("s")
    assert members_row(store, "s") is None and store.list_inputs() == []
    assert store.put_set("s", [b"f"]) == 5                                 # versions are never reused


def test_identifiers_are_not_left_in_the_file_after_delete(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    with Store(path) as s:
        s.put_set("x", [SECRET + bytes([i]) for i in range(50)])
        s.delete_input("x")
    for f in tmp_path.iterdir():
        assert SECRET not in f.read_bytes(), f.name


# -- normalisation ----------------------------------------------------------------------------------


def test_exact_keeps_the_bytes_as_they_are() -> None:
    assert normalise_identifier(" Bob ", "exact") == b" Bob "
    assert normalise_identifier("Ｂob", "exact") == "Ｂob".encode()
    assert "exact bytes" in IDENTIFIER_RULES["exact"] or "exactly" in IDENTIFIER_RULES["exact"]


@pytest.mark.parametrize("text, expected", [
    ("  Alice ", b"alice"),
    ("ＡＬＩＣＥ", b"alice"),            # fullwidth letters: NFKC
    ("Straße", b"strasse"),              # casefold, not lower
    ("\u00a0Bob\u2003", b"bob"),         # NFKC turns these spaces into spaces, then they are stripped
    ("\ufb01le", b"file"),               # the ligature fi: NFKC
    ("e\u0301", "é".encode()),           # composed by NFKC
    ("\tCarol\n", b"carol"),             # surrounding control characters are whitespace, stripped
    ("Dan Smith", b"dan smith"),         # inner whitespace is kept
])
def test_casefold_is_nfkc_then_strip_then_casefold(text: str, expected: bytes) -> None:
    assert normalise_identifier(text, "casefold") == expected


@pytest.mark.parametrize("text, normalise, message", [
    ("", "exact", "empty after normalisation"),
    (" \u3000 ", "casefold", "empty after normalisation"),
    ("a\tb", "exact", "contains a control character"),
    ("a\x85b", "casefold", "contains a control character"),   # C1 control
    ("\tab", "exact", "contains a control character"),
    ("x" * 257, "exact", "longer than 256 bytes"),
    ("é" * 129, "casefold", "longer than 256 bytes"),
    ("a", "lower", "unknown identifier normalisation 'lower'"),
])
def test_malformed_identifiers(text: str, normalise: str, message: str) -> None:
    assert message in input_error(normalise_identifier, text, normalise)


def test_256_bytes_is_the_inclusive_limit() -> None:
    assert len(normalise_identifier("é" * 128, "exact")) == 256


# -- CSV ------------------------------------------------------------------------------------------


def test_read_set_csv_in_file_order(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,spend\nzed,10\n Bob ,-3\nalice,0\n")
    assert read_set_csv(path, "id") == ([b"zed", b" Bob ", b"alice"], None)
    assert read_set_csv(path, "id", "spend") == ([b"zed", b" Bob ", b"alice"], [10, -3, 0])
    assert read_set_csv(path, "1", "2", normalise="casefold") == ([b"zed", b"bob", b"alice"], [10, -3, 0])


def test_duplicates_are_refused_naming_both_lines(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,spend\nBob,1\nalice,2\nbob,3\n")
    assert read_set_csv(path, "id")[0] == [b"Bob", b"alice", b"bob"]            # exact: distinct
    err = input_error(read_set_csv, path, "id", normalise="casefold")
    assert f"{path} lines 2 and 4, column 'id': the same identifier (after case folding)" in err
    assert "--merge-duplicates" in err and "bob" not in err.lower().replace(str(path).lower(), "")
    path = csv_file(tmp_path, "id\nx\nx\n", "dup.csv")
    assert "lines 2 and 3, column 'id': the same identifier (exact bytes)" in input_error(read_set_csv, path, "id")


def test_merge_keeps_the_first_and_adds_the_values(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,spend\nBob,1\nalice,2\n BOB,3\nbob ,4\ncarol,5\n")
    assert read_set_csv(path, "id", "spend", normalise="casefold", duplicates="merge") == (
        [b"bob", b"alice", b"carol"], [8, 2, 5])
    assert read_set_csv(path, "id", normalise="casefold", duplicates="merge") == ([b"bob", b"alice", b"carol"], None)
    big = 2**63 - 1
    path = csv_file(tmp_path, f"id,v\na,{big}\nb,1\na,1\n", "big.csv")
    err = input_error(read_set_csv, path, "id", "v", duplicates="merge")
    assert f"{path} line 4, column 'v': adding this duplicate's value to that of line 2 leaves the int64" in err
    assert "duplicates must be one of refuse, merge" in input_error(read_set_csv, path, "id", duplicates="keep")


def test_merged_sum_outside_the_bounds_names_the_lines(store: Store, tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,v\na,6\nb,1\na,5\n")
    err = input_error(put_set_csv, store, "s", path, "id", value_column="v", duplicates="merge", bounds=("0", "10"))
    assert f"{path} lines 2, 4, column 'v': the sum of the values lies outside the declared bounds" in err
    assert store.list_inputs() == []
    assert put_set_csv(store, "s", path, "id", value_column="v", duplicates="merge", bounds=(0, 11)) == 1
    got = store.get_set("s")
    assert (got.identifiers, got.values.tolist(), got.bounds) == ((b"a", b"b"), [11, 1], (0, 11))


@pytest.mark.parametrize("cell", ["1.5", "1e3", "abc", "1,000", "0x10", "99999999999999999999"])
def test_values_must_be_exact_integers(tmp_path: Path, cell: str) -> None:
    path = csv_file(tmp_path, f'id,v\na,1\nb,"{cell}"\n')
    err = input_error(read_set_csv, path, "id", "v")
    assert f"{path} line 3, column 'v': the value is not an integer" in err and cell not in err


def test_malformed_identifiers_in_a_file_name_the_line(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 'id\nok\n"two\nlines"\n')
    err = input_error(read_set_csv, path, "id")
    assert f"{path} line 4, column 'id': the identifier contains a control character" in err   # line_num ends it
    path = csv_file(tmp_path, "id\nok\n" + "é" * 129 + "\n", "long.csv")
    assert f"{path} line 3, column 'id': the identifier is longer than 256 bytes" in input_error(read_set_csv, path, "id")
    path = csv_file(tmp_path, "id,v\na,1\n ,2\n", "blank.csv")
    assert f"{path} line 3, column 'id': the cell is blank" in input_error(read_set_csv, path, "id", "v")
    path = csv_file(tmp_path, "id,v\na,1\nb,\n", "blankv.csv")
    assert f"{path} line 3, column 'v': the cell is blank" in input_error(read_set_csv, path, "id", "v")
    path = csv_file(tmp_path, "id,v\na,1\nb\n", "short.csv")
    assert f"{path} line 3: the row has 1 column(s), column 'v' is number 2" in input_error(
        read_set_csv, path, "id", "v")
    assert "columns 'id' and '1' are the same column" in input_error(read_set_csv, path, "id", "1")
    assert "no column 'nope'" in input_error(read_set_csv, path, "id", "nope")
    path = csv_file(tmp_path, "id\n", "empty.csv")
    assert "no data rows" in input_error(read_set_csv, path, "id")


def test_read_csv_column_still_reads_one_column(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "a,b\n1,x\n2,y\n")
    assert read_csv_column(path, "b") == (["x", "y"], [2, 3])


def test_put_set_csv_default_bounds_and_bounds_without_values(store: Store, tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,v\na,1\nb,2147483648\n")
    err = input_error(put_set_csv, store, "s", path, "id", value_column="v")
    assert f"{path} line 3, column 'v': the value lies outside the declared bounds (the default" in err
    assert "no value column" in input_error(put_set_csv, store, "s", path, "id", bounds=(0, 1))
    assert "bound '1.5'" in input_error(put_set_csv, store, "s", path, "id", value_column="v", bounds=("0", "1.5"))
    assert store.list_inputs() == []


# -- the command line -----------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_put_set_list_and_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    where = ("--data-dir", data)
    ids = csv_file(tmp_path, f"patient,cost\n{SECRET.decode()},500\nAnn ,20\nann,30\nBob,1000000\n")
    code, out, err = run(capsys, "input", "put-set", "patients", "--csv", ids, "--column", "patient",
                         "--value-column", "cost", *where)
    assert code == 0 and out.strip() == ("stored set 'patients' v1: 4 identifiers (exact bytes), values declared "
                                         "within -2147483647..2147483647"), err
    code, out, err = run(capsys, "input", "put-set", "patients", "--csv", ids, "--column", "patient",
                         "--value-column", "cost", "--casefold", "--overwrite", *where)
    assert code == 1 and "lines 3 and 4, column 'patient': the same identifier" in err
    assert "ann" not in err.lower().replace(str(ids).lower(), "")
    code, out, err = run(capsys, "input", "put-set", "patients", "--csv", ids, "--column", "patient",
                         "--value-column", "cost", "--casefold", "--merge-duplicates", "--bounds", "0,1000000",
                         "--overwrite", *where)
    assert code == 0 and out.strip() == ("stored set 'patients' v2: 3 identifiers (case-folded: NFKC, trimmed, "
                                         "casefold), values declared within 0..1000000"), err
    code, out, err = run(capsys, "input", "put-set", "members", "--csv", ids, "--column", "1", *where)
    assert code == 0 and out.strip() == "stored set 'members' v1: 4 identifiers (exact bytes), no values", err
    code, out, err = run(capsys, "input", "put-set", "x", "--csv", ids, "--column", "1", "--bounds", "-5,5", *where)
    assert code == 1 and "--bounds declares the bounds of the values: it needs --value-column" in err
    with Store.open_dir(data) as store:
        got = store.get_set("patients")
        assert got.identifiers == (SECRET.lower(), b"ann", b"bob")
        assert got.values.tolist() == [500, 50, 1000000]
    code, listing, err = run(capsys, "input", "list", *where)
    assert code == 0, err
    rows = {line.split("\t")[0]: line.split("\t") for line in listing.splitlines()}
    assert rows["patients"][1:5] == ["v2", "set[3]", "3 identifiers", "values declared within 0..1000000"]
    assert rows["members"][1:5] == ["v1", "set[4]", "4 identifiers", "no values"]
    code, listed, err = run(capsys, "input", "list", "--json", *where)
    entries = {i["name"]: i for i in json.loads(listed)}
    assert (entries["patients"]["kind"], entries["patients"]["length"], entries["patients"]["bounds"],
            entries["patients"]["has_values"]) == ("set", 3, [0, 1000000], True)
    assert entries["members"]["has_values"] is False
    for text in (listing, listed):
        assert "secret" not in text.lower() and "ann" not in text.lower() and "bob" not in text.lower()
    code, out, err = run(capsys, "input", "rm", "patients", *where)
    assert code == 0 and out.strip() == "deleted 'patients'"
    with Store.open_dir(data) as store:
        assert members_row(store, "patients") is None and members_row(store, "members") == (4, 0)
