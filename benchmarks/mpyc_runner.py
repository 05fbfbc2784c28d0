"""Run the MPyC side of the benchmark: every party a separate OS process on 127.0.0.1, TLS on.

Usage from Python (e.g. benchmarks/run.py)::

    from benchmarks.mpyc_runner import run_mpyc_sum, run_mpyc_compare, run_mpyc_vote, run_mpyc_auction
    run_mpyc_sum(10_000)                  # 3 parties, vectors of L=10^4 secure ints each
    run_mpyc_sum(1, scalar_raises=True)   # 4 parties, inputs 3800, 2514, 2982, 3390 -> 12686
    run_mpyc_compare(1000)                # 3 parties, 1000 batched secure x >= y
    run_mpyc_vote(1000)                   # 3 parties, 1000 ballots split, opens [2 tally >= N]
    run_mpyc_auction(1000)                # 3 parties, 1000 bids split, opens argmax and max
    run_mpyc_auction(1000, second_price=True)   # ... opens argmax and the second-highest bid

(or ``python benchmarks/mpyc_runner.py [--big]`` for the standard set of measurements).

How MPyC is run (mpyc 0.11):
  * each party: ``sys.executable prog.py -M n -I i -P 127.0.0.1:p0 ... -P 127.0.0.1:p{n-1} --ssl
    [program args]``, ports picked free on 127.0.0.1 by this module;
  * with ``--ssl`` MPyC loads ``.config/party_<i>.crt``, ``.config/party_<i>.key`` and
    ``.config/mpyc_ca.crt`` relative to the *current working directory* (mpyc/runtime.py,
    Runtime.start), requires client certificates (CERT_REQUIRED) and checks the peer's
    certificate against server_hostname ``"MPyC party <j>"``.  We generate a fresh EC P-256 CA and
    one certificate per party (CN and SAN DNS name ``MPyC party <i>``) in a temporary directory,
    which is used as the cwd of all party processes, and delete it afterwards;
  * TLS is confirmed twice: MPyC logs ``All <n> parties connected via SSL.`` (checked here) and
    the programs report the negotiated TLS version/cipher of a live MPyC connection
    (``transport.get_extra_info('ssl_object')``) in the ``tls`` field of the result.

Timing: ``compute_s`` is measured inside party 0 (time.perf_counter) from just after an
all-to-all barrier that follows ``await mpc.start()`` until the output is opened;
``end_to_end_s`` is measured here from spawning the first process until all processes exited
(includes Python/MPyC import, TLS connection set-up, the computation and shutdown; excludes
certificate generation).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROGRAMS = Path(__file__).resolve().parent / 'mpyc_programs'
SUM_PROGRAM = PROGRAMS / 'sum_vector.py'
COMPARE_PROGRAM = PROGRAMS / 'compare.py'
VOTE_PROGRAM = PROGRAMS / 'vote.py'
AUCTION_PROGRAM = PROGRAMS / 'auction.py'
HOST = '127.0.0.1'
RAISES_PARTIES = 4


# --------------------------------------------------------------------------- TLS material

def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_mpyc_tls_files(workdir: Path, parties: int) -> Path:
    """Create workdir/.config/{mpyc_ca.crt, party_<i>.crt, party_<i>.key} as MPyC --ssl expects."""
    cfg = Path(workdir) / '.config'
    cfg.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'MPyC benchmark CA')])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (cfg / 'mpyc_ca.crt').write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    for i in range(parties):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f'MPyC party {i}'  # MPyC connects with server_hostname=f'MPyC party {i}'
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (cfg / f'party_{i}.crt').write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keyfile = cfg / f'party_{i}.key'
        keyfile.write_bytes(_pem_key(key))
        os.chmod(keyfile, 0o600)
    return cfg


# --------------------------------------------------------------------------- processes

def _free_ports(n: int) -> list[int]:
    """n distinct ports that were free on 127.0.0.1 (all sockets held open while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, nbytes: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ''
    return data[-nbytes:].decode(errors='replace')


def _run_parties(program: Path, parties: int, prog_args: list[str], timeout: float) -> dict:
    """Run `program` as `parties` MPyC processes with TLS; return party 0's JSON + end_to_end_s."""
    if parties < 2:
        raise ValueError('need at least 2 parties')
    with tempfile.TemporaryDirectory(prefix='mpyc_bench_') as tmp:
        work = Path(tmp)
        write_mpyc_tls_files(work, parties)
        ports = _free_ports(parties)
        addr_args = [a for p in ports for a in ('-P', f'{HOST}:{p}')]
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        procs: list[subprocess.Popen] = []
        logs = []
        try:
            t_start = time.perf_counter()
            for i in range(parties):
                out = open(work / f'party{i}.out', 'wb')
                logs.append(out)
                cmd = [sys.executable, str(program), '-M', str(parties), '-I', str(i),
                       *addr_args, '--ssl', *prog_args]
                procs.append(subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=subprocess.STDOUT))
            deadline = t_start + timeout
            while True:  # bounded by deadline
                codes = [p.poll() for p in procs]
                if all(c is not None for c in codes):
                    break
                failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
                if failed:
                    i = failed[0]
                    raise RuntimeError(f'MPyC party {i} exited with code {codes[i]}:\n'
                                       f'{_tail(work / f"party{i}.out")}')
                if time.perf_counter() > deadline:
                    raise TimeoutError(f'MPyC run of {program.name} {prog_args} exceeded '
                                       f'{timeout}s; party 0 output:\n'
                                       f'{_tail(work / "party0.out")}')
                time.sleep(0.01)
            end_to_end = time.perf_counter() - t_start
            for i, c in enumerate(codes):
                if c != 0:
                    raise RuntimeError(f'MPyC party {i} exited with code {c}:\n'
                                       f'{_tail(work / f"party{i}.out")}')
            out0 = (work / 'party0.out').read_text(errors='replace')
        finally:
            for p in procs:  # only the processes started here, by PID
                if p.poll() is None:
                    p.kill()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            for f in logs:
                f.close()

    results = [json.loads(line) for line in out0.splitlines() if line.startswith('{')]
    if len(results) != 1:
        raise RuntimeError(f'expected one JSON line from MPyC party 0, got:\n{out0[-2000:]}')
    res = results[0]
    res['end_to_end_s'] = end_to_end - res.get('later_s', 0.0)   # as if it had run one computation
    res['ssl_logged'] = f'All {parties} parties connected via SSL.' in out0
    if not res['ssl_logged'] or not res.get('tls'):
        raise RuntimeError(f'MPyC run did not use TLS:\n{out0[-2000:]}')
    return res


# --------------------------------------------------------------------------- public API

def run_mpyc_sum(L: int, parties: int = 3, *, scalar_raises: bool = False, repeats: int = 1,
                 timeout: float = 600) -> dict:
    """Secure elementwise sum of one length-L vector per party (SecInt(64) secure arrays).

    With scalar_raises=True: 4 parties (parties is ignored) input 3800, 2514, 2982, 3390 as
    single secure integers; expected sum 12686 (result has 'sum'); L is reported as 1.
    repeats > 1: that many sums in one run, compute_s the median of those after the first (warm),
    first_s the first's (mpyc_programs/sum_vector.py).
    Returns {"compute_s", "first_s", "repeats", "end_to_end_s", "L", "parties", "ok", "tls", "ssl_logged"[, "sum"]}.
    """
    if repeats < 1:
        raise ValueError('repeats must be >= 1')
    if scalar_raises:
        return _run_parties(SUM_PROGRAM, RAISES_PARTIES, ['--scalar-raises', '--repeats', str(repeats)], timeout)
    if L < 1:
        raise ValueError('L must be >= 1')
    return _run_parties(SUM_PROGRAM, parties, ['--L', str(L), '--repeats', str(repeats)], timeout)


def run_mpyc_compare(M: int, parties: int = 3, *, timeout: float = 600) -> dict:
    """M batched secure comparisons x >= y (SecInt(32) secure arrays; x from party 0, y from 1).

    Returns {"compute_s", "end_to_end_s", "M", "parties", "ok", "tls", "ssl_logged"}.
    """
    if M < 1:
        raise ValueError('M must be >= 1')
    return _run_parties(COMPARE_PROGRAM, parties, ['--M', str(M)], timeout)


def run_mpyc_vote(ballots: int = 1000, parties: int = 3, *, repeats: int = 1, timeout: float = 600) -> dict:
    """A vote over `ballots` 0/1 ballots split across the parties (SecInt(32) secure arrays):
    the tally is summed on the shares and only [2 * tally >= ballots] is opened. repeats > 1: that
    many votes in one run, compute_s the median of those after the first (mpyc_programs/vote.py).

    Returns {"compute_s", "first_s", "repeats", "end_to_end_s", "N", "parties", "passed", "ok", "tls", "ssl_logged"}.
    """
    if ballots < parties:
        raise ValueError('need at least one ballot per party')
    if repeats < 1:
        raise ValueError('repeats must be >= 1')
    return _run_parties(VOTE_PROGRAM, parties, ['--N', str(ballots), '--repeats', str(repeats)], timeout)


def run_mpyc_auction(bids: int = 1000, parties: int = 3, *, second_price: bool = False,
                     lists: bool = False, timeout: float = 600) -> dict:
    """A sealed-bid auction over `bids` bids split across the parties (SecInt(32) secure arrays,
    mpc.np_argmax; with lists=True lists of secure integers and mpc.argmax, slower): only the
    winning index and the price (the highest bid, or with second_price the second-highest) are
    opened. Ties go to the first occurrence in (party, index at the party).

    Returns {"compute_s", "end_to_end_s", "M", "parties", "second_price", "lists", "winner_party",
    "winner_index", "price", "ok", "tls", "ssl_logged"}.
    """
    if bids < max(parties, 2):
        raise ValueError('need at least one bid per party and two bids')
    flags = (['--second-price'] if second_price else []) + (['--lists'] if lists else [])
    return _run_parties(AUCTION_PROGRAM, parties, ['--M', str(bids), *flags], timeout)


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description='MPyC side of the mpc benchmark')
    parser.add_argument('--big', action='store_true', help='also run the sum with L=10^6')
    parser.add_argument('--timeout', type=float, default=900)
    args = parser.parse_args(argv)
    runs = [('sum', 10**4), ('sum', 10**5)] + ([('sum', 10**6)] if args.big else [])
    runs += [('raises', 1), ('compare', 1000), ('vote', 1000), ('auction', 1000), ('auction2', 1000)]
    all_ok = True
    for kind, n in runs:
        if kind == 'sum':
            res = run_mpyc_sum(n, timeout=args.timeout)
        elif kind == 'raises':
            res = run_mpyc_sum(1, scalar_raises=True, timeout=args.timeout)
        elif kind == 'compare':
            res = run_mpyc_compare(n, timeout=args.timeout)
        elif kind in ('auction', 'auction2'):
            res = run_mpyc_auction(n, second_price=kind == 'auction2', timeout=args.timeout)
        else:
            res = run_mpyc_vote(n, timeout=args.timeout)
        all_ok &= bool(res['ok'])
        print(json.dumps({'bench': f'mpyc_{kind}', **res}), flush=True)
    return 0 if all_ok else 1


if __name__ == '__main__':
    sys.exit(main())
