"""Loading a node owner's private values (command line or CSV) into the node's local store.

This runs on the node's own machine and writes the node's SQLite file directly: no remote
API can set or read a private input.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from mpc.encoding import encode_texts
from mpc.errors import InputError
from mpc.ring import Signed
from mpc.store import Store


def read_csv_column(path: Path, column: str) -> tuple[list[str], list[int]]:
    """Read one column of a CSV file with a header row.

    `column` is a header name, or a 1-based column number.

    Returns: (cell texts, the file line number of each cell).
    Raises: InputError naming the file and line for a missing file or column, a byte that is
    not UTF-8, a short row, a blank cell in the column (an empty line is a blank cell too, but
    empty lines at the end of the file are no records), or a file with no data rows.
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
        if column in names:
            index = names.index(column)
        elif column.isdigit() and 1 <= int(column) <= len(names):
            index = int(column) - 1
        else:
            raise InputError(f"{path}: no column {column!r} (header has: {', '.join(names)})")
        texts: list[str] = []
        lines: list[int] = []
        empty_line = 0  # the first empty line not (yet) followed by a record: none at the end
        try:
            for row in reader:
                if not row:
                    empty_line = empty_line or reader.line_num
                    continue
                if empty_line:
                    raise InputError(f"{path} line {empty_line}, column {column!r}: the line is empty, so the "
                                     f"cell is blank (only empty lines at the end of the file are ignored)")
                if index >= len(row):
                    raise InputError(f"{path} line {reader.line_num}: the row has {len(row)} column(s), "
                                     f"column {column!r} is number {index + 1}")
                if not row[index].strip():
                    raise InputError(f"{path} line {reader.line_num}, column {column!r}: the cell is blank")
                texts.append(row[index])
                lines.append(reader.line_num)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path} line {reader.line_num}: {exc}") from None
    if not texts:
        raise InputError(f"{path}: no data rows under the header")
    return texts, lines


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
    encoded, bits = encode_texts([*texts, *extra], frac_bits,
                                 lambda i: where(i) if i < n else f"bound {extra[i - n]!r}")
    declared = None if bounds is None else (int(encoded[n]), int(encoded[n + 1]))
    return encoded[:n], bits, declared


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
