"""`mpc submit` keeps each partial submission's seed and values in `<credential file>.pending` (mode
0600) until every node has stored its share (mpc/cli/collections.py). It writes a temporary file and
renames it over: one found in the way is replaced, never written into or followed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mpc.cli.collections import _load_state, _save_state

STATE = {"ab" * 16: {"collection": "poll", "values": [1], "seed": "00" * 16}}


def test_a_temporary_file_left_world_readable_is_replaced_not_written_into(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt.pending"
    tmp = tmp_path / ".creds.txt.pending.tmp"
    tmp.write_text("someone else's")
    tmp.chmod(0o666)
    _save_state(path, STATE)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert _load_state(path) == STATE and not tmp.exists()


def test_a_link_in_the_way_is_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt.pending"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    elsewhere.chmod(0o644)
    os.symlink(elsewhere, tmp_path / ".creds.txt.pending.tmp")
    _save_state(path, STATE)
    assert elsewhere.read_text() == "untouched" and (elsewhere.stat().st_mode & 0o777) == 0o644
    assert not path.is_symlink() and (path.stat().st_mode & 0o777) == 0o600
    assert json.loads(path.read_text()) == STATE


def test_no_pending_submission_left_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt.pending"
    _save_state(path, STATE)
    _save_state(path, {})
    assert not path.exists()
