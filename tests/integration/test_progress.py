"""Progress on long coordinator commands (issue 6): shown on a terminal, quiet when piped or --json.
And the metrics of a real `mpc node` process, served where its cluster-file table says.

Three `mpc node` daemons (subprocesses, mutual TLS on loopback) hold 60,000-element vectors;
`mpc threshold` compares each element's sum with K (several seconds of oblivious transfer and
comparison circuits on this machine, so well past the one-second delay). The command runs
three times: with stderr on a pseudo-terminal (the progress line appears, is redrawn, and is
erased at the end), with stderr on a pipe, and on a terminal with --json (both silent). Every
child is stopped by its PID; every wait has a deadline.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mpc.cli.progress import ERASE_TO_END as ERASE
from mpc.localcluster import NodeProcesses, write_local_cluster
from mpc.store import Store

pytestmark = pytest.mark.slow

NAMES = ("alice", "bob", "carlos")
LENGTH = 60_000
K = 150
CLI_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("progress")
    # Each daemon serves metrics on a loopback port of its own choosing; its log says which. No triple
    # pools: each command makes its triples itself, so every run takes as long (a later one would
    # otherwise take those the nodes made between runs, and could end before progress shows).
    cluster_file = write_local_cluster(workdir, NAMES, extra_node_keys={"metrics": '"127.0.0.1:0"',
                                                                        "triple_pool": "0"})
    for index, name in enumerate(NAMES):
        # Element j sums to (j % 100) + ((j + 1) % 100) + ((j + 2) % 100): about half reach K.
        values = (np.arange(LENGTH, dtype=np.int64) + index) % 100
        with Store.open_dir(workdir / "data" / name) as store:
            # A comparison needs declared bounds it can compare over 3 parties (the default is too wide).
            store.put_input("counts", values, 0, False, bounds=(0, 99))
    nodes = NodeProcesses(cluster_file, workdir / "logs")
    try:
        nodes.start_all(NAMES)
        yield cluster_file
    finally:
        nodes.stop_all()


def expected_bits() -> list[int]:
    total = sum((np.arange(LENGTH) + i) % 100 for i in range(len(NAMES)))
    return [int(t >= K) for t in total]


def run_on_terminal(*args: str, columns: int = 200) -> tuple[int, str, str]:
    """Run `mpc ARGS` with stderr on a pseudo-terminal `columns` wide; returns (exit code, stdout,
    terminal output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "mpc", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    assert proc.stdout is not None
    # Both read as they come: a result larger than a pipe's buffer (64 KiB) would otherwise block the child.
    taken = {master: bytearray(), proc.stdout.fileno(): bytearray()}
    output: dict[int, bytes] = {}
    deadline = time.monotonic() + CLI_TIMEOUT
    try:
        while taken and time.monotonic() < deadline:
            ready, _, _ = select.select(list(taken), [], [], 0.5)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:      # EIO: the child closed the terminal
                    data = b""
                if data:
                    taken[fd] += data
                else:
                    output[fd] = bytes(taken.pop(fd))
            if not ready and proc.poll() is not None and master in taken:
                output[master] = bytes(taken.pop(master))   # the terminal stays open after the child: no EOF
        if taken:
            raise AssertionError(f"mpc {' '.join(args)} still running after {CLI_TIMEOUT} s")
        return proc.wait(timeout=10), output[proc.stdout.fileno()].decode(), output[master].decode(errors="replace")
    finally:
        os.close(master)
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def frames_of(screen: str) -> list[str]:
    """The lines drawn: each is a carriage return, the text, and erase-to-end-of-line."""
    assert screen.endswith("\r" + ERASE), "the last thing drawn erases the line"
    frames = screen.split("\r")[1:-1]
    assert all(f.endswith(ERASE) for f in frames), frames
    return [f.removesuffix(ERASE) for f in frames]


def test_progress_is_drawn_on_a_terminal_and_erased(cluster: Path) -> None:
    code, out, screen = run_on_terminal("threshold", "counts", "--at-least", str(K), "--cluster", str(cluster))
    assert code == 0, screen
    assert [int(b) for b in out.split()] == expected_bits()
    frames = frames_of(screen)
    assert len(frames) >= 3, screen
    assert all(f.startswith("mpc threshold counts: ") for f in frames), frames
    assert any(re.search(r"computing; nodes exchanged [\d.]+ [kMG]?B in \d+ messages", f) for f in frames)
    seconds = [float(m.group(1)) for f in frames if (m := re.search(r": (\d+\.\d) s,", f))]
    assert seconds == sorted(seconds) and seconds[0] >= 1.0, "nothing before the first second, then rising"


def test_progress_fits_a_narrow_terminal(cluster: Path) -> None:
    code, _, screen = run_on_terminal("threshold", "counts", "--at-least", str(K), "--cluster", str(cluster),
                                      columns=60)
    assert code == 0, screen
    frames = frames_of(screen)
    assert frames and all(len(f) <= 59 for f in frames), "a wrapped line would pile up"


def test_no_progress_when_piped(cluster: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mpc", "threshold", "counts", "--at-least", str(K),
                           "--cluster", str(cluster)], capture_output=True, text=True, timeout=CLI_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert [int(b) for b in proc.stdout.split()] == expected_bits()


def test_no_progress_with_json_even_on_a_terminal(cluster: Path) -> None:
    start = time.monotonic()
    code, out, screen = run_on_terminal("threshold", "counts", "--at-least", str(K), "--json",
                                        "--cluster", str(cluster))
    assert code == 0, screen
    assert time.monotonic() - start > 1.5, "too fast to show that --json keeps a long command quiet"
    assert screen == ""
    assert '"at_least"' in out


def test_each_daemon_serves_metrics_where_its_cluster_file_says(cluster: Path) -> None:
    # The daemons' `metrics = "127.0.0.1:0"`: each picked a port and logged its URL.
    done = run_on_terminal("threshold", "counts", "--at-least", str(K), "--json", "--cluster", str(cluster))
    assert done[0] == 0
    for name in NAMES:
        log = (cluster.parent / "logs" / f"{name}.log").read_text()
        [url] = re.findall(r"serves metrics on (http://127\.0\.0\.1:\d+/metrics)", log)
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        found = re.search(r'^mpc_sessions_total\{outcome="done",protocol="threshold"\} (\d+)\.0$', text, re.M)
        assert found and int(found.group(1)) >= 1, text
        assert re.search(r"^mpc_triples_consumed_total [1-9]", text, re.M), text
        assert re.search(r"^mpc_active_sessions 0\.0$", text, re.M), text
