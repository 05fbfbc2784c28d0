"""Tests for mpc.credentials, from the attacks: forged, altered, misdirected and malformed
credentials, key files that are misplaced, exposed or corrupt, and secrets leaking into text."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import nacl.signing
import pytest

from mpc.credentials import (
    CREDENTIAL_ID_BYTES,
    PREFIX,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    TOKEN_BYTES,
    OwnerKey,
    credential_id,
    format_credential,
    format_public,
    issue,
    load_owner_key,
    load_owner_public,
    new_owner_key,
    parse_credential,
    parse_public,
    read_credentials,
    verify,
    write_credentials,
    write_owner_key,
)
from mpc.errors import AuthError, InputError

COLLECTION = "referendum-2025"


@pytest.fixture(scope="module")
def key() -> OwnerKey:
    return new_owner_key()


@pytest.fixture(scope="module")
def public(key: OwnerKey) -> bytes:
    return bytes(key.verify_key)


@pytest.fixture(scope="module")
def token(key: OwnerKey) -> bytes:
    return parse_credential(issue(key, COLLECTION, 1)[0], "test")


def _message(collection: str, cid: bytes) -> bytes:
    """The signed message, written out from the specification, not from the module."""
    name = collection.encode()
    return b"mpc/credential/v1" + len(name).to_bytes(2, "big") + name + cid


def _secret_texts(key: nacl.signing.SigningKey) -> list[str]:
    """Every way the seed might show up in a string."""
    seed = bytes(key)
    return [seed.hex(), seed.hex().upper(), repr(seed), str(seed), base64.b64encode(seed).decode(),
            base64.urlsafe_b64encode(seed).decode().rstrip("=")]


# --- issue and verify ----------------------------------------------------------------------------


def test_sizes() -> None:
    assert (CREDENTIAL_ID_BYTES, SIGNATURE_BYTES, TOKEN_BYTES, PUBLIC_KEY_BYTES) == (16, 64, 80, 32)


def test_issued_credentials_verify_have_distinct_ids_and_round_trip(key: OwnerKey, public: bytes) -> None:
    credentials = issue(key, COLLECTION, 2000)
    assert len(credentials) == 2000
    ids = set()
    for text in credentials:
        assert text.startswith(PREFIX) and len(text) == len(PREFIX) + 107 and "=" not in text
        token = parse_credential(text, "issued")
        assert len(token) == TOKEN_BYTES
        assert format_credential(token) == text
        cid = verify(public, COLLECTION, token)
        assert cid == credential_id(token) == token[:CREDENTIAL_ID_BYTES]
        ids.add(cid)
    assert len(ids) == len(credentials)


def test_signature_is_over_the_specified_message(key: OwnerKey, public: bytes) -> None:
    """An independent check with PyNaCl: tag, 2-byte length, collection, id; Ed25519 is deterministic."""
    for text in issue(key, COLLECTION, 20):
        token = parse_credential(text, "issued")
        cid, signature = token[:16], token[16:]
        nacl.signing.VerifyKey(public).verify(_message(COLLECTION, cid), signature)
        assert nacl.signing.SigningKey(bytes(key)).sign(_message(COLLECTION, cid)).signature == signature


def test_a_credential_is_only_for_its_collection(key: OwnerKey, public: bytes, token: bytes) -> None:
    others = ["referendum-2026", "Referendum-2025", "referendum-202", "referendum-20255", "r", "x" * 128]
    for other in others:
        with pytest.raises(AuthError) as info:
            verify(public, other, token)
        assert str(info.value) == (f"credential {token[:4].hex()} is not one the owner of collection "
                                   f"'{other}' issued")


def test_length_prefix_separates_collections_that_share_a_prefix(key: OwnerKey, public: bytes) -> None:
    # Without the length, "a" with an id starting b"b" and "ab" would sign overlapping messages.
    short = parse_credential(issue(key, "a", 1)[0], "issued")
    with pytest.raises(AuthError):
        verify(public, "ab", short)


def test_another_owners_credential_is_refused(public: bytes) -> None:
    intruder = new_owner_key()
    forged = parse_credential(issue(intruder, COLLECTION, 1)[0], "forged")
    with pytest.raises(AuthError):
        verify(public, COLLECTION, forged)
    assert verify(bytes(intruder.verify_key), COLLECTION, forged) == forged[:16]


def test_every_flipped_bit_is_refused(public: bytes, token: bytes) -> None:
    for bit in range(TOKEN_BYTES * 8):
        altered = bytearray(token)
        altered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AuthError):
            verify(public, COLLECTION, bytes(altered))


def test_an_id_with_another_credentials_signature_is_refused(key: OwnerKey, public: bytes) -> None:
    a, b = (parse_credential(t, "issued") for t in issue(key, COLLECTION, 2))
    with pytest.raises(AuthError):
        verify(public, COLLECTION, a[:16] + b[16:])


def test_truncated_and_extended_tokens_are_refused(public: bytes, token: bytes) -> None:
    candidates = [token[:n] for n in range(TOKEN_BYTES)] + [token + b"\x00", token + token, b"\x00" + token]
    for candidate in candidates:
        with pytest.raises(AuthError) as info:
            verify(public, COLLECTION, candidate)
        assert f"collection '{COLLECTION}'" in str(info.value)
        assert token.hex()[8:] not in str(info.value)
    with pytest.raises(AuthError):
        verify(public, COLLECTION, "not bytes")  # type: ignore[arg-type]


def test_an_all_zero_or_garbage_token_is_refused(public: bytes) -> None:
    for candidate in (bytes(TOKEN_BYTES), b"\xff" * TOKEN_BYTES, os.urandom(TOKEN_BYTES)):
        with pytest.raises(AuthError):
            verify(public, COLLECTION, candidate)


def test_verify_with_a_bad_collection_name_or_public_key(public: bytes, token: bytes) -> None:
    for name in ["", "-lead", "has space", "a/b", "x" * 129, "naïve"]:
        with pytest.raises(AuthError):
            verify(public, name, token)
    for bad in (public[:31], public + b"\x00", b""):
        with pytest.raises(InputError, match="owner public key is 32 bytes"):
            verify(bad, COLLECTION, token)


def test_issue_checks_collection_and_count(key: OwnerKey) -> None:
    for name in ["", "-lead", "has space", "a/b", "x" * 129, "naïve", "line\nbreak"]:
        with pytest.raises(InputError, match="collection name"):
            issue(key, name, 1)
    for count in (0, -1, 10_000_001, True, 1.0, "3"):
        with pytest.raises(InputError, match="credential count") as info:
            issue(key, COLLECTION, count)  # type: ignore[arg-type]
        assert repr(count) in str(info.value)
    assert len(issue(key, "x" * 128, 3)) == 3


# --- text forms ----------------------------------------------------------------------------------


def _assert_input_error_without(text: str, where: str, token_text: str) -> InputError:
    with pytest.raises(InputError) as info:
        parse_credential(text, where)
    message = str(info.value)
    assert where in message
    body = token_text[len(PREFIX):]
    for start in range(0, len(body) - 12):
        assert body[start:start + 12] not in message, message
    return info.value


def test_malformed_credential_texts_name_where_and_never_the_credential(token: bytes) -> None:
    good = format_credential(token)
    body = good[len(PREFIX):]
    bad = {
        "wrong prefix": [body, "mpc-cred-v2:" + body, "MPC-CRED-V1:" + body, "", "mpc-cred-v1" + body],
        "wrong length": [good[:-1], good + "A", good + "AAAA", PREFIX, good[:-4]],
        "bad base64": [PREFIX + "+" + body[1:], PREFIX + body[:-1] + "/", PREFIX + body[:-1] + "=",
                       PREFIX + body[:50] + " " + body[51:], PREFIX + body[:-1] + "é",
                       PREFIX + body[:-1] + "\x00"],
    }
    for kind, texts in bad.items():
        for n, text in enumerate(texts):
            _assert_input_error_without(text, f"line {n} ({kind})", good)


def test_non_canonical_base64_is_refused(token: bytes) -> None:
    """80 bytes end in a 2-byte group: the last character carries 4 bits and 2 that must be zero."""
    good = format_credential(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(good[-1])
    for low in (1, 2, 3):
        _assert_input_error_without(good[:-1] + alphabet[last ^ low], "here", good)


def test_parse_credential_ignores_surrounding_whitespace_only(token: bytes) -> None:
    good = format_credential(token)
    assert parse_credential(f"  {good}\r\n", "here") == token
    with pytest.raises(InputError, match="here: a credential must be text"):
        parse_credential(good.encode(), "here")  # type: ignore[arg-type]


def test_format_credential_and_credential_id_check_length(token: bytes) -> None:
    for bad in (token[:-1], token + b"\x00", b""):
        with pytest.raises(InputError, match="80 bytes"):
            format_credential(bad)
        with pytest.raises(InputError, match="80 bytes"):
            credential_id(bad)


def test_public_key_text_round_trip(key: OwnerKey, public: bytes) -> None:
    text = format_public(public)
    assert text == "mpc-owner-pub-v1:" + public.hex()
    assert parse_public(text, "spec") == public
    assert parse_public(f" {text.upper().replace('MPC-OWNER-PUB-V1:', 'mpc-owner-pub-v1:')}\n", "spec") == public


def test_malformed_public_key_texts_name_where(key: OwnerKey, public: bytes) -> None:
    hexed = public.hex()
    small_order = bytes(32)   # y = 0: a point of small order; libsodium refuses it as a key
    bad = ["", hexed, "mpc-owner-pub-v2:" + hexed, "mpc-owner-pub-v1:" + hexed[:-2],
           "mpc-owner-pub-v1:" + hexed + "00", "mpc-owner-pub-v1:" + hexed[:-1] + "g",
           "mpc-owner-pub-v1:" + small_order.hex(), "mpc-owner-key-v1:" + bytes(key).hex()]
    for text in bad:
        with pytest.raises(InputError) as info:
            parse_public(text, "collection spec 'x'")
        assert "collection spec 'x'" in str(info.value)
        assert bytes(key).hex() not in str(info.value)
    for wrong in (public[:31], public + b"\x00"):
        with pytest.raises(InputError, match="32 bytes"):
            format_public(wrong)


# --- key files -----------------------------------------------------------------------------------


def test_key_files_round_trip_with_private_mode_0600(tmp_path: Path, key: OwnerKey, public: bytes) -> None:
    private, pub = tmp_path / "owner.key", tmp_path / "owner.pub"
    old = os.umask(0)   # the mode must not depend on the umask
    try:
        write_owner_key(key, private, pub)
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text() == f"mpc-owner-key-v1:{bytes(key).hex()}\n"
    assert pub.read_text() == f"mpc-owner-pub-v1:{public.hex()}\n"
    loaded = load_owner_key(private)
    assert bytes(loaded) == bytes(key) and isinstance(loaded, nacl.signing.SigningKey)
    assert load_owner_public(pub) == public
    credential = parse_credential(issue(loaded, COLLECTION, 1)[0], "issued")
    assert verify(load_owner_public(pub), COLLECTION, credential) == credential[:16]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owner.key", "owner.pub"]   # no temporary files left


def test_key_files_are_never_overwritten(tmp_path: Path, key: OwnerKey) -> None:
    private, pub = tmp_path / "owner.key", tmp_path / "owner.pub"
    write_owner_key(key, private, pub)
    before = private.read_bytes(), pub.read_bytes()
    other = new_owner_key()
    with pytest.raises(InputError, match=f"{private} already exists"):
        write_owner_key(other, private, tmp_path / "other.pub")
    with pytest.raises(InputError, match=f"{pub} already exists"):
        write_owner_key(other, tmp_path / "other.key", pub)
    assert (private.read_bytes(), pub.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owner.key", "owner.pub"]   # no stray files
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="already exists"):
        write_owner_key(other, tmp_path / "link", tmp_path / "x.pub")
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(InputError, match="must differ"):
        write_owner_key(other, tmp_path / "same", tmp_path / "same")


def test_an_unwritable_public_key_leaves_no_private_key(tmp_path: Path, key: OwnerKey) -> None:
    with pytest.raises(InputError, match="cannot write"):
        write_owner_key(key, tmp_path / "owner.key", tmp_path / "missing-dir" / "owner.pub")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o610, 0o700 | 0o004])
def test_a_private_key_others_can_reach_is_refused(tmp_path: Path, key: OwnerKey, mode: int) -> None:
    private = tmp_path / "owner.key"
    write_owner_key(key, private, tmp_path / "owner.pub")
    private.chmod(mode)
    with pytest.raises(InputError) as info:
        load_owner_key(private)
    assert str(private) in str(info.value) and f"{mode:04o}" in str(info.value)
    assert bytes(key).hex() not in str(info.value)
    private.chmod(0o400)
    assert bytes(load_owner_key(private)) == bytes(key)


def test_malformed_private_key_files_name_the_path(tmp_path: Path, key: OwnerKey) -> None:
    seed = bytes(key).hex()
    contents: dict[str, bytes] = {
        "empty": b"",
        "blank": b"\n\n",
        "no prefix": seed.encode(),
        "other prefix": f"mpc-owner-key-v2:{seed}".encode(),
        "short": f"mpc-owner-key-v1:{seed[:-2]}".encode(),
        "long": f"mpc-owner-key-v1:{seed}00".encode(),
        "not hex": f"mpc-owner-key-v1:{seed[:-1]}z".encode(),
        "spaced": f"mpc-owner-key-v1:{seed[:32]} {seed[32:]}".encode(),
        "two lines": f"mpc-owner-key-v1:{seed}\nmpc-owner-key-v1:{seed}\n".encode(),
        "binary": b"\xff\xfe" + seed.encode(),
        "huge": b"mpc-owner-key-v1:" + b"0" * 10_000,
        "public": f"mpc-owner-pub-v1:{bytes(key.verify_key).hex()}\n".encode(),
    }
    for name, data in contents.items():
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(0o600)
        with pytest.raises(InputError) as info:
            load_owner_key(path)
        message = str(info.value)
        assert str(path) in message, (name, message)
        for secret in _secret_texts(key):
            assert secret not in message, name
        assert seed[:16] not in message and seed[-16:] not in message
    for missing in (tmp_path / "missing", tmp_path):
        with pytest.raises(InputError, match=str(missing)):
            load_owner_key(missing)


def test_malformed_public_key_files_name_the_path(tmp_path: Path, key: OwnerKey) -> None:
    public = bytes(key.verify_key).hex()
    contents = {
        "empty": b"",
        "short": f"mpc-owner-pub-v1:{public[:-2]}".encode(),
        "no prefix": public.encode(),
        "binary": b"\x80" * 10,
        "two lines": f"mpc-owner-pub-v1:{public}\nmpc-owner-pub-v1:{public}".encode(),
        "private": f"mpc-owner-key-v1:{bytes(key).hex()}\n".encode(),
    }
    for name, data in contents.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as info:
            load_owner_public(path)
        assert str(path) in str(info.value), name
        assert bytes(key).hex() not in str(info.value)
    with pytest.raises(InputError, match="not found"):
        load_owner_public(tmp_path / "missing")


def test_reprs_and_messages_never_contain_the_seed(tmp_path: Path) -> None:
    key = new_owner_key()
    assert isinstance(key, nacl.signing.SigningKey)
    texts = [repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr({"key": key})]
    path = tmp_path / "owner.key"
    write_owner_key(key, path, tmp_path / "owner.pub")
    loaded = load_owner_key(path)
    texts += [repr(loaded), str(loaded)]
    path.chmod(0o644)
    with pytest.raises(InputError) as info:
        load_owner_key(path)
    texts.append(str(info.value))
    with pytest.raises(InputError) as info:
        parse_public(path.read_text(), "spec")
    texts.append(str(info.value))
    with pytest.raises(InputError) as info:
        load_owner_public(path)
    texts.append(str(info.value))
    for text in texts:
        for secret in _secret_texts(key):
            assert secret not in text, text
    assert bytes(key.verify_key)[:4].hex() in repr(key)


# --- credential files ----------------------------------------------------------------------------


def test_credential_files_round_trip_with_mode_0600(tmp_path: Path, key: OwnerKey) -> None:
    credentials = issue(key, COLLECTION, 300)
    path = tmp_path / "voters.txt"
    write_credentials(path, credentials)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "".join(c + "\n" for c in credentials)
    assert read_credentials(path) == credentials
    with pytest.raises(InputError, match="already exists"):
        write_credentials(path, credentials[:1])
    assert read_credentials(path) == credentials


def test_read_credentials_skips_blank_lines(tmp_path: Path, key: OwnerKey) -> None:
    credentials = issue(key, COLLECTION, 3)
    path = tmp_path / "c.txt"
    path.write_text(f"\n  {credentials[0]}  \r\n\n{credentials[1]}\n\t\n{credentials[2]}")
    assert read_credentials(path) == credentials
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert read_credentials(empty) == []


def test_a_malformed_line_names_path_and_line_but_not_the_line(tmp_path: Path, key: OwnerKey) -> None:
    credentials = issue(key, COLLECTION, 4)
    broken = credentials[2][:-1] + ("A" if credentials[2][-1] != "A" else "B")   # non-canonical or altered
    for bad, line in [(credentials[2][:-3], 4), (credentials[2].replace(PREFIX, "cred:"), 4),
                      (broken[:60] + "!" + broken[61:], 4)]:
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.txt"
        path.write_text(f"{credentials[0]}\n{credentials[1]}\n\n{bad}\n{credentials[3]}\n")
        with pytest.raises(InputError) as info:
            read_credentials(path)
        assert f"{path}:{line}:" in str(info.value)
        assert bad[len(PREFIX) + 10:len(PREFIX) + 40] not in str(info.value)
    path = tmp_path / "binary.txt"
    path.write_bytes(credentials[0].encode() + b"\n\xff\n")
    with pytest.raises(InputError, match=f"{path}:2: not ASCII"):
        read_credentials(path)
    with pytest.raises(InputError, match="not found"):
        read_credentials(tmp_path / "missing.txt")


def test_write_credentials_refuses_malformed_input(tmp_path: Path, key: OwnerKey) -> None:
    credentials = issue(key, COLLECTION, 3)
    path = tmp_path / "out.txt"
    with pytest.raises(InputError, match="credential 2 of 3"):
        write_credentials(path, [credentials[0], credentials[1][:-2], credentials[2]])
    with pytest.raises(InputError, match="one string"):
        write_credentials(path, credentials[0])
    with pytest.raises(InputError, match="no credentials"):
        write_credentials(path, [])
    assert not path.exists() and list(tmp_path.iterdir()) == []
