"""Loading a node owner's private values (command line or CSV) into the node's local store.

This runs on the node's own machine and writes the node's SQLite file directly: no remote
API can set or read a private input. A set of identifiers for a private set intersection is
read from a CSV column too, normalised by a documented rule (IDENTIFIER_RULES).
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from mpc.encoding import INT64_MAX, MAX_FRAC_BITS, default_bounds, encode_texts
from mpc.errors import InputError, quoted
from mpc.ring import Signed
from mpc.store import MAX_IDENTIFIER_BYTES, Store


_NUMBER = re.compile(r"^(?=[^eE]*\d)[+-]?\d*\.?\d*([eE][+-]?\d+)?$")   # what a cell of values looks like


def read_csv_column(path: Path, column: str) -> tuple[list[str], list[int]]:
    """Read one column of a CSV file with a header row.

    `column` is a header name, or a 1-based column number.

    Returns: (cell texts, the file line number of each cell).
    Raises: InputError naming the file and line for a missing file or column, a byte that is
    not UTF-8, a short row, a blank cell in the column (an empty line is a blank cell too, but
    empty lines at the end of the file are no records), or a file with no data rows.
    """
    (texts,), lines = read_csv_columns(path, [column])
    return texts, lines


def read_csv_columns(path: Path, columns: Sequence[str]) -> tuple[list[list[str]], list[int]]:
    """Read some columns of a CSV file with a header row, as read_csv_column reads one.

    Each of `columns` is a header name, or a 1-based column number; no two may be the same column.

    Returns: (the cell texts of each column, in the order of `columns`; the file line number of each row).
    Raises: InputError as read_csv_column, naming the column for a short row or a blank cell, and
    for two of `columns` that are the same column.
    """
    try:
        # A bad byte decodes to a lone surrogate (which valid UTF-8 never yields), so that it is
        # caught line by line below, with its line number, rather than somewhere in a read chunk.
        handle = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except FileNotFoundError:
        raise InputError(f"CSV file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"CSV file {path} cannot be read: {exc.strerror}") from None
    with handle:
        def checked(numbered: tuple[int, str]) -> str:
            number, line = numbered
            if not line.isascii():
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError as exc:
                    byte = ord(line[exc.start]) - 0xDC00
                    raise InputError(f"{path} line {number}: the file is not valid UTF-8 (byte 0x{byte:02X} "
                                     f"at character {exc.start + 1} of the line); save it as UTF-8") from None
            return line

        # csv's line_num counts the lines it takes, as `number` does (quoted newlines included).
        reader = csv.reader(map(checked, enumerate(handle, 1)))
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: the file is empty (expected a header row)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path} line {reader.line_num}: {exc}") from None
        names = [h.strip() for h in header]
        if names and all(_NUMBER.match(n) for n in names):   # a file without its header row
            raise InputError(f"{path} line 1: {quoted(','.join(names), 60)} looks like data, not a header; the "
                             f"first line names the columns (add a header line)")
        if not columns:
            raise InputError(f"{path}: no column to read")
        indices: list[int] = []
        for column in columns:
            if names.count(column) > 1:
                raise InputError(f"{path} line 1: the header names column {column!r} more than once")
            if column in names:
                index = names.index(column)
            elif column.isdigit() and 1 <= int(column) <= len(names):
                index = int(column) - 1
            else:
                raise InputError(f"{path}: no column {column!r} (header has: {', '.join(names)})")
            if index in indices:
                raise InputError(f"{path}: columns {columns[indices.index(index)]!r} and {column!r} are the same "
                                 f"column (number {index + 1})")
            indices.append(index)
        wanted = list(zip(columns, indices))
        widest = max(wanted, key=lambda c: c[1])
        cells: list[list[str]] = [[] for _ in columns]
        lines: list[int] = []
        empty_line = 0  # the first empty line not (yet) followed by a record: none at the end
        try:
            for row in reader:
                if not row:
                    empty_line = empty_line or reader.line_num
                    continue
                if empty_line:
                    raise InputError(f"{path} line {empty_line}, column {columns[0]!r}: the line is empty, so "
                                     f"the cell is blank (only empty lines at the end of the file are ignored)")
                if widest[1] >= len(row):
                    column, index = next(c for c in wanted if c[1] >= len(row))
                    raise InputError(f"{path} line {reader.line_num}: the row has {len(row)} column(s), "
                                     f"column {column!r} is number {index + 1}")
                for (column, index), out in zip(wanted, cells):
                    if not row[index].strip():
                        raise InputError(f"{path} line {reader.line_num}, column {column!r}: the cell is blank")
                    out.append(row[index])
                lines.append(reader.line_num)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path} line {reader.line_num}: {exc}") from None
    if not lines:
        raise InputError(f"{path}: no data rows under the header")
    return cells, lines


def parse_bounds(text: str) -> tuple[str, str]:
    """Split "LO,HI" (decimals; either may be negative or real).

    Returns: the two texts. Raises: InputError if it is not two values separated by a comma.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"bounds {text[:60]!r} must be LO,HI, e.g. --bounds 0,10000")
    return parts[0], parts[1]


def _encode_with_bounds(texts: Sequence[str], bounds: tuple[str, str] | None, frac_bits: int | None,
                        where: Callable[[int], str]) -> tuple[Signed, int, tuple[int, int] | None]:
    """Encode values and their declared bounds at one scale (a real bound makes it fixed point)."""
    extra = list(bounds) if bounds is not None else []
    n = len(texts)
    every = [*texts, *extra]

    def named(i: int) -> str:
        return where(i) if i < n else f"bound {extra[i - n]!r}"
    encoded, bits = encode_texts(every, frac_bits, named)
    _check_not_lost(every, encoded, bits, named)
    declared = None if bounds is None else (int(encoded[n]), int(encoded[n + 1]))
    return encoded[:n], bits, declared


def _check_not_lost(texts: Sequence[str], encoded: Signed, bits: int, where: Callable[[int], str]) -> None:
    """Refuse what fixed point would change beyond its documented rounding: at 0 fractional bits (exact
    integers: numbers, and every ballot, option, bid and curve) a value that is not a whole number, which
    would be stored rounded (a ballot of 0.6 as a yes, an option 1.5 as option 2); at any scale a value
    that is not zero but would be stored as 0.

    Raises: InputError naming the value and what it would have become.
    """
    if bits == 0:
        suspects = [i for i, t in enumerate(texts) if not _INTEGER.match(t.strip())]
    else:
        suspects = [int(i) for i in np.flatnonzero(encoded == 0)]
    for i in suspects:
        exact = Fraction(texts[i].strip()) * (1 << bits)
        if bits == 0 and exact.denominator != 1:
            raise InputError(f"{where(i)}: {quoted(texts[i].strip(), 40)} is not a whole number, and at 0 fractional "
                             f"bits (exact integers) it would be stored rounded, as {int(encoded[i])}; give whole "
                             f"numbers, or (for plain numbers) --frac-bits above 0")
        if bits > 0 and exact != 0 and int(encoded[i]) == 0:
            finest = abs(Fraction(texts[i].strip())) * (1 << MAX_FRAC_BITS) >= Fraction(1, 2)
            raise InputError(f"{where(i)}: {quoted(texts[i].strip(), 40)} is not zero but would be stored as 0 at "
                             f"{bits} fractional bits; " + ("give --frac-bits large enough for it (at most "
                                                            f"{MAX_FRAC_BITS})" if finest else
                                                            f"it is below what {MAX_FRAC_BITS} fractional bits, "
                                                            f"the finest scale, can hold: scale the values up"))


def put_values(store: Store, name: str, texts: Sequence[str], *, frac_bits: int | None = None,
               scalar: bool = False, overwrite: bool = False, source: str = "",
               bounds: tuple[str, str] | None = None, ballots: bool = False,
               kind: str = "number") -> tuple[int, int]:
    """Encode values and store them as private input `name`, with their declared bounds.

    Args:
        bounds: (LO, HI) as decimal text; default +-2147483647 (ballots: 0 and 1; options: 0..K-1).
        ballots: the values are 0/1 ballots for a yes/no vote; their number is never shown by a node.
        kind: what the input is (mpc.store.KINDS): "options" (with bounds 0,K-1) for `mpc vote --options`,
            "curve" for `mpc clearing-price`, "bids" for `mpc auction`.
    Returns: (number of values, fractional bits used).
    Raises: InputError naming the value's position (or `source` line) when one is bad or
    outside the bounds; StoreError when the name exists and overwrite is False.
    """
    if scalar and len(texts) != 1:
        raise InputError(f"input {name!r}: a scalar takes exactly one value, got {len(texts)}")
    if (ballots or kind != "number") and scalar:
        raise InputError(f"input {name!r}: {'ballots' if ballots else kind} are a vector (one value is stored as "
                         f"a vector of one)")
    values, bits, declared = _encode_with_bounds(texts, bounds, frac_bits,
                                                 lambda i: f"input {name!r}, {source or 'value'} {i + 1}")
    store.put_input(name, values, bits, scalar, overwrite=overwrite, bounds=declared, ballots=ballots, kind=kind)
    return values.size, bits


def put_csv(store: Store, name: str, path: Path, column: str, *, frac_bits: int | None = None,
            overwrite: bool = False, bounds: tuple[str, str] | None = None,
            ballots: bool = False, kind: str = "number") -> tuple[int, int]:
    """Store one CSV column as a private vector input.

    Returns: (number of values, fractional bits used).
    Raises: InputError naming the file and line of a bad cell; StoreError as put_values.
    """
    texts, lines = read_csv_column(path, column)
    values, bits, declared = _encode_with_bounds(texts, bounds, frac_bits,
                                                 lambda i: f"{path} line {lines[i]}, column {column!r}")
    store.put_input(name, values, bits, False, overwrite=overwrite, bounds=declared, ballots=ballots, kind=kind)
    return values.size, bits


# How a CSV cell becomes a set's identifier (bytes); the same rule must be used by every node that
# intersects its set with another's, or equal identifiers written differently will not match.
IDENTIFIER_RULES = {
    "exact": "the cell's UTF-8 bytes exactly as they are (no trimming, no case folding)",
    "casefold": "Unicode NFKC, then surrounding whitespace stripped, then str.casefold(), then UTF-8",
}
DUPLICATES = ("refuse", "merge")
# Unicode category Cc: the C0 controls, DEL and the C1 controls (tab and newline included).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_INTEGER = re.compile(r"[+-]?[0-9]{1,40}\Z")


def normalise_identifier(text: str, normalise: str = "exact") -> bytes:
    """Turn a cell into a set's identifier by the rule `normalise` (IDENTIFIER_RULES).

    "exact": the text's UTF-8 bytes as they are. "casefold": Unicode NFKC, then surrounding
    whitespace stripped, then str.casefold(), then UTF-8 (so " Ａlice\u00a0" and "ALICE" match).

    Returns: the identifier.
    Raises: InputError (naming no value) for an unknown rule, or an identifier that is empty after
    normalisation, longer than MAX_IDENTIFIER_BYTES bytes, or containing a control character
    (Unicode category Cc: U+0000-U+001F and U+007F-U+009F, tab and newline included; under
    "casefold", surrounding ones are stripped first, as whitespace).
    """
    if normalise == "casefold":
        text = unicodedata.normalize("NFKC", text).strip().casefold()
    elif normalise != "exact":
        raise InputError(f"unknown identifier normalisation {normalise[:20]!r}; known: {', '.join(IDENTIFIER_RULES)}")
    if not text:
        raise InputError("the identifier is empty after normalisation")
    if _CONTROL.search(text) is not None:
        raise InputError("the identifier contains a control character")
    identifier = text.encode("utf-8")
    if len(identifier) > MAX_IDENTIFIER_BYTES:
        raise InputError(f"the identifier is longer than {MAX_IDENTIFIER_BYTES} bytes in UTF-8")
    return identifier


def _parse_integer(text: str, where: str) -> int:
    """Returns: `text` as an int64 integer. Raises: InputError naming `where` (never the text)."""
    t = text.strip()
    if _INTEGER.match(t) is None or not -INT64_MAX <= int(t) <= INT64_MAX:
        raise InputError(f"{where}: the value is not an integer within +-{INT64_MAX} (a set's values are exact "
                         f"integers: no decimals, exponents or separators)")
    return int(t)


def _read_set(path: Path, column: str, value_column: str | None, normalise: str,
              duplicates: str) -> tuple[list[bytes], list[int] | None, list[int], dict[int, list[int]]]:
    """read_set_csv, with where each entry came from.

    Returns: (identifiers, values or None, the line of each identifier's first occurrence, the
    lines of each merged duplicate by entry index).
    """
    if normalise not in IDENTIFIER_RULES:
        raise InputError(f"unknown identifier normalisation {normalise[:20]!r}; known: {', '.join(IDENTIFIER_RULES)}")
    if duplicates not in DUPLICATES:
        raise InputError(f"duplicates must be one of {', '.join(DUPLICATES)}, got {duplicates[:20]!r}")
    cells, lines = read_csv_columns(path, [column] if value_column is None else [column, value_column])
    identifiers: list[bytes] = []
    values: list[int] | None = None if value_column is None else []
    first: list[int] = []
    merged: dict[int, list[int]] = {}
    seen: dict[bytes, int] = {}
    for row, (text, line) in enumerate(zip(cells[0], lines)):
        try:
            identifier = normalise_identifier(text, normalise)
        except InputError as exc:
            raise InputError(f"{path} line {line}, column {column!r}: {exc}") from None
        value = 0
        if value_column is not None:
            value = _parse_integer(cells[1][row], f"{path} line {line}, column {value_column!r}")
        at = seen.get(identifier)
        if at is None:
            seen[identifier] = len(identifiers)
            identifiers.append(identifier)
            first.append(line)
            if values is not None:
                values.append(value)
            continue
        if duplicates == "refuse":
            rule = "exact bytes" if normalise == "exact" else "after case folding"
            raise InputError(f"{path} lines {first[at]} and {line}, column {column!r}: the same identifier "
                             f"({rule}); a set's identifiers are distinct (--merge-duplicates keeps the "
                             f"first and adds the values)")
        merged.setdefault(at, []).append(line)
        if values is not None:
            values[at] += value
            if not -INT64_MAX <= values[at] <= INT64_MAX:
                raise InputError(f"{path} line {line}, column {value_column!r}: adding this duplicate's value to "
                                 f"that of line {first[at]} leaves the int64 range")
    return identifiers, values, first, merged


def read_set_csv(path: Path, column: str, value_column: str | None = None, *, normalise: str = "exact",
                 duplicates: str = "refuse") -> tuple[list[bytes], list[int] | None]:
    """Read a set of identifiers, and optionally an integer value for each, from a CSV file.

    Each cell of `column` is normalised by the rule `normalise` (IDENTIFIER_RULES): "exact" keeps the
    cell's UTF-8 bytes exactly as they are (no trimming); "casefold" applies Unicode NFKC, then strips
    surrounding whitespace, then str.casefold(), then encodes in UTF-8. A blank cell is refused under
    either rule (as read_csv_column refuses it), and so is a malformed identifier: empty after
    normalisation, longer than MAX_IDENTIFIER_BYTES (256) bytes, or containing a control character
    (Unicode category Cc). The values of `value_column` are exact integers (no fixed point).

    Args:
        duplicates: what to do with an identifier that occurs again after normalisation: "refuse"
            it, or "merge" it into its first occurrence (which keeps its place), adding the values.
    Returns: (the distinct identifiers in the order of their first occurrence, their values or None
    without `value_column`).
    Raises: InputError naming the file and line(s), never an identifier or a value: as
    read_csv_columns, a malformed identifier, a value that is not an integer within int64, a
    refused duplicate (both lines), a merged sum that leaves int64.
    """
    identifiers, values, _, _ = _read_set(path, column, value_column, normalise, duplicates)
    return identifiers, values


def put_set_csv(store: Store, name: str, path: Path, column: str, *, value_column: str | None = None,
                normalise: str = "exact", duplicates: str = "refuse",
                bounds: tuple[int | str, int | str] | None = None, overwrite: bool = False) -> int:
    """Read a set from a CSV file (read_set_csv) and store it as set input `name` (Store.put_set).

    Args:
        bounds: the declared [lo, hi] of the values, as integers or decimal integer texts (default
            +-2147483647); only with `value_column`.
    Returns: the new version of the input.
    Raises: InputError as read_set_csv, for bounds that are not integers or a value (or the sum of
    merged duplicates' values) outside them, naming the line(s); StoreError as Store.put_set.
    """
    declared: tuple[int, int] | None = None
    if bounds is not None:
        if value_column is None:
            raise InputError(f"input {name!r}: bounds declare a set's values, and it has no value column")
        lo, hi = (b if isinstance(b, int) else _parse_integer(b, f"input {name!r}: bound {b[:40]!r}") for b in bounds)
        declared = (lo, hi)
    identifiers, values, first, merged = _read_set(path, column, value_column, normalise, duplicates)
    if values is None:
        return store.put_set(name, identifiers, None, overwrite=overwrite)
    lo, hi = default_bounds(0) if declared is None else declared
    if lo <= hi:   # else Store.put_set refuses the bounds themselves
        for at, value in enumerate(values):
            if not lo <= value <= hi:
                where = ", ".join(str(n) for n in [first[at], *merged.get(at, [])])
                what = "the sum of the values" if at in merged else "the value"
                hint = "" if declared is not None else " (the default, +-2147483647: declare wider ones with --bounds)"
                raise InputError(f"{path} line{'s' if at in merged else ''} {where}, column {value_column!r}: "
                                 f"{what} lies outside the declared bounds{hint}; nothing was stored")
    return store.put_set(name, identifiers, np.array(values, dtype=np.int64), bounds=declared, overwrite=overwrite)
