"""Mutual TLS for every connection: credentials, channel options and the caller's identity.

A node's certificate names it twice: a DNS SAN for its host (checked by the dialling side via
the target name) and a URI SAN `spiffe://mpc/node/<name>` (checked by the called side on
every RPC). The coordinator's URI SAN is `spiffe://mpc/coordinator/<name>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from mpc.errors import AuthError, ConfigError
from mpc.pki import Identity, identity_from_pem

CHUNK_BYTES = 1 << 20                      # vectors stream in 1 MiB chunks
MAX_MESSAGE_BYTES = 4 * CHUNK_BYTES        # a chunk plus headers fits with room to spare


def _read(path: Path | None, what: str) -> bytes:
    if path is None:
        raise ConfigError(f"no {what} path configured")
    try:
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
        """Read the three PEM files.

        Returns: the material.
        Raises: ConfigError naming a missing or unreadable file.
        """
        return cls(_read(ca, "CA certificate"), _read(cert, "certificate"), _read(key, "private key"))

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate from the cluster CA."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials that present our certificate and trust only the cluster CA."""
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


def channel_options(host: str) -> list[tuple[str, int | str]]:
    """Options for a channel to a node whose certificate carries DNS name `host`.

    Returns: gRPC channel options (TLS name, message limits, keepalive, no transparent retry
    storm: a down node must fail fast).
    """
    return [
        ("grpc.ssl_target_name_override", host),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


SERVER_OPTIONS: list[tuple[str, int | str]] = [
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
