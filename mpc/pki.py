"""The cluster's private CA and the certificates that name nodes and coordinators.

Identity travels in the certificate, as SPIFFE-style URI SANs (DESIGN.md §5):
``spiffe://mpc/node/<name>`` for a node and ``spiffe://mpc/coordinator/<name>`` for a
coordinator. Keys are EC P-256, stored as unencrypted PKCS#8 PEM with mode 0600.

A node certificate also carries DNS/IP SANs:

- its host names, the names it is dialled by (for the dial address and for ordinary TLS
  tools such as ``openssl s_client``);
- its identity as a DNS name, ``<name>.node.mpc.invalid`` (``identity_dns_name``), which
  mirrors the URI SAN and is issued only in that node's certificate. ``.invalid`` is reserved
  (RFC 2606), so it can never be a real host name, and ``issue`` refuses it as a host name.

Clients check the identity, not the host name: gRPC Python gives a client no access to the
server's certificate (no client-side auth_context, no verify callback), so the URI SAN cannot
be checked there; the only check made at the handshake is the TLS target-name check against
DNS/IP SANs. So clients set the target name to the identity DNS name of the node they mean
(mpc/transport/tls.py ``channel_options``), and the handshake fails unless the certificate is
that node's. Host names alone would not do: nodes on one machine share one (``localhost``),
and then each would accept the others' certificates. As the CA is private and issues each
identity name to one node only, the identity check subsumes the host-name check.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

from mpc.errors import AuthError, ConfigError

# `cryptography` is imported by the functions that read or make certificates, not here: the
# identity names (identity_dns_name, Identity) are all that dialling a node needs, and
# `mpc health` should not pay for loading X.509 support it does not use.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "COORDINATOR_URI_PREFIX", "IDENTITY_DNS_SUFFIX", "NODE_URI_PREFIX", "Identity", "PrivateKey",
    "cert_not_after", "identity_dns_name", "identity_from_pem", "identity_from_uri", "init_cluster_certs",
    "issue", "load_ca", "make_ca",
]

NODE_URI_PREFIX = "spiffe://mpc/node/"
COORDINATOR_URI_PREFIX = "spiffe://mpc/coordinator/"
# A node's identity as a DNS name: <name>.node.mpc.invalid (see the module docstring).
IDENTITY_DNS_SUFFIX = ".node.mpc.invalid"
# Host names under this domain are mpc's own identity names, never a node's host.
_RESERVED_DOMAIN = "mpc.invalid"

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"

# A CA key: make_ca makes EC P-256; load_ca also takes RSA (both sign with SHA-256, which
# every TLS stack gRPC uses accepts).
PrivateKey: TypeAlias = "ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_DNS_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PREFIXES: dict[str, Literal["node", "coordinator"]] = {
    NODE_URI_PREFIX: "node", COORDINATOR_URI_PREFIX: "coordinator"
}
# Leaf certificates start a little in the past so that peers with a slightly slow clock
# accept a certificate issued a moment ago.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a certificate names: a node or a coordinator, and its name."""

    role: Literal["node", "coordinator"]
    name: str

    def __post_init__(self) -> None:
        """Check the role and the name; Raises ConfigError if either is not allowed."""
        if self.role not in ("node", "coordinator"):
            raise ConfigError(f"identity role must be 'node' or 'coordinator', got {self.role!r}")
        _check_name(self.name)

    def uri(self) -> str:
        """Returns the URI SAN for this identity, e.g. ``spiffe://mpc/node/alice``."""
        prefix = NODE_URI_PREFIX if self.role == "node" else COORDINATOR_URI_PREFIX
        return prefix + self.name

    def __str__(self) -> str:
        """Returns ``role/name`` for log lines and error messages."""
        return f"{self.role}/{self.name}"


def _check_name(name: str) -> None:
    """Check a node or coordinator name; Raises ConfigError naming the bad name."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise ConfigError(
            f"bad node/coordinator name {name!r}: expected 1-63 characters of "
            "[a-z0-9-], starting with a letter or digit"
        )


def identity_dns_name(name: str) -> str:
    """Returns node ``name``'s identity DNS name, e.g. ``alice.node.mpc.invalid``.

    Only node ``name``'s certificate carries it, so a client that expects it as the TLS target
    name reaches node ``name`` or fails the handshake. Raises ConfigError for a bad name.
    """
    _check_name(name)
    return name + IDENTITY_DNS_SUFFIX


def identity_from_uri(uri: str) -> Identity | None:
    """Parse a ``spiffe://mpc/...`` URI. Returns the Identity, or None if the URI is not ours."""
    for prefix, role in _PREFIXES.items():
        if uri.startswith(prefix):
            name = uri[len(prefix):]
            if _NAME_RE.fullmatch(name) is None:
                return None
            return Identity(role, name)
    return None


@functools.lru_cache(maxsize=1024)
def identity_from_pem(cert_pem: bytes) -> Identity:
    """Read the identity from a PEM certificate's URI SAN (cached by the PEM bytes).

    Returns the one Identity the certificate names.
    Raises AuthError if the PEM does not parse or it names no mpc identity or more than one.
    """
    from cryptography import x509
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError) as exc:
        raise AuthError("peer certificate is not a readable PEM X.509 certificate") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise AuthError("peer certificate has no subjectAltName, so no mpc identity") from None
    except ValueError as exc:  # a malformed extension
        raise AuthError("peer certificate has a malformed extension") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    found = {ident for ident in map(identity_from_uri, uris) if ident is not None}
    if not found:
        raise AuthError("peer certificate has no spiffe://mpc/ URI SAN")
    if len(found) > 1:
        names = ", ".join(sorted(str(i) for i in found))
        raise AuthError(f"peer certificate names more than one mpc identity ({names})")
    return found.pop()


def cert_not_after(cert_pem: bytes) -> datetime:
    """Returns the certificate's notAfter (aware, UTC). Raises ConfigError if unreadable."""
    from cryptography import x509
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError("certificate is not a readable PEM X.509 certificate") from exc
    return cert.not_valid_after_utc


# --- files -------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int, *, exclusive: bool = False) -> None:
    """Write to a temp file, fix its mode, then move it into place.

    With ``exclusive`` the final step is a hard link, which fails if ``path`` already exists,
    so a racing writer cannot clobber it. Raises ConfigError on an existing exclusive target
    or an OS error.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # os.open's mode is filtered by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _make_dir(directory: Path) -> None:
    """Create ``directory`` (0700 when new). Raises ConfigError if that fails."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create directory {directory}: {exc.strerror or exc}") from exc


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Returns the key as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(*fmt, serialization.NoEncryption())


def _check_days(days: int) -> None:
    """Raises ConfigError unless ``days`` is a positive integer."""
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ConfigError(f"certificate validity must be a positive number of days, got {days!r}")


def _utc(when: datetime) -> datetime:
    """Returns ``when`` in UTC; a naive datetime is taken to be UTC already."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    """Returns a KeyUsage with only the named bits set."""
    from cryptography import x509
    bits = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )
    return x509.KeyUsage(**{bit: enabled.get(bit, False) for bit in bits})


# --- CA ----------------------------------------------------------------------------------


def make_ca(
    directory: Path, *, common_name: str = "mpc private CA", days: int = 3650
) -> tuple[Path, Path]:
    """Create a private CA (EC P-256) as ``ca.pem`` and ``ca.key`` (0600) in ``directory``.

    Returns (cert_path, key_path).
    Raises ConfigError if ``ca.key`` or ``ca.pem`` already exists or a file cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    _check_days(days)
    if not common_name or len(common_name) > 64:
        raise ConfigError(f"CA common name must be 1-64 characters, got {common_name!r}")
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    # Never replace a CA: that would silently orphan every certificate it issued.
    for path in (key_path, cert_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite the CA")
    _make_dir(directory)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_file(key_path, _key_pem(key), 0o600, exclusive=True)
    write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, exclusive=True)
    return cert_path, key_path


def load_ca(directory: Path) -> tuple[x509.Certificate, PrivateKey]:
    """Load ``ca.pem`` and ``ca.key`` from ``directory``.

    Returns (certificate, private key).
    Raises ConfigError naming the file that is missing, unreadable, not a CA, or not matching.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    cert_pem, key_pem = _read(cert_path), _read(key_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{cert_path} is not a PEM X.509 certificate") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # encrypted key, no password given
        raise ConfigError(f"{key_path} is encrypted; mpc needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{key_path} is not a PEM private key") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ConfigError(f"{key_path} must hold an EC or RSA key, got {type(key).__name__}")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise ConfigError(f"{key_path} holds a {key.key_size}-bit RSA key; a CA key needs at least 2048 bits")
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size < 256:
        raise ConfigError(f"{key_path} holds a key on {key.curve.name} ({key.curve.key_size} bits); a CA key "
                          f"needs a curve of at least 256 bits")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"{cert_path} is not a CA certificate (BasicConstraints CA=True missing)")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigError(f"{key_path} does not match the certificate in {cert_path}")
    return cert, key


def _read(path: Path) -> bytes:
    """Returns the file's bytes. Raises ConfigError naming a missing or unreadable file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


# --- leaf certificates -------------------------------------------------------------------


def _file_stem(identity: Identity) -> str:
    """Returns the file name stem: ``<name>`` for a node, ``coordinator-<name>`` otherwise.

    Raises ConfigError for a node named as the CA's files are (``ca``): its key would replace the CA's.
    """
    if identity.role == "node" and f"{identity.name}.pem" == CA_CERT_FILE:
        raise ConfigError(f"a node cannot be named {identity.name!r}: its certificate and key would replace the "
                          f"CA's ({CA_CERT_FILE}, {CA_KEY_FILE}); choose another name")
    return identity.name if identity.role == "node" else f"coordinator-{identity.name}"


def _check_replaceable(cert_path: Path, identity: Identity) -> None:
    """Raises ConfigError unless ``cert_path`` is absent or holds a certificate of ``identity`` (a renewal):
    the files of another party, or anything else, are never written over."""
    if not cert_path.exists() and not cert_path.is_symlink():
        return
    try:
        held: Identity | str = identity_from_pem(cert_path.read_bytes())
    except (AuthError, OSError):
        held = "no mpc identity"
    if held != identity:
        raise ConfigError(f"{cert_path} holds a certificate of {held}, not of {identity}: refusing to overwrite it "
                          f"(issue into another directory, or remove it first)")


def _host_san(host: str) -> x509.GeneralName:
    """Returns an IPAddress SAN for an IP literal, else a DNSName SAN. Raises ConfigError."""
    from cryptography import x509
    if not isinstance(host, str):
        raise ConfigError(f"host must be a string, got {host!r}")
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
        raise ConfigError(f"bad host name {host!r}: expected an IP address or a DNS name")
    host = host.lower()
    if host == _RESERVED_DOMAIN or host.endswith("." + _RESERVED_DOMAIN):
        # Else a certificate could carry another node's identity name (<name>.node.mpc.invalid).
        raise ConfigError(f"bad host name {host!r}: names under {_RESERVED_DOMAIN} are mpc's node identities, "
                          "not host names; give the node's real host name")
    return x509.DNSName(host)


def _validity(
    days: int, not_before: datetime | None, not_after: datetime | None, ca: x509.Certificate
) -> tuple[datetime, datetime]:
    """Returns (not_before, not_after): given one end, the other is ``days`` away.

    With neither given the certificate starts now (less a little clock skew) and never
    outlives the CA. Raises ConfigError if the window is empty.
    """
    _check_days(days)
    length = timedelta(days=days)
    if not_before is not None:
        start = _utc(not_before)
        end = start + length if not_after is None else _utc(not_after)
    elif not_after is not None:
        end = _utc(not_after)
        start = end - length
    else:
        start = datetime.now(UTC) - _CLOCK_SKEW
        end = min(start + length, ca.not_valid_after_utc)
    if end <= start:
        raise ConfigError(f"certificate validity is empty: not_before {start} >= not_after {end}")
    return start, end


def issue(
    directory: Path,
    ca_dir: Path,
    identity: Identity,
    *,
    hosts: Sequence[str] = (),
    days: int = 825,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    identity_dns: bool = True,
) -> tuple[Path, Path]:
    """Issue a certificate for ``identity`` signed by the CA in ``ca_dir``.

    A node certificate carries a DNS/IP SAN per host (default: its name), its identity DNS
    name (``identity_dns_name``) and its URI SAN; a coordinator's carries its URI SAN and the
    ``hosts`` given (none by default). ``identity_dns=False`` leaves the identity DNS name
    out, as mpc did before clients checked it (only for tests of how clients refuse such a
    certificate).

    Writes ``<name>.pem``/``<name>.key`` (node) or ``coordinator-<name>.pem``/``.key``
    (coordinator) into ``directory``; an existing pair of the same identity is replaced (renewal),
    another party's (or a file that holds no mpc certificate) never is.
    Returns (cert_path, key_path).
    Raises ConfigError for a bad host, validity or CA, a node named as the CA's files are (``ca``),
    files of another party in the way, or a file that cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    if not isinstance(identity, Identity):
        raise ConfigError(f"issue() needs an Identity, got {type(identity).__name__}")
    if isinstance(hosts, str):  # a bare string would become one SAN per character
        raise ConfigError(f"hosts must be a sequence of host names, got the string {hosts!r}")
    _file_stem(identity)   # a name whose files would replace the CA's is refused before anything is made
    ca_cert, ca_key = load_ca(Path(ca_dir))
    start, end = _validity(days, not_before, not_after, ca_cert)

    host_list = list(dict.fromkeys(hosts))  # keep order, drop repeats
    if identity.role == "node" and not host_list:
        host_list = [identity.name]
    names: list[x509.GeneralName] = [_host_san(h) for h in host_list]
    if identity.role == "node" and identity_dns:
        names.append(x509.DNSName(identity_dns_name(identity.name)))
    names.append(x509.UniformResourceIdentifier(identity.uri()))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.role == "node":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)

    try:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role),
         x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    directory = Path(directory)
    _make_dir(directory)
    stem = _file_stem(identity)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    _check_replaceable(cert_path, identity)
    write_file(key_path, _key_pem(key), 0o600)
    write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def init_cluster_certs(
    directory: Path,
    nodes: Mapping[str, Sequence[str]],
    coordinators: Sequence[str] = ("coordinator",),
) -> dict[str, tuple[Path, Path]]:
    """Make the CA in ``directory`` (unless ``ca.key`` is there) and a certificate per party.

    ``nodes`` maps node name to its host names (empty means just the name).
    Returns name -> (cert_path, key_path); coordinators are keyed ``coordinator-<name>``.
    Raises ConfigError for a bad or repeated name, or names whose files would collide.
    """
    if isinstance(coordinators, str):
        raise ConfigError(f"coordinators must be a list of names, not {coordinators!r}")
    idents = [Identity("node", n) for n in nodes]
    idents += [Identity("coordinator", c) for c in coordinators]
    stems: dict[str, Identity] = {}
    for ident in idents:
        stem = _file_stem(ident)
        if stem in stems:
            raise ConfigError(f"{ident} and {stems[stem]} would both write {stem}.pem; rename one")
        stems[stem] = ident
    # Check every host before the CA or any file is written.
    for name, hosts in nodes.items():
        if isinstance(hosts, str):
            raise ConfigError(f"hosts of node {name!r} must be a list, not {hosts!r}")
        for host in hosts:
            _host_san(host)

    directory = Path(directory)
    for stem, ident in stems.items():   # another party's files in the way: refused before any is issued
        _check_replaceable(directory / f"{stem}.pem", ident)
    if not (directory / CA_KEY_FILE).exists():
        make_ca(directory)
    out: dict[str, tuple[Path, Path]] = {}
    for stem, ident in stems.items():
        hosts = nodes[ident.name] if ident.role == "node" else ()
        out[stem] = issue(directory, directory, ident, hosts=hosts)
    return out
