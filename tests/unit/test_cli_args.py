"""Arguments the `mpc` parser refuses as usage errors (exit 2, a message naming the value), before
any cluster file is read or any node is asked: no traceback reaches the user; and negative values
it must read as values, not as options."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpc.cli.app import main
from mpc.cli.helptext import seconds


@pytest.mark.parametrize("command", [["sum", "x"], ["average", "x"], ["vote", "x"], ["threshold", "x", "--at-least", "1"],
                                     ["health", "--name", "alice"]])
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "1e300", "86401", "abc", ""])
def test_a_timeout_outside_0_to_a_day_is_a_usage_error_naming_it(command: list[str], value: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, f"--timeout={value}", "--cluster", "/nonexistent/cluster.toml"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --timeout: a number of seconds above 0 and at most 86400, got {value!r}" in err, err
    assert "Traceback" not in err


def test_seconds_takes_what_a_deadline_may_be() -> None:
    assert [seconds(s) for s in ("0.001", "2.5", "30", "86400")] == [0.001, 2.5, 30.0, 86400.0]


def test_negative_values_with_an_exponent_are_values_not_options(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--data-dir", str(tmp_path)]
    assert main(["input", "put", "y", "-1e5", "--bounds", "-1e6,1E+6", *store]) == 0
    assert "stored 'y' version 1" in capsys.readouterr().out
    assert main(["input", "put", "z", "-inf", *store]) == 1     # reaches the value's own check
    assert "input 'z', value 1: '-inf' is not a finite number" in capsys.readouterr().err
