"""Loading a node owner's private values (command line or CSV) into the node's local store.

This runs on the node's own machine and writes the node's SQLite file directly: no remote
API can set or read a private input.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mpc.encoding import encode_texts
from mpc.errors import InputError
from mpc.store import Store


def read_csv_column(path: Path, column: str) -> tuple[list[str], list[int]]:
    """Read one column of a CSV file with a header row.

    `column` is a header name, or a 1-based column number.

    Returns: (cell texts, the file line number of each cell).
    Raises: InputError naming the file and line for a missing file or column, a short row,
    or a file with no data rows.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"CSV file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"CSV file {path} cannot be read: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
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
        try:
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue  # blank lines carry no record
                if index >= len(row):
                    raise InputError(f"{path} line {reader.line_num}: the row has {len(row)} column(s), "
                                     f"column {column!r} is number {index + 1}")
                texts.append(row[index])
                lines.append(reader.line_num)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path} line {reader.line_num}: {exc}") from None
    if not texts:
        raise InputError(f"{path}: no data rows under the header")
    return texts, lines


def put_values(store: Store, name: str, texts: Sequence[str], *, frac_bits: int | None = None,
               scalar: bool = False, overwrite: bool = False, source: str = "") -> tuple[int, int]:
    """Encode values and store them as private input `name`.

    Returns: (number of values, fractional bits used).
    Raises: InputError naming the value's position (or `source` line) when one is bad;
    StoreError when the name exists and overwrite is False.
    """
    if scalar and len(texts) != 1:
        raise InputError(f"input {name!r}: a scalar takes exactly one value, got {len(texts)}")
    values, bits = encode_texts(texts, frac_bits, lambda i: f"input {name!r}, {source or 'value'} {i + 1}")
    store.put_input(name, values, bits, scalar, overwrite=overwrite)
    return values.size, bits


def put_csv(store: Store, name: str, path: Path, column: str, *, frac_bits: int | None = None,
            overwrite: bool = False) -> tuple[int, int]:
    """Store one CSV column as a private vector input.

    Returns: (number of values, fractional bits used).
    Raises: InputError naming the file and line of a bad cell; StoreError as put_values.
    """
    texts, lines = read_csv_column(path, column)
    values, bits = encode_texts(texts, frac_bits, lambda i: f"{path} line {lines[i]}, column {column!r}")
    store.put_input(name, values, bits, False, overwrite=overwrite)
    return values.size, bits
