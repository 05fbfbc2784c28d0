"""A little network of Linux network namespaces for integration tests (needs root).

    <prefix>br        a namespace holding a Linux bridge, br0
    <prefix><role>    one namespace per role (a node, the coordinator, ...), joined to br0 by a
                      veth pair: `eth0` inside, `v-<role>` on the bridge, one IPv4 address/24

Both ends of every connection are inside these namespaces: the test process itself (in the
root namespace) only writes files and starts processes, and never sends a packet. There is no
route out of the namespaces (no default route, no NAT).

Host names: `write_etc(role, "hosts", ...)` writes /etc/netns/<ns>/hosts, which `ip netns exec`
bind-mounts over /etc/hosts for every process started in that namespace (likewise for any
other file in /etc/netns/<ns>/). The lab creates and deletes /etc/netns/<ns> itself.

Processes are started by PID and stopped by PID; teardown kills only what is inside the
namespaces this lab created (only processes the test started can be there), deletes every
namespace and every /etc/netns/<ns> directory, and `leftovers()` checks that nothing with the
prefix remains. Every command has a deadline.

Use `netns_lab(tag, subnet, workdir)` in a fixture: it skips the test, saying why, when
`ip netns add` is not permitted, and tears everything down however the test ends. Two labs
with different tags (and subnets) can exist in one pytest session; the prefix also carries the
pid, so concurrent test runs do not collide.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CMD_TIMEOUT = 20.0              # no helper command may take longer than this
READY_TIMEOUT = 30.0            # a daemon must log that it is ready within this
STOP_GRACE_S = 10.0             # SIGTERM, then SIGKILL after this long
NETNS_ETC = Path("/etc/netns")
BRIDGE = "br"
# The test's processes must not pick up a developer's cluster file.
ENV = {k: v for k, v in os.environ.items() if k != "MPC_CLUSTER"} | {"PYTHONUNBUFFERED": "1"}


def run(*args: str | Path, timeout: float = CMD_TIMEOUT, check: bool = True,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded by `timeout`), capturing its output.

    Raises: AssertionError showing the command and its output if it fails and `check`.
    """
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=dict(ENV if env is None else env))
    if check and proc.returncode != 0:
        raise AssertionError(show(proc))
    return proc


def show(proc: subprocess.CompletedProcess[str]) -> str:
    """A command's arguments, exit code and output, for assertion messages."""
    return f"$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"


def hosts_file(entries: Mapping[str, str]) -> str:
    """An /etc/hosts text mapping each host name to its address (loopback names kept)."""
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    lines += [f"{address} {name}" for name, address in entries.items()]
    return "\n".join(lines) + "\n"


@dataclass
class NetnsLab:
    """The namespaces, /etc/netns directories and processes of one test's network."""

    prefix: str                      # e.g. "mpc-part-1234-"; every namespace name starts with it
    subnet: str                      # the first three octets of the lab's /24, e.g. "10.99.0"
    workdir: Path                    # logs go here
    addresses: dict[str, str] = field(default_factory=dict)       # role -> IPv4 address
    namespaces: list[str] = field(default_factory=list)           # created, in order
    etc_dirs: list[Path] = field(default_factory=list)            # /etc/netns/<ns> we created
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)           # process key -> its role
    log_start: dict[str, int] = field(default_factory=dict)       # key -> log size when started
    made_etc_root: bool = False                                   # whether we created /etc/netns

    def ns(self, role: str) -> str:
        """The namespace name of `role`."""
        return f"{self.prefix}{role}"

    # ---- network ---------------------------------------------------------------------------

    def probe(self) -> str | None:
        """Create the bridge namespace (the runtime check that namespaces may be made here).

        Returns: None when it worked, else why namespaces cannot be used (skip the test).
        Raises: AssertionError if a namespace of that name already exists (a leftover).
        """
        if shutil.which("ip") is None:
            return "`ip netns` is not available: the ip command (iproute2) is not installed"
        name = self.ns(BRIDGE)
        probe = run("ip", "netns", "add", name, check=False)
        if probe.returncode != 0:
            assert "File exists" not in probe.stderr, f"a namespace {name} already exists: {probe.stderr}"
            return f"`ip netns add` is not permitted here: {probe.stderr.strip()}"
        self.namespaces.append(name)
        self.in_ns(BRIDGE, "ip", "link", "add", "br0", "type", "bridge")
        self.in_ns(BRIDGE, "ip", "link", "set", "br0", "up")
        self.in_ns(BRIDGE, "ip", "link", "set", "lo", "up")
        return None

    def add_host(self, role: str, last_octet: int) -> str:
        """A namespace for `role` with address <subnet>.<last_octet>/24 on eth0, bridged to br0.

        Returns: the address.
        """
        assert role != BRIDGE and role not in self.addresses, role
        assert len(f"v-{role}") <= 15, f"role name {role!r} too long for an interface name"
        address = f"{self.subnet}.{last_octet}"
        name = self.ns(role)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        port = f"v-{role}"
        self.in_ns(BRIDGE, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
        self.in_ns(BRIDGE, "ip", "link", "set", port, "master", "br0")
        self.in_ns(BRIDGE, "ip", "link", "set", port, "up")
        self.in_ns(role, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        self.in_ns(role, "ip", "link", "set", "eth0", "up")
        self.in_ns(role, "ip", "link", "set", "lo", "up")
        self.addresses[role] = address
        return address

    def write_etc(self, role: str, filename: str, text: str) -> Path:
        """Write /etc/netns/<ns>/<filename>: processes started in the namespace afterwards see it
        as /etc/<filename> (`ip netns exec` bind-mounts it). Returns: the path written."""
        assert "/" not in filename and filename, filename
        directory = NETNS_ETC / self.ns(role)
        if directory not in self.etc_dirs:
            if not NETNS_ETC.exists():
                NETNS_ETC.mkdir(mode=0o755, exist_ok=True)
                self.made_etc_root = True
            directory.mkdir(exist_ok=False)
            self.etc_dirs.append(directory)
        path = directory / filename
        path.write_text(text, encoding="utf-8")
        return path

    def blackhole(self, a: str, b: str, *, on: bool) -> None:
        """Blackhole routes between a and b, in both of their namespaces (on), or remove them."""
        for here, there in ((a, b), (b, a)):
            self.in_ns(here, "ip", "route", "add" if on else "del", "blackhole", f"{self.addresses[there]}/32")

    # ---- commands and processes --------------------------------------------------------------

    def in_ns(self, role: str, *args: str | Path, timeout: float = CMD_TIMEOUT,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside `role`'s namespace."""
        return run("ip", "netns", "exec", self.ns(role), *args, timeout=timeout, check=check)

    def log(self, key: str) -> Path:
        """The log file of the process started under `key`."""
        return self.workdir / f"{key}.log"

    def spawn(self, key: str, role: str, argv: Sequence[str | Path]) -> subprocess.Popen[bytes]:
        """Start `argv` inside `role`'s namespace, output appended to log(key); do not wait.

        `ip netns exec` execs the command, so the PID held is the command itself.
        """
        assert key not in self.procs, f"{key} is already running"
        with open(self.log(key), "ab") as log:
            self.log_start[key] = log.tell()     # a restarted process appends to the same log
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *map(str, argv)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=ENV)
        self.procs[key] = proc
        self.roles[key] = role
        return proc

    def wait_ready(self, key: str, marker: str, *, expect: Sequence[str] = (),
                   timeout: float = READY_TIMEOUT) -> None:
        """Wait until log(key) contains `marker`; then check that the process is the one we
        meant (its command line holds every word of `expect`) and inside its namespace."""
        proc = self.procs[key]
        deadline = time.monotonic() + timeout
        while marker.encode() not in self.log(key).read_bytes()[self.log_start[key]:]:
            assert proc.poll() is None, f"{key} exited {proc.returncode}:\n{self.log(key).read_text()}"
            assert time.monotonic() < deadline, f"{key}: no {marker!r} after {timeout} s:\n{self.log(key).read_text()}"
            time.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert all(word.encode() in cmdline for word in expect), (expect, cmdline)
        where = run("ip", "netns", "identify", str(proc.pid)).stdout.split()
        assert where == [self.ns(self.roles[key])], (key, proc.pid, where)

    def stop(self, key: str) -> list[str]:
        """SIGTERM by PID, SIGKILL after a grace period. Returns: problems.

        The PID is our own child's and cannot be reused before we reap it.
        """
        proc = self.procs.pop(key)
        if proc.poll() is not None:
            return [] if proc.returncode == 0 else [f"{key} had exited {proc.returncode}"]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return [f"{key} ignored SIGTERM for {STOP_GRACE_S:.0f} s: killed"]
        return []

    # ---- teardown ----------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Stop every process, kill anything left inside our namespaces, delete the namespaces
        and the /etc/netns directories. Never raises.

        Returns: problems met on the way (to be reported after everything was cleaned).
        """
        problems: list[str] = []
        for key in list(self.procs):
            try:
                problems += self.stop(key)
            except Exception as exc:  # keep cleaning
                problems.append(f"stopping {key}: {exc!r}")
        for ns in reversed(self.namespaces):
            try:
                # Only processes this test started can be inside a namespace it created.
                left = run("ip", "netns", "pids", ns, check=False).stdout.split()
                for pid in left:
                    problems.append(f"process {pid} was still inside {ns}: killed")
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deleted = run("ip", "netns", "del", ns, check=False)
                if deleted.returncode != 0:
                    problems.append(show(deleted))
            except Exception as exc:
                problems.append(f"deleting {ns}: {exc!r}")
        self.namespaces.clear()
        for directory in reversed(self.etc_dirs):
            if directory.parent == NETNS_ETC and directory.name.startswith(self.prefix):
                shutil.rmtree(directory, ignore_errors=True)   # leftovers() reports a failure
        self.etc_dirs.clear()
        if self.made_etc_root:
            try:
                NETNS_ETC.rmdir()      # only if empty: another lab may be using it by now
            except OSError:
                pass
        return problems

    def leftovers(self) -> list[str]:
        """Namespaces and /etc/netns directories with this lab's prefix that exist now."""
        listing = run("ip", "netns", "list").stdout
        found = [words[0] for words in map(str.split, listing.splitlines())
                 if words and words[0].startswith(self.prefix)]
        if NETNS_ETC.is_dir():
            found += [str(p) for p in NETNS_ETC.iterdir() if p.name.startswith(self.prefix)]
        return found


@contextmanager
def netns_lab(tag: str, subnet: str, workdir: Path) -> Iterator[NetnsLab]:
    """A NetnsLab with prefix `mpc-<tag>-<pid>-` and its bridge namespace, torn down on exit.

    Skips the test (saying why) when `ip netns add` is not permitted. On exit asserts that no
    namespace or /etc/netns directory with the prefix remains and that teardown met no problem.
    """
    lab = NetnsLab(f"mpc-{tag}-{os.getpid()}-", subnet, workdir)
    try:
        reason = lab.probe()
    except BaseException:
        lab.teardown()
        raise
    if reason is not None:
        lab.teardown()
        pytest.skip(reason)
    problems: list[str] = []
    try:
        yield lab
    finally:
        problems = lab.teardown()
        left = lab.leftovers()
        assert not left, f"left behind: {left}"
    assert not problems, "\n".join(problems)
