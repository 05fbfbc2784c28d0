"""Tests of mpc.inputs: reading a CSV column and storing private values in a real node Store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mpc.errors import InputError, StoreError
from mpc.inputs import put_csv, put_values, read_csv_column
from mpc.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open_dir(tmp_path / "data")
    yield s
    s.close()


def csv_file(tmp_path: Path, text: str, name: str = "records.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def input_error(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(InputError) as err:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(err.value)


# -- read_csv_column -----------------------------------------------------------------------------


def test_column_by_name_and_by_number(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,salary\n1,1000\n2,2500.5\n")
    assert read_csv_column(path, "salary") == (["1000", "2500.5"], [2, 3])
    assert read_csv_column(path, "2") == (["1000", "2500.5"], [2, 3])
    assert read_csv_column(path, "1") == (["1", "2"], [2, 3])
    assert read_csv_column(path, "id") == (["1", "2"], [2, 3])


def test_header_names_are_stripped_and_win_over_numbers(tmp_path: Path) -> None:
    path = csv_file(tmp_path, " 2 , salary \n10,20\n")
    assert read_csv_column(path, "salary")[0] == ["20"]
    assert read_csv_column(path, "2")[0] == ["10"]  # a header named "2" is column 1


def test_byte_order_mark_is_not_part_of_the_first_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "\ufeffsalary,id\r\n10,1\r\n20,2\r\n")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_csv_column(path, "salary") == (["10", "20"], [2, 3])


@pytest.mark.parametrize(("text", "expected"), [
    ("v,w\n1,a\n2,b\n3,c\n\n", (["1", "2", "3"], [2, 3, 4])),
    ("v\n1\n2\n\n\n\n", (["1", "2"], [2, 3])),
    ("v\r\n1\r\n\r\n\r\n", (["1"], [2])),
    ('v,w\n1,"a\nb"\n2,c\n\n', (["1", "2"], [3, 4])),  # a quoted newline counts (a record's last line)
])
def test_empty_lines_at_the_end_are_no_records(tmp_path: Path, text: str,
                                               expected: tuple[list[str], list[int]]) -> None:
    assert read_csv_column(csv_file(tmp_path, text), "v") == expected


@pytest.mark.parametrize(("text", "column", "line"), [
    ("v\n1\n\n2\n", "v", 3),                # one column: an empty line is a blank cell
    ("v\n1\n2\n3\n4\n\n\n5\n", "1", 6),     # the first of several empty lines, data after them
    ("v\n1\n   \n2\n", "v", 3),             # whitespace only
    ("v\n1\n2\n \t \n", "v", 4),            # whitespace only on the last line is still a cell
    ('v\n1\n""\n', "v", 3),                 # a quoted empty cell
    ("v,w\n1,a\n\n2,b\n", "w", 3),          # several columns: an empty line is no record either
    ("v,w\n1,a\n , \n", "v", 3),
    ("v,w\n1,a\n2,\n3,c\n", "w", 3),        # the other cells are not blank
    ("v,w\n1,a\n2,b\n3,c\n4,d\n,e\n", "v", 6),
])
def test_a_blank_cell_is_refused_naming_file_line_and_column(tmp_path: Path, text: str, column: str,
                                                             line: int) -> None:
    path = csv_file(tmp_path, text)
    message = input_error(read_csv_column, path, column)
    assert message.startswith(f"{path} line {line}, column {column!r}:") and "blank" in message


def test_a_blank_cell_in_another_column_is_not_an_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "v,w\n1,\n2, \n3,c\n")
    assert read_csv_column(path, "v") == (["1", "2", "3"], [2, 3, 4])
    assert "line 2, column 'w'" in input_error(read_csv_column, path, "w")


def test_quoted_cells(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 'name,v\n"Smith, J",1\n"x ""y""",2\n')
    assert read_csv_column(path, "v")[0] == ["1", "2"]
    assert read_csv_column(path, "name")[0] == ["Smith, J", 'x "y"']


@pytest.mark.parametrize("column", ["salry", "0", "3", "-1", ""])
def test_missing_column_lists_the_header(tmp_path: Path, column: str) -> None:
    path = csv_file(tmp_path, "id,salary\n1,2\n")
    message = input_error(read_csv_column, path, column)
    assert str(path) in message and repr(column) in message and "id, salary" in message


@pytest.mark.parametrize("first", ["1,2", "3800", "-2.5, 1e3", "2024,2025"])
def test_a_file_without_its_header_row_is_refused_not_read_a_value_short(tmp_path: Path, first: str) -> None:
    path = csv_file(tmp_path, f"{first}\n3,4\n")
    message = input_error(read_csv_column, path, "1")
    assert message.startswith(f"{path} line 1: ") and "looks like data, not a header" in message, message
    assert "add a header line" in message


def test_a_column_named_twice_in_the_header_is_refused(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "a,b,a\n1,2,3\n")
    assert input_error(read_csv_column, path, "a") == f"{path} line 1: the header names column 'a' more than once"
    assert read_csv_column(path, "b")[0] == ["2"]                 # another column of the file is read


def test_short_row_names_its_line(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,salary\n1,2\n5,6\n3\n4,5\n")
    message = input_error(read_csv_column, path, "salary")
    assert str(path) in message and "line 4" in message and "1 column(s)" in message


def test_empty_file(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "")
    message = input_error(read_csv_column, path, "1")
    assert str(path) in message and "empty" in message


@pytest.mark.parametrize("text", ["salary\n", "salary", "salary\n\n\n", "salary\r\n\r\n"])
def test_no_data_rows(tmp_path: Path, text: str) -> None:
    path = csv_file(tmp_path, text)
    message = input_error(read_csv_column, path, "salary")
    assert str(path) in message and "no data rows" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    message = input_error(read_csv_column, path, "1")
    assert str(path) in message and "does not exist" in message


def test_a_directory_cannot_be_read(tmp_path: Path) -> None:
    assert "cannot be read" in input_error(read_csv_column, tmp_path, "1")


def test_csv_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "v\n1\n2\n" + "x" * 200_000 + "\n")  # beyond csv's field size limit
    message = input_error(read_csv_column, path, "v")
    assert str(path) in message and "line 4" in message


def test_a_file_that_is_not_utf8_is_an_input_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "salary\n1\ncaf\u00e9\n", encoding="latin-1")
    message = input_error(read_csv_column, path, "salary")
    assert message.startswith(f"{path} line 3: ") and "not valid UTF-8" in message and "0xE9" in message


def utf8_lines(count: int, width: int = 1) -> list[bytes]:
    return [b"v,w"] + [str(i).zfill(width).encode() + b",x" for i in range(1, count)]


@pytest.mark.parametrize(("line", "bad", "newline"), [
    (1, b"\xff", b"\n"), (2, b"\xe9", b"\n"), (5, b"\xc3", b"\r\n"), (5, b"\x80", b"\r"),
    (7, b"\xed\xa0\x80", b"\n"),  # an encoded surrogate is not UTF-8 either
    (3000, b"\xfe", b"\n"),       # far beyond the first read chunk of the file
])
@pytest.mark.parametrize("where", ["start", "end"])
def test_a_bad_byte_names_its_file_line(tmp_path: Path, line: int, bad: bytes, newline: bytes,
                                        where: str) -> None:
    rows = utf8_lines(4000, 6)
    rows[line - 1] = bad + rows[line - 1] if where == "start" else rows[line - 1] + bad
    path = tmp_path / "records.csv"
    path.write_bytes(b"\xef\xbb\xbf" + newline.join(rows) + newline)
    for column in ("v", "w"):  # whichever column is read: the whole line is checked
        message = input_error(read_csv_column, path, column)
        assert message.startswith(f"{path} line {line}: ") and "not valid UTF-8" in message
        assert f"0x{bad[0]:02X}" in message


def test_a_bad_byte_inside_a_quoted_multiline_cell_names_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(b'v,w\n1,"first\nsecond\nth\xe9rd"\n2,y\n')
    assert input_error(read_csv_column, path, "v").startswith(f"{path} line 4: ")
    path.write_bytes(b'v,w\n1,"first\nsecond"\n2,y\n3,\xe9\n')
    assert input_error(read_csv_column, path, "v").startswith(f"{path} line 5: ")


def test_a_truncated_character_at_the_end_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes("v\n1\n2\u00e9".encode()[:-1])
    assert input_error(read_csv_column, path, "v").startswith(f"{path} line 3: ")


def test_valid_utf8_is_read_unchanged(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "caf\u00e9,\u20ac\n\u00e9t\u00e9,1\n\U0001f600,2\n")
    assert read_csv_column(path, "\u20ac") == (["1", "2"], [2, 3])
    assert read_csv_column(path, "caf\u00e9") == (["\u00e9t\u00e9", "\U0001f600"], [2, 3])


# -- put_values ----------------------------------------------------------------------------------


def test_scalar_integer_is_exact(store: Store) -> None:
    assert put_values(store, "age", ["42"], scalar=True) == (1, 0)
    stored = store.get_input("age")
    assert stored.values.tolist() == [42] and stored.frac_bits == 0 and stored.is_scalar


def test_scalar_takes_exactly_one_value(store: Store) -> None:
    assert "exactly one value, got 2" in input_error(put_values, store, "age", ["1", "2"], scalar=True)
    with pytest.raises(StoreError):
        store.get_input("age")


def test_vector_of_integers_is_exact(store: Store) -> None:
    big = str((1 << 62) + 1)
    assert put_values(store, "v", ["1", "-2", big], bounds=("-" + big, big)) == (3, 0)
    stored = store.get_input("v")
    assert stored.values.tolist() == [1, -2, (1 << 62) + 1]
    assert stored.frac_bits == 0 and not stored.is_scalar


def test_reals_use_16_fractional_bits(store: Store) -> None:
    assert put_values(store, "r", ["1.5", "2", "-0.25"]) == (3, 16)
    stored = store.get_input("r")
    assert stored.values.tolist() == [3 << 15, 2 << 16, -(1 << 14)] and stored.frac_bits == 16


@pytest.mark.parametrize(("texts", "bits", "expected"), [
    (["1.5"], 8, [384]), (["3", "4"], 4, [48, 64]), (["0.3"], 2, [1]), (["2.5"], 32, [5 << 31]),
    (["2.0", "1e3", "-4.00"], 0, [2, 1000, -4]), (["0", "0.0", "-0e5"], 16, [0, 0, 0]),
])
def test_frac_bits_override(store: Store, texts: list[str], bits: int, expected: list[int]) -> None:
    assert put_values(store, "x", texts, frac_bits=bits) == (len(texts), bits)
    stored = store.get_input("x")
    assert stored.values.tolist() == expected and stored.frac_bits == bits


@pytest.mark.parametrize(("texts", "kwargs", "refused", "said"), [
    (["1", "0.6", "0"], {"kind": "ballots", "frac_bits": 0, "bounds": ("0", "1")}, "value 2", "stored rounded, as 1"),
    (["0", "1.5", "2"], {"kind": "options", "frac_bits": 0, "bounds": ("0", "2")}, "value 2", "stored rounded, as 2"),
    (["10.49", "12"], {"kind": "bids", "frac_bits": 0}, "value 1", "stored rounded, as 10"),
    (["2.5"], {"frac_bits": 0}, "value 1", "not a whole number"),
    (["3", "4"], {"frac_bits": 0, "bounds": ("0.5", "10")}, "bound '0.5'", "not a whole number"),
    (["1e-9", "2"], {}, "value 1", "would be stored as 0 at 16 fractional bits"),
    (["5", "0.000001"], {"frac_bits": 16}, "value 2", "would be stored as 0 at 16 fractional bits"),
])
def test_what_fixed_point_would_change_beyond_rounding_is_refused(store: Store, texts: list[str],
                                                                 kwargs: dict[str, object], refused: str,
                                                                 said: str) -> None:
    """A ballot of 0.6 was stored as a yes, option 1.5 as option 2, a bid of 10.49 as 10, each printed as
    "exact integers"; 1e-9 was stored as 0. Refused, naming the value, and nothing is stored."""
    message = input_error(put_values, store, "x", texts, **kwargs)
    assert refused in message and said in message, message
    with pytest.raises(StoreError):
        store.get_input("x")


def test_frac_bits_out_of_range(store: Store) -> None:
    assert "fractional bits" in input_error(put_values, store, "x", ["1"], frac_bits=33)


def test_bad_value_names_its_position_and_stores_nothing(store: Store) -> None:
    message = input_error(put_values, store, "salary", ["1", "2", "lots"])
    assert "input 'salary', value 3" in message
    message = input_error(put_values, store, "salary", ["1", "nan"], source="argument")
    assert "input 'salary', argument 2" in message
    assert store.list_inputs() == []


def test_overwrite_is_refused_unless_asked(store: Store) -> None:
    put_values(store, "x", ["1", "2"])
    with pytest.raises(StoreError, match="already exists"):
        put_values(store, "x", ["3"])
    assert store.get_input("x").values.tolist() == [1, 2]
    assert put_values(store, "x", ["3.5"], overwrite=True) == (1, 16)
    stored = store.get_input("x")
    assert stored.values.tolist() == [7 << 15] and stored.frac_bits == 16


def test_values_are_shared_with_another_store_handle(store: Store) -> None:
    put_values(store, "x", ["5"])
    with Store(store.path) as other:
        assert other.get_input("x").values.tolist() == [5]


# -- put_csv -------------------------------------------------------------------------------------


def test_put_csv_stores_a_column(store: Store, tmp_path: Path) -> None:
    path = csv_file(tmp_path, "\ufeffid,salary\n1,1000\n2,2500\n\n")
    assert put_csv(store, "salary", path, "salary") == (2, 0)
    stored = store.get_input("salary")
    assert stored.values.tolist() == [1000, 2500] and stored.frac_bits == 0 and not stored.is_scalar


def test_put_csv_reals_and_override(store: Store, tmp_path: Path) -> None:
    path = csv_file(tmp_path, "v\n1.25\n2\n")
    assert put_csv(store, "a", path, "1") == (2, 16)
    assert store.get_input("a").values.tolist() == [5 << 14, 2 << 16]
    assert put_csv(store, "b", path, "v", frac_bits=2) == (2, 2)
    assert store.get_input("b").values.tolist() == [5, 8]


@pytest.mark.parametrize("bad", ["abc", "", "nan", "1e999", "--5"])
def test_put_csv_bad_cell_names_file_and_line(store: Store, tmp_path: Path, bad: str) -> None:
    path = csv_file(tmp_path, f"id,salary\n1,10\n4,40\n2,{bad}\n3,30\n")
    message = input_error(put_csv, store, "salary", path, "salary", frac_bits=0)
    assert str(path) in message and "line 4" in message and "'salary'" in message
    assert store.list_inputs() == []


def test_put_csv_overwrite_refusal_propagates(store: Store, tmp_path: Path) -> None:
    path = csv_file(tmp_path, "v\n1\n")
    put_csv(store, "v", path, "v")
    with pytest.raises(StoreError, match="already exists"):
        put_csv(store, "v", csv_file(tmp_path, "v\n2\n", "other.csv"), "v")
    assert store.get_input("v").values.tolist() == [1]
    put_csv(store, "v", csv_file(tmp_path, "v\n2\n3\n", "other.csv"), "v", overwrite=True)
    assert store.get_input("v").values.tolist() == [2, 3]


def test_put_csv_read_errors_propagate(store: Store, tmp_path: Path) -> None:
    assert "does not exist" in input_error(put_csv, store, "v", tmp_path / "none.csv", "v")
    assert "no column" in input_error(put_csv, store, "v", csv_file(tmp_path, "a\n1\n"), "v")
    assert store.list_inputs() == []
