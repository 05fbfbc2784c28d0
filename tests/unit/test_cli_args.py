"""Arguments the `mpc` parser refuses as usage errors (exit 2, a message naming the value), before
any cluster file is read or any node is asked: no traceback reaches the user."""

from __future__ import annotations

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
