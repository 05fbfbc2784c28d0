"""Mutual TLS for every connection: credentials, channel options and the caller's identity.

A node's certificate names it twice: a URI SAN `spiffe://mpc/node/<name>` (checked by the
called side on every RPC) and the DNS SAN `<name>.node.mpc.invalid` (mpc.pki.identity_dns_name,
checked by the dialling side at the handshake). The coordinator's URI SAN is
`spiffe://mpc/coordinator/<name>`.

Why the dialling side checks a DNS name rather than the URI SAN: gRPC Python gives a client no
access to the server's certificate (no client-side auth_context, no custom verify callback), so
the only check it can make is the TLS target-name check against DNS/IP SANs. `channel_options`
sets the target name to the identity DNS name of the node meant, which mirrors its URI SAN and
which the (private) CA puts in that node's certificate only: the handshake fails unless the
certificate is that node's, even when nodes share a host name (as on one machine), and the
check subsumes a host-name check. The node's host names stay in its certificate, for the dial
address and for ordinary TLS tools, but clients do not check them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import grpc

from mpc.errors import AuthError, ConfigError
from mpc.pki import Identity, identity_dns_name, identity_from_pem

CHUNK_BYTES = 1 << 20                      # vectors stream in 1 MiB chunks
MAX_MESSAGE_BYTES = 4 * CHUNK_BYTES        # a chunk plus headers fits with room to spare


def _read(path: Path | None, what: str, private: bool = False) -> bytes:
    """The file's bytes. private: a key, which others than its owner (and its group, to read) may not
    touch: refused otherwise, as ssh and PostgreSQL refuse theirs.

    Raises: ConfigError naming a missing or unreadable file, or a key others may read or change.
    """
    if path is None:
        raise ConfigError(f"no {what} path configured")
    try:
        if private:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o037:
                raise ConfigError(f"{what} {path} has mode {mode:04o}: others (or its group, to write) may use it; "
                                  f"it must be 0600 or 0640 (chmod 600 {path})")
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The PEM bytes a party needs: the cluster CA, its own certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes

    def __repr__(self) -> str:
        return "TlsMaterial(<pem redacted>)"

    @classmethod
    def load(cls, ca: Path, cert: Path | None, key: Path | None) -> "TlsMaterial":
        """Read the three PEM files, each of which must hold a PEM block of its kind (gRPC would
        only say, at the first call, that every peer is unreachable). Cheap: no parsing, so that
        `mpc health` and `mpc status` load no cryptography; `check_pair` parses.

        Returns: the material.
        Raises: ConfigError naming a missing, unreadable or malformed file, or a key file others may use.
        """
        material = cls(_read(ca, "CA certificate"), _read(cert, "certificate"), _read(key, "private key", True))
        for data, path, what, marker in ((material.ca, ca, "CA certificate", b"-----BEGIN CERTIFICATE-----"),
                                         (material.cert, cert, "certificate", b"-----BEGIN CERTIFICATE-----"),
                                         (material.key, key, "private key", b"PRIVATE KEY-----")):
            if marker not in data:
                raise ConfigError(f"{what} {path} is not a PEM file of a {what}")
        return material

    def check_pair(self, cert: Path | None, key: Path | None) -> None:
        """Check that the certificate parses and the key is its key (gRPC would say only that the
        listen address cannot be bound, or that every peer is unreachable).

        Raises: ConfigError naming the files.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            certificate = x509.load_pem_x509_certificate(self.cert)
        except ValueError:
            raise ConfigError(f"certificate {cert} is not a PEM X.509 certificate") from None
        try:
            private = serialization.load_pem_private_key(self.key, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"private key {key} is not an unencrypted PEM private key") from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
            raise ConfigError(f"private key {key} is not the key of certificate {cert}")

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate from the cluster CA."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def submission_server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials for the submission listener: the node proves who it is; the
        contributor presents no certificate (a credential in each submission authenticates it)."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], require_client_auth=False)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials that present our certificate and trust only the cluster CA."""
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


def contributor_channel_credentials(ca: Path) -> grpc.ChannelCredentials:
    """A contributor's channel credentials: trust only the cluster CA, present no certificate.

    Raises: ConfigError naming a missing or unreadable CA file.
    """
    return grpc.ssl_channel_credentials(root_certificates=_read(ca, "CA certificate"))


def channel_options(node: str) -> list[tuple[str, int | str]]:
    """Options for a channel to the node named `node` (its cluster-file name).

    The TLS target name is the node's identity DNS name (mpc.pki.identity_dns_name), so the
    handshake succeeds only if the certificate at the far end is that node's.

    Returns: gRPC channel options (TLS name, message limits, keepalive, no transparent retry
    storm: a down node must fail fast).
    Raises: ConfigError if `node` is not a valid node name.
    """
    return [
        ("grpc.ssl_target_name_override", identity_dns_name(node)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


SERVER_OPTIONS: list[tuple[str, int | str]] = [
    # gRPC binds with SO_REUSEPORT by default: a second daemon on the same address would then share
    # the port with the first (the kernel splitting connections between them) instead of failing.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


def caller_identity(context: grpc.aio.ServicerContext) -> Identity:
    """The identity in the caller's verified client certificate.

    Returns: the Identity from its URI SAN.
    Raises: AuthError if there is no client certificate or it carries no mpc identity.
    """
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") if auth else None
    if not pems:
        raise AuthError("no verified client certificate on this call")
    return identity_from_pem(bytes(pems[0]))
