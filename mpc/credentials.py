"""Contributor credentials: signed bearer tokens that let a person submit shares to a collection.

A *collection* gathers additive shares from many *contributors* (voters, bidders) at the nodes. Its
*owner* holds an Ed25519 signing key (RFC 8032, libsodium through PyNaCl) and puts the public key in
the collection's public spec. Offline, the owner issues credentials in bulk and hands one to each
contributor; a contributor sends it with their shares, and every node checks it with the one public
key before it accepts a share.

A credential is 80 bytes, ``id || signature``: a random 16-byte id and the owner's signature over

    b"mpc/credential/v1" || len(collection) as 2 bytes big-endian || collection (UTF-8) || id

The fixed tag, the length prefix and the fixed-width id make the message unambiguous, so a signature
for one collection is never one for another (``vote`` and ``vote-2`` included). Its text form is
``mpc-cred-v1:`` followed by the 80 bytes in base64url without padding (119 characters, canonical:
exactly one text per token).

Why a signed token and not a client certificate: contributors are thousands of people who run no
node. A certificate per contributor would need a PKI (issuance, expiry, CRLs), TLS client
authentication on a listener that today accepts only the cluster's nodes and coordinators, and
software at the contributor that holds a private key. A token is 80 bytes that fit in a QR code or
an e-mail, is issued in bulk offline by the owner (about 25 µs each), and is checked by every node
with one 32-byte public key and no change to the TLS setup. Nodes, not tokens, enforce *one
submission per credential per collection*, by credential id: Ed25519 as libsodium verifies it
(canonical S, no small-order keys) is not malleable, and the id is what counts anyway, so a
re-signed or re-encoded token still spends the same id. Ids are 128 random bits, so two credentials
collide with probability below 2^-80 even among 10^7.

Caveat, as for every bearer token: whoever holds a credential can submit once, in place of the
person it was meant for; it should travel privately. There is no expiry; revocation is by id at the
nodes. The owner's private key file is kept like an ssh key: mode 0600, and refused when group or
others can read it. Nothing here logs, prints or quotes a seed, a signature or a whole credential;
errors name the file, line or ``where`` the caller gave, and what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils

from mpc.config import INPUT_NAME
from mpc.errors import AuthError, ConfigError, InputError, quoted
from mpc.pki import write_file

__all__ = [
    "CREDENTIAL_ID_BYTES", "MAX_ISSUE", "PREFIX", "PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "TOKEN_BYTES",
    "OwnerKey", "credential_id", "format_credential", "format_public", "issue", "load_owner_key",
    "load_owner_public", "new_owner_key", "parse_credential", "parse_public", "read_credentials",
    "verify", "write_credentials", "write_owner_key",
]

CREDENTIAL_ID_BYTES = 16
SIGNATURE_BYTES = 64
TOKEN_BYTES = CREDENTIAL_ID_BYTES + SIGNATURE_BYTES        # 80
PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
PREFIX = "mpc-cred-v1:"
PRIVATE_PREFIX = "mpc-owner-key-v1:"
PUBLIC_PREFIX = "mpc-owner-pub-v1:"
MAX_ISSUE = 10_000_000

_TAG = b"mpc/credential/v1"
_TEXT_CHARS = (TOKEN_BYTES * 8 + 5) // 6                   # 107 base64url characters, no padding
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*\Z")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}\Z")
_KEY_FILE_LIMIT = 4096     # a key file is one short line; read no more than this of one
_ISSUE_CHUNK = 65536       # ids drawn from the CSPRNG this many at a time


class OwnerKey(nacl.signing.SigningKey):
    """A collection owner's Ed25519 signing key whose str() and repr() name only its public key.

    PyNaCl's ``SigningKey.__str__`` prints the seed; this subclass does not.
    """

    def __repr__(self) -> str:
        return f"OwnerKey(public={bytes(self.verify_key)[:4].hex()}...)"

    __str__ = __repr__


def new_owner_key() -> OwnerKey:
    """A fresh owner key, its seed from libsodium's CSPRNG.

    Returns: the key (an ``nacl.signing.SigningKey``).
    """
    return OwnerKey(nacl.utils.random(SEED_BYTES))


# --- key files -----------------------------------------------------------------------------------


def format_public(public: bytes) -> str:
    """The text form of an owner public key, ``mpc-owner-pub-v1:<64 hex digits>``.

    Returns: the text.
    Raises: InputError if ``public`` is not 32 bytes.
    """
    _check_public(public)
    return PUBLIC_PREFIX + public.hex()


def parse_public(text: str, where: str) -> bytes:
    """Read an owner public key from its text form (surrounding whitespace is ignored).

    Returns: the 32-byte public key.
    Raises: InputError naming ``where`` if the text is not ``mpc-owner-pub-v1:`` and 64 hex digits
    of a valid Ed25519 public key.
    """
    if not isinstance(text, str):
        raise InputError(f"{where}: an owner public key must be text, got {type(text).__name__}")
    public = _hex_key(text.strip(), PUBLIC_PREFIX, PRIVATE_PREFIX, where)
    # A key that is no point of the prime-order group (or one of small order) would make every
    # credential fail at every node; say so now, where the spec is read.
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(public):
        raise InputError(f"{where}: the owner public key is not a valid Ed25519 public key")
    return public


def write_owner_key(key: nacl.signing.SigningKey, private_path: Path, public_path: Path) -> None:
    """Write the owner's private key (mode 0600) and public key (0644), neither over an existing file.

    The private file is one line ``mpc-owner-key-v1:<hex seed>``, the public one ``mpc-owner-pub-v1:<hex>``.
    Each is written to a temporary file and linked into place, so a reader never sees half a key.
    Raises: InputError naming the path that already exists or cannot be written (if the public key
    cannot be written, the private key just written is removed again).
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.absolute() == public_path.absolute():
        raise InputError(f"the owner's private and public key files must differ, both are {private_path}")
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise InputError(f"{path} already exists; refusing to overwrite it")
    seed = bytes(key)
    _write_exclusive(private_path, (PRIVATE_PREFIX + seed.hex() + "\n").encode("ascii"), 0o600)
    try:
        public = format_public(bytes(key.verify_key))
        _write_exclusive(public_path, (public + "\n").encode("ascii"), 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise


def load_owner_key(path: Path) -> OwnerKey:
    """Load the owner's private key from a file that ``write_owner_key`` wrote.

    Returns: the key.
    Raises: InputError naming ``path`` if it is missing or unreadable, readable or writable by group
    or others (as ssh refuses such a key), or not one line ``mpc-owner-key-v1:<64 hex digits>``.
    """
    path = Path(path)
    text = _read_key_file(path, private=True)
    return OwnerKey(_hex_key(text, PRIVATE_PREFIX, PUBLIC_PREFIX, f"owner key file {path}"))


def load_owner_public(path: Path) -> bytes:
    """Load an owner public key from a file holding its text form.

    Returns: the 32-byte public key.
    Raises: InputError naming ``path`` if it is missing, unreadable or malformed.
    """
    path = Path(path)
    return parse_public(_read_key_file(path, private=False), f"owner public key file {path}")


def _read_key_file(path: Path, *, private: bool) -> str:
    """The one line of a key file, without surrounding whitespace.

    Returns: the line.
    Raises: InputError naming ``path`` if it is missing, unreadable, not a regular file, too long,
    not ASCII or more than one line; for a private key also if group or others may read or write it.
    """
    what = "owner key file" if private else "owner public key file"
    try:
        # O_NONBLOCK: a FIFO put in the key's place must not hang us (no effect on a regular file).
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"{what} {path} is not a regular file")
            if private and info.st_mode & 0o077:
                raise InputError(f"{what} {path} is accessible by group or others (mode "
                                 f"{stat.S_IMODE(info.st_mode):04o}); it must be 0600 (chmod 600 {path})")
            data = file.read(_KEY_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > _KEY_FILE_LIMIT:
        raise InputError(f"{what} {path} is longer than {_KEY_FILE_LIMIT} bytes; a key is one short line")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not ASCII text") from None
    if not text:
        raise InputError(f"{what} {path} is empty")
    if len(text.splitlines()) != 1:
        raise InputError(f"{what} {path} has {len(text.splitlines())} lines; a key is one line")
    return text


# --- issuing and verifying -----------------------------------------------------------------------


def issue(key: nacl.signing.SigningKey, collection: str, count: int) -> list[str]:
    """``count`` fresh credentials for ``collection``, each a random id and the owner's signature.

    Returns: the credentials in text form (``mpc-cred-v1:...``).
    Raises: InputError if ``collection`` is not a valid collection name or ``count`` is not an
    integer from 1 to 10,000,000.
    """
    _check_collection(collection, InputError)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ISSUE:
        raise InputError(f"credential count must be an integer from 1 to {MAX_ISSUE}, got {count!r}")
    head = _message_head(collection)
    # libsodium's own secret key (seed || public key), derived once: SigningKey.sign would wrap
    # every signature in a SignedMessage, a quarter of the cost at 10^5 credentials.
    _, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(key))
    sign, encode = nacl.bindings.crypto_sign, base64.urlsafe_b64encode
    out: list[str] = []
    for start in range(0, count, _ISSUE_CHUNK):
        n = min(_ISSUE_CHUNK, count - start)
        pool = secrets.token_bytes(CREDENTIAL_ID_BYTES * n)
        for i in range(0, len(pool), CREDENTIAL_ID_BYTES):
            cid = pool[i:i + CREDENTIAL_ID_BYTES]
            signature = sign(head + cid, secret)[:SIGNATURE_BYTES]
            out.append(PREFIX + encode(cid + signature).rstrip(b"=").decode("ascii"))
    return out


def verify(public: bytes, collection: str, token: bytes) -> bytes:
    """Check that ``token`` is a credential the owner with key ``public`` issued for ``collection``.

    Returns: the 16-byte credential id (what a node counts to allow one submission per credential).
    Raises: AuthError, saying only which credential and collection, if the token is not 80 bytes or
    its signature is not the owner's over this collection and id, or if ``collection`` is not a
    valid collection name; InputError if ``public`` is not 32 bytes (the node's spec is wrong).
    """
    _check_public(public)
    _check_collection(collection, AuthError)
    if not isinstance(token, (bytes, bytearray, memoryview)) or len(token) != TOKEN_BYTES:
        raise _refused(token, collection)
    token = bytes(token)
    cid, signature = token[:CREDENTIAL_ID_BYTES], token[CREDENTIAL_ID_BYTES:]
    try:
        nacl.signing.VerifyKey(public).verify(_message_head(collection) + cid, signature)
    except nacl.exceptions.CryptoError:
        raise _refused(token, collection) from None
    return cid


def _refused(token: object, collection: str) -> AuthError:
    """The one error for every reason a credential fails: which check failed would help a forger.

    Returns: an AuthError naming the first 4 bytes of the id (hex) and the collection.
    """
    head = bytes(token[:4]).hex() if isinstance(token, (bytes, bytearray, memoryview)) else ""
    return AuthError(f"credential {head or '(empty)'} is not one the owner of collection '{collection}' issued")


def credential_id(token: bytes) -> bytes:
    """The id of a credential token (its first 16 bytes); it does not check the signature.

    Returns: 16 bytes.
    Raises: InputError if ``token`` is not 80 bytes.
    """
    _check_token(token)
    return bytes(token[:CREDENTIAL_ID_BYTES])


def _message_head(collection: str) -> bytes:
    """What a credential's signature covers before its id: the tag and the length-prefixed collection.

    Returns: the bytes.
    """
    name = collection.encode("utf-8")
    return _TAG + len(name).to_bytes(2, "big") + name


# --- text forms and files ------------------------------------------------------------------------


def format_credential(token: bytes) -> str:
    """The text form of a credential token: ``mpc-cred-v1:`` and base64url without padding.

    Returns: the text (119 characters).
    Raises: InputError if ``token`` is not 80 bytes.
    """
    _check_token(token)
    return PREFIX + base64.urlsafe_b64encode(bytes(token)).rstrip(b"=").decode("ascii")


def parse_credential(text: str, where: str) -> bytes:
    """Read a credential from its text form (surrounding whitespace is ignored); no signature check.

    Returns: the 80-byte token.
    Raises: InputError naming ``where`` for a wrong prefix, wrong length, characters outside
    base64url or a non-canonical encoding. The message never quotes the credential.
    """
    if not isinstance(text, str):
        raise InputError(f"{where}: a credential must be text, got {type(text).__name__}")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise InputError(f"{where}: a credential must start with {PREFIX!r}")
    body = text[len(PREFIX):]
    if len(body) != _TEXT_CHARS:
        raise InputError(f"{where}: a credential has {_TEXT_CHARS} characters after {PREFIX!r} "
                         f"({TOKEN_BYTES} bytes in base64url), got {len(body)}")
    if not _BASE64URL.match(body):
        raise InputError(f"{where}: a credential is base64url (A-Z a-z 0-9 - _, no padding) after "
                         f"{PREFIX!r}; this one has other characters")
    try:
        token = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: the credential is not valid base64url") from None
    # The last character carries 4 bits of the token and 2 that must be zero: one text per token.
    if len(token) != TOKEN_BYTES or format_credential(token) != text:
        raise InputError(f"{where}: the credential is not canonical base64url")
    return token


def write_credentials(path: Path, credentials: Sequence[str]) -> None:
    """Write credentials to a new file, one per line, with mode 0600 (they are bearer secrets).

    The file appears complete or not at all (written aside, then linked into place).
    Raises: InputError if ``path`` already exists or cannot be written, if there are no
    credentials, or naming the position of one that is malformed.
    """
    path = Path(path)
    if isinstance(credentials, (str, bytes)):
        raise InputError(f"credentials to write to {path} must be a list of credentials, got one string")
    if not credentials:
        raise InputError(f"no credentials to write to {path}")
    if os.path.lexists(path):
        raise InputError(f"{path} already exists; refusing to overwrite it")
    lines = [format_credential(parse_credential(text, f"credential {i} of {len(credentials)} for {path}"))
             for i, text in enumerate(credentials, start=1)]
    _write_exclusive(path, ("\n".join(lines) + "\n").encode("ascii"), 0o600)


def read_credentials(path: Path) -> list[str]:
    """Read a file of credentials, one per line; blank lines and surrounding whitespace are ignored.

    Returns: the credentials in text form, in file order.
    Raises: InputError naming ``path`` if it is missing or unreadable, or ``path:line`` for a line
    that is not ASCII or not a well-formed credential (the line itself is never quoted).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"credential file {path} not found") from None
    except OSError as exc:
        raise InputError(f"cannot read credential file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        bad_line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{bad_line}: not ASCII text") from None
    out: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if line:
            parse_credential(line, f"{path}:{number}")
            out.append(line)
    return out


# --- helpers -------------------------------------------------------------------------------------


def _check_token(token: bytes) -> None:
    """Raises InputError unless ``token`` is 80 bytes."""
    if not isinstance(token, (bytes, bytearray, memoryview)) or len(token) != TOKEN_BYTES:
        raise InputError(f"a credential token is {TOKEN_BYTES} bytes, got {_size(token)}")


def _check_public(public: bytes) -> None:
    """Raises InputError unless ``public`` is 32 bytes."""
    if not isinstance(public, bytes) or len(public) != PUBLIC_KEY_BYTES:
        raise InputError(f"an owner public key is {PUBLIC_KEY_BYTES} bytes, got {_size(public)}")


def _check_collection(collection: str, error: type[InputError] | type[AuthError]) -> None:
    """Raises ``error`` naming ``collection`` (quoted, bounded) unless it is a valid collection name."""
    if not isinstance(collection, str) or not INPUT_NAME.match(collection):
        name = quoted(collection) if isinstance(collection, str) else f"of type {type(collection).__name__}"
        raise error(f"collection name {name} is not valid: 1-128 characters of A-Z a-z 0-9 _ . -, "
                    "starting with a letter or digit")


def _hex_key(text: str, prefix: str, other: str, where: str) -> bytes:
    """The 32 bytes of a key's text form ``<prefix><64 hex digits>``; ``other`` is the other kind's prefix.

    Returns: the bytes.
    Raises: InputError naming ``where`` and what is wrong, never quoting the text (it may be a seed).
    """
    if text.startswith(other):
        kind = "private" if other == PRIVATE_PREFIX else "public"
        raise InputError(f"{where} holds an owner {kind} key ({other}...), not a {prefix}... key")
    if not text.startswith(prefix):
        raise InputError(f"{where} does not start with {prefix!r}")
    digits = text[len(prefix):]
    if not _HEX_KEY.match(digits):
        what = "hex digits" if all(c in "0123456789abcdefABCDEF" for c in digits) else "characters, not all hex"
        raise InputError(f"{where}: a key is 64 hex digits after {prefix!r}, got {len(digits)} {what}")
    return bytes.fromhex(digits)


def _size(value: object) -> str:
    """Returns how big ``value`` is, for a message: "N bytes" or its type; never its content."""
    return f"{len(value)} bytes" if isinstance(value, (bytes, bytearray, memoryview)) else f"a {type(value).__name__}"


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``path`` with ``mode``, complete or not at all (mpc.pki.write_file).

    Raises: InputError naming ``path`` if it exists or cannot be written.
    """
    try:
        write_file(path, data, mode, exclusive=True)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
