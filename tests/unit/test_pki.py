"""Tests for mpc.pki: the private CA, leaf certificates, identities, and a real mTLS call."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mpc.errors import AuthError, ConfigError
from mpc.pki import (
    IDENTITY_DNS_SUFFIX,
    Identity,
    cert_not_after,
    identity_dns_name,
    identity_from_pem,
    identity_from_uri,
    init_cluster_certs,
    issue,
    load_ca,
    make_ca,
)
from mpc.transport.tls import TlsMaterial

ALICE = Identity("node", "alice")
COORD = Identity("coordinator", "coordinator")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


# --- CA ----------------------------------------------------------------------------------


def test_make_ca_writes_a_ca_cert_and_a_private_key(tmp_path: Path) -> None:
    cert_path, key_path = make_ca(tmp_path / "pki")
    assert cert_path == tmp_path / "pki" / "ca.pem"
    assert key_path == tmp_path / "pki" / "ca.key"
    assert _mode(key_path) == 0o600
    assert b"BEGIN PRIVATE KEY" in key_path.read_bytes()  # PKCS#8, unencrypted

    cert, key = load_ca(tmp_path / "pki")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.verify_directly_issued_by(cert)


def test_make_ca_refuses_to_overwrite(tmp_path: Path) -> None:
    _, key_path = make_ca(tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(ConfigError, match="ca.key"):
        make_ca(tmp_path)
    assert key_path.read_bytes() == before


def test_load_ca_names_the_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca.pem"):
        load_ca(tmp_path)
    make_ca(tmp_path)
    (tmp_path / "ca.key").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="ca.key"):
        load_ca(tmp_path)


def test_load_ca_rejects_a_key_that_does_not_match(tmp_path: Path) -> None:
    make_ca(tmp_path / "a")
    make_ca(tmp_path / "b")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        load_ca(tmp_path / "a")


# --- leaf certificates -------------------------------------------------------------------


def test_node_cert_has_sans_usages_and_verifies_against_the_ca(tmp_path: Path) -> None:
    make_ca(tmp_path)
    cert_path, key_path = issue(tmp_path / "out", tmp_path, ALICE, hosts=["alice", "alice.example"])
    assert (cert_path.name, key_path.name) == ("alice.pem", "alice.key")
    assert _mode(key_path) == 0o600
    leaf, (ca, _) = _cert(cert_path), load_ca(tmp_path)

    san = _san(leaf)
    assert san.get_values_for_type(x509.DNSName) == ["alice", "alice.example", "alice.node.mpc.invalid"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mpc/node/alice"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)

    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("alice"))
    chain = verifier.verify(leaf, [])
    assert chain[-1] == ca
    wrong_host = PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("bob"))
    with pytest.raises(VerificationError):
        wrong_host.verify(leaf, [])


def test_node_hosts_default_to_the_name(tmp_path: Path) -> None:
    make_ca(tmp_path)
    cert_path, _ = issue(tmp_path, tmp_path, Identity("node", "bob"))
    assert _san(_cert(cert_path)).get_values_for_type(x509.DNSName) == ["bob", "bob.node.mpc.invalid"]


def test_coordinator_cert_is_client_only_and_verifies_as_a_client(tmp_path: Path) -> None:
    make_ca(tmp_path)
    cert_path, key_path = issue(tmp_path, tmp_path, COORD)
    assert cert_path.name == "coordinator-coordinator.pem"
    assert key_path.name == "coordinator-coordinator.key"
    leaf, (ca, _) = _cert(cert_path), load_ca(tmp_path)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _san(leaf).get_values_for_type(x509.DNSName) == []
    verified = PolicyBuilder().store(Store([ca])).build_client_verifier().verify(leaf, [])
    assert x509.UniformResourceIdentifier(COORD.uri()) in (verified.subjects or [])


def test_ip_hosts_become_ip_address_sans(tmp_path: Path) -> None:
    make_ca(tmp_path)
    cert_path, _ = issue(tmp_path, tmp_path, ALICE, hosts=["127.0.0.1", "::1", "localhost"])
    san = _san(_cert(cert_path))
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "alice.node.mpc.invalid"]


def test_each_node_certificate_carries_exactly_its_own_identity_name(tmp_path: Path) -> None:
    # Nodes on one machine share their host names: only the identity name tells them apart.
    shared = ["localhost", "127.0.0.1"]
    out = init_cluster_certs(tmp_path, {"alice": shared, "bob": shared, "carlos": []},
                             coordinators=["coordinator", "ops"])
    ca, _ = load_ca(tmp_path)
    nodes = ("alice", "bob", "carlos")
    for name in nodes:
        leaf = _cert(out[name][0])
        dns = _san(leaf).get_values_for_type(x509.DNSName)
        assert [d for d in dns if d.endswith(IDENTITY_DNS_SUFFIX)] == [identity_dns_name(name)], (name, dns)
        assert identity_dns_name(name) == f"{name}.node.mpc.invalid"
        assert identity_from_pem(out[name][0].read_bytes()) == Identity("node", name)  # mirrors the URI SAN
        # As a TLS client checks it: valid for its own identity name, for no other node's.
        for other in nodes:
            verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(
                x509.DNSName(identity_dns_name(other)))
            if other == name:
                verifier.verify(leaf, [])
            else:
                with pytest.raises(VerificationError):
                    verifier.verify(leaf, [])
    for stem in ("coordinator-coordinator", "coordinator-ops"):
        san = _san(_cert(out[stem][0]))
        assert san.get_values_for_type(x509.DNSName) == [], stem
        assert not any(IDENTITY_DNS_SUFFIX in str(n.value) for n in san), stem


def test_identity_names_are_not_host_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad node/coordinator name"):
        identity_dns_name("Bob")
    make_ca(tmp_path)
    # No certificate may carry another node's identity name as a "host", nor may a coordinator's.
    for hosts in (["alice.node.mpc.invalid"], ["x", "BOB.NODE.MPC.INVALID"], ["mpc.invalid"]):
        with pytest.raises(ConfigError, match="mpc.invalid"):
            issue(tmp_path, tmp_path, Identity("node", "bob"), hosts=hosts)
        with pytest.raises(ConfigError, match="mpc.invalid"):
            issue(tmp_path, tmp_path, COORD, hosts=hosts)
    with pytest.raises(ConfigError, match="mpc.invalid"):
        init_cluster_certs(tmp_path / "new", {"bob": ["alice.node.mpc.invalid"]})
    assert not (tmp_path / "new" / "ca.key").exists()  # refused before anything was written


def test_a_certificate_as_older_mpc_issued_it_lacks_the_identity_name(tmp_path: Path) -> None:
    make_ca(tmp_path)
    cert_path, _ = issue(tmp_path, tmp_path, ALICE, hosts=["localhost"], identity_dns=False)
    assert _san(_cert(cert_path)).get_values_for_type(x509.DNSName) == ["localhost"]
    assert identity_from_pem(cert_path.read_bytes()) == ALICE


def test_expired_cert_has_the_requested_not_after(tmp_path: Path) -> None:
    make_ca(tmp_path)
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    cert_path, _ = issue(tmp_path, tmp_path, ALICE, not_after=past)
    leaf = _cert(cert_path)
    assert leaf.not_valid_after_utc == past
    assert leaf.not_valid_before_utc < past
    assert cert_not_after(cert_path.read_bytes()) == past

    start = past - timedelta(days=2)
    cert_path, _ = issue(tmp_path, tmp_path, ALICE, not_before=start, not_after=past)
    assert _cert(cert_path).not_valid_before_utc == start
    with pytest.raises(ConfigError, match="validity"):
        issue(tmp_path, tmp_path, ALICE, not_before=past, not_after=start)


@pytest.mark.parametrize(
    "name", ["", "Alice", "-alice", "al_ice", "a" * 64, "al ice", "alice/x", "é", "alice\n"]
)
def test_bad_names_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="bad node/coordinator name"):
        Identity("node", name)


def test_bad_role_and_bad_hosts_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="role"):
        Identity("admin", "x")  # type: ignore[arg-type]
    make_ca(tmp_path)
    for hosts in (["bad host"], [""], ["-x.example"], "alice"):
        with pytest.raises(ConfigError):
            issue(tmp_path, tmp_path, ALICE, hosts=hosts)
    with pytest.raises(ConfigError, match="days"):
        issue(tmp_path, tmp_path, ALICE, days=0)


def test_issue_without_a_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca.pem"):
        issue(tmp_path, tmp_path / "nope", ALICE)


# --- identities --------------------------------------------------------------------------


def test_identity_uris_round_trip() -> None:
    assert ALICE.uri() == "spiffe://mpc/node/alice"
    assert COORD.uri() == "spiffe://mpc/coordinator/coordinator"
    assert identity_from_uri(ALICE.uri()) == ALICE
    assert identity_from_uri(COORD.uri()) == COORD
    for other in (
        "spiffe://other/node/alice",
        "spiffe://mpc/node/",
        "spiffe://mpc/node/Alice",
        "spiffe://mpc/node/alice/x",
        "spiffe://mpc/admin/alice",
        "https://mpc/node/alice",
    ):
        assert identity_from_uri(other) is None


def test_identity_from_pem_round_trips_for_node_and_coordinator(tmp_path: Path) -> None:
    make_ca(tmp_path)
    node_pem = issue(tmp_path, tmp_path, ALICE)[0].read_bytes()
    coord_pem = issue(tmp_path, tmp_path, Identity("coordinator", "ops"))[0].read_bytes()
    assert identity_from_pem(node_pem) == ALICE
    assert identity_from_pem(coord_pem) == Identity("coordinator", "ops")
    assert identity_from_pem(node_pem) is identity_from_pem(node_pem)  # cached


def _self_signed(sans: Sequence[x509.GeneralName] | None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


def test_identity_from_pem_rejects_certs_without_exactly_one_identity() -> None:
    with pytest.raises(AuthError, match="subjectAltName"):
        identity_from_pem(_self_signed(None))
    with pytest.raises(AuthError, match="URI SAN"):
        identity_from_pem(_self_signed([x509.DNSName("alice")]))
    with pytest.raises(AuthError, match="URI SAN"):
        identity_from_pem(_self_signed([x509.UniformResourceIdentifier("spiffe://other/node/a")]))
    two = [
        x509.UniformResourceIdentifier("spiffe://mpc/node/alice"),
        x509.UniformResourceIdentifier("spiffe://mpc/coordinator/alice"),
    ]
    with pytest.raises(AuthError, match="more than one"):
        identity_from_pem(_self_signed(two))
    with pytest.raises(AuthError):
        identity_from_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


# --- cluster -----------------------------------------------------------------------------


def test_init_cluster_certs_makes_the_ca_once_and_a_cert_per_party(tmp_path: Path) -> None:
    nodes = {"alice": ["alice", "127.0.0.1"], "bob": []}
    out = init_cluster_certs(tmp_path, nodes, coordinators=["coordinator", "ops"])
    assert set(out) == {"alice", "bob", "coordinator-coordinator", "coordinator-ops"}
    assert identity_from_pem(out["bob"][0].read_bytes()) == Identity("node", "bob")
    ops_pem = out["coordinator-ops"][0].read_bytes()
    assert identity_from_pem(ops_pem) == Identity("coordinator", "ops")
    ca_pem = (tmp_path / "ca.pem").read_bytes()

    again = init_cluster_certs(tmp_path, {"carol": ["carol"]})  # reuses the existing CA
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem
    ca, _ = load_ca(tmp_path)
    _cert(again["carol"][0]).verify_directly_issued_by(ca)


def test_init_cluster_certs_rejects_colliding_file_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="coordinator-ops.pem"):
        init_cluster_certs(tmp_path, {"coordinator-ops": []}, coordinators=["ops"])
    assert not (tmp_path / "ca.key").exists()


def test_a_node_named_ca_is_refused_before_it_can_replace_the_ca(tmp_path: Path) -> None:
    """A node's files are <name>.pem/.key beside the CA's ca.pem/ca.key: a node named "ca" would replace
    the CA's key (every later certificate then impossible, the old ones orphaned). Refused, in an
    existing CA directory and in a fresh one, before anything is written."""
    init_cluster_certs(tmp_path, {"alice": []})
    before = {f: (tmp_path / f).read_bytes() for f in ("ca.pem", "ca.key")}
    with pytest.raises(ConfigError, match="cannot be named 'ca'.*replace the CA"):
        init_cluster_certs(tmp_path, {"ca": []})
    with pytest.raises(ConfigError, match="cannot be named 'ca'"):
        issue(tmp_path, tmp_path, Identity("node", "ca"))
    assert {f: (tmp_path / f).read_bytes() for f in ("ca.pem", "ca.key")} == before
    load_ca(tmp_path)
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigError, match="cannot be named 'ca'"):
        init_cluster_certs(fresh, {"bob": [], "ca": []})
    assert not fresh.exists() or not any(fresh.iterdir())
    # a coordinator named "ca" writes coordinator-ca.pem: no collision
    assert init_cluster_certs(tmp_path, {}, coordinators=["ca"])["coordinator-ca"][0].name == "coordinator-ca.pem"


def test_issue_renews_a_partys_own_files_and_never_writes_over_anothers(tmp_path: Path) -> None:
    """Issuing again for the same identity replaces its pair (a renewal); files of another party in the
    way, e.g. a node named coordinator-x in the directory of coordinator x, or a file that is no mpc
    certificate, are refused, and left as they were."""
    out = init_cluster_certs(tmp_path, {"alice": []}, coordinators=["x"])
    first = out["alice"][0].read_bytes()
    cert, _ = issue(tmp_path, tmp_path, Identity("node", "alice"))
    assert cert.read_bytes() != first and identity_from_pem(cert.read_bytes()) == Identity("node", "alice")
    theirs = {p: p.read_bytes() for p in out["coordinator-x"]}
    with pytest.raises(ConfigError, match="holds a certificate of coordinator/x, not of node/coordinator-x"):
        issue(tmp_path, tmp_path, Identity("node", "coordinator-x"))
    assert {p: p.read_bytes() for p in theirs} == theirs
    with pytest.raises(ConfigError, match="holds a certificate of coordinator/x"):   # checked before any is issued
        init_cluster_certs(tmp_path, {"bob": [], "coordinator-x": []})
    assert not (tmp_path / "bob.pem").exists() and {p: p.read_bytes() for p in theirs} == theirs
    (tmp_path / "bob.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="holds a certificate of no mpc identity"):
        issue(tmp_path, tmp_path, Identity("node", "bob"))
    assert (tmp_path / "bob.pem").read_text() == "not a certificate" and not (tmp_path / "bob.key").exists()


def test_a_weak_ca_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(ConfigError, match="1024-bit RSA key; a CA key needs at least 2048 bits"):
        load_ca(tmp_path)
    with pytest.raises(ConfigError, match="1024-bit"):
        issue(tmp_path, tmp_path, Identity("node", "alice"))


@pytest.mark.parametrize(("mode", "taken"), [(0o600, True), (0o400, True), (0o640, True), (0o440, True),
                                           (0o644, False), (0o660, False), (0o604, False), (0o666, False)])
def test_a_key_file_others_may_use_is_refused(tmp_path: Path, mode: int, taken: bool) -> None:
    """A node's or coordinator's key that others may read (or its group change) is refused when loaded, as
    ssh and PostgreSQL refuse theirs and as an owner key is (mpc/credentials.py); 0600 and 0640 (a
    group that only reads it, such as a container's) are taken. The certificates are public: any mode."""
    ca, _ = make_ca(tmp_path)
    cert, key = issue(tmp_path, tmp_path, Identity("node", "alice"))
    key.chmod(mode)
    cert.chmod(0o644)
    if taken:
        assert TlsMaterial.load(ca, cert, key).key == key.read_bytes()
    else:
        with pytest.raises(ConfigError, match=re.escape(f"private key {key} has mode {mode:04o}") + ".*chmod 600"):
            TlsMaterial.load(ca, cert, key)


# --- real mTLS over grpc.aio -------------------------------------------------------------

WHOAMI = "/mpc.test.Identity/WhoAmI"


async def _whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    pems = context.auth_context().get("x509_pem_cert", [])
    if len(pems) != 1:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
    try:
        return identity_from_pem(pems[0]).uri().encode()
    except AuthError as exc:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    raise AssertionError("unreachable")


async def _serve_and_call(tmp_path: Path, client_dir: Path | None) -> bytes:
    certs = init_cluster_certs(tmp_path, {"alice": ["alice"]})
    root = (tmp_path / "ca.pem").read_bytes()
    node_cert, node_key = (p.read_bytes() for p in certs["alice"])
    if client_dir is None:
        coord_cert, coord_key = (p.read_bytes() for p in certs["coordinator-coordinator"])
    else:
        other = init_cluster_certs(client_dir, {})
        coord_cert, coord_key = (p.read_bytes() for p in other["coordinator-coordinator"])

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "mpc.test.Identity", {"WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami)}
            ),
        )
    )
    creds = grpc.ssl_server_credentials(
        [(node_key, node_cert)], root_certificates=root, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        channel_creds = grpc.ssl_channel_credentials(root, coord_key, coord_cert)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", channel_creds,
            options=[("grpc.ssl_target_name_override", identity_dns_name("alice"))]
        ) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            answer = await channel.unary_unary(WHOAMI)(b"", timeout=10)
            assert isinstance(answer, bytes)
            return answer
    finally:
        await server.stop(None)


def test_real_mtls_health_check_and_client_identity(tmp_path: Path) -> None:
    answer = asyncio.run(_serve_and_call(tmp_path, None))
    assert identity_from_uri(answer.decode()) == Identity("coordinator", "coordinator")


def test_real_mtls_rejects_a_client_from_another_ca(tmp_path: Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(_serve_and_call(tmp_path / "cluster", tmp_path / "rogue"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_material_names_a_malformed_file_or_a_key_that_is_not_the_certificates(tmp_path: Path) -> None:
    """What gRPC would report only at the first call as every node unreachable (a file that is no
    PEM of its kind) or as a listen address that cannot be bound (a node's key that is not its
    certificate's), refused when the files are loaded (and, for the pair, checked), naming them."""
    ca, _ = make_ca(tmp_path)
    alice_cert, alice_key = issue(tmp_path, tmp_path, Identity("node", "alice"))
    _, bob_key = issue(tmp_path, tmp_path, Identity("node", "bob"))
    material = TlsMaterial.load(ca, alice_cert, alice_key)
    assert material.cert == alice_cert.read_bytes()
    material.check_pair(alice_cert, alice_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"garbage\n")
    garbage.chmod(0o600)
    cases = [((garbage, alice_cert, alice_key), f"CA certificate {garbage} is not a PEM file of a CA certificate"),
             ((ca, garbage, alice_key), f"certificate {garbage} is not a PEM file of a certificate"),
             ((ca, alice_cert, garbage), f"private key {garbage} is not a PEM file of a private key")]
    for paths, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            TlsMaterial.load(*paths)
    with pytest.raises(ConfigError, match=re.escape(f"private key {bob_key} is not the key of certificate "
                                                    f"{alice_cert}")):
        TlsMaterial.load(ca, alice_cert, bob_key).check_pair(alice_cert, bob_key)
