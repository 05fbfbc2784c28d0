"""`mpc submit` keeps each partial submission's seed and values in `<credential file>.pending` (mode
0600) until every node has stored its share (mpc/cli/collections.py). It writes a temporary file of a
name of its own, made anew (never written into, never through a link), and renames it over."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from mpc.cli.collections import _load_state, _save_state

STATE = {"ab" * 16: {"collection": "poll", "values": [1], "seed": "00" * 16}}


def test_the_file_is_0600_whatever_stood_at_its_name_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt.pending"
    path.write_text("someone else's")
    path.chmod(0o666)
    _save_state(path, STATE)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert _load_state(path) == STATE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["creds.txt.pending"]


def test_a_link_in_its_place_is_replaced_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt.pending"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    elsewhere.chmod(0o644)
    os.symlink(elsewhere, path)
    _save_state(path, STATE)
    assert elsewhere.read_text() == "untouched" and (elsewhere.stat().st_mode & 0o777) == 0o644
    assert not path.is_symlink() and (path.stat().st_mode & 0o777) == 0o600
    assert json.loads(path.read_text()) == STATE


def test_two_runs_saving_at_once_leave_one_whole_state(tmp_path: Path) -> None:
    """Two `mpc submit` runs on one credential file: each write has a temporary file of its own, so
    neither moves the other's half-written file into place or fails for want of its own."""
    path = tmp_path / "creds.txt.pending"
    states = [{f"{i:02x}" * 16: {"collection": "poll", "values": [i % 2], "seed": f"{i:02x}" * 16}} for i in range(2)]
    errors: list[BaseException] = []

    def save(state: dict[str, dict[str, object]]) -> None:
        try:
            for _ in range(200):
                _save_state(path, state)
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=save, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and _load_state(path) in states
    assert sorted(p.name for p in tmp_path.iterdir()) == ["creds.txt.pending"]


def test_no_pending_submission_left_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt.pending"
    _save_state(path, STATE)
    _save_state(path, {})
    assert not path.exists()
