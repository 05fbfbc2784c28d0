"""The keyed path's evidence on the wire (protos/mpc/v1/mpc.proto `Evidence`; mpc/protocols/pairing.py).

A node sends its evidence in its PrepareReply; the coordinator relays every node's to every node
in the ComputeRequest, untouched, and reads only the key ids (to see whether every pair named
the same key). Whatever arrives is checked for shape here before anyone reads a tag.
"""

from __future__ import annotations

from mpc.config import NODE_NAME
from mpc.errors import RemoteProtocolError, quoted
from mpc.protocols.pairing import KEY_ID_BYTES, TAG_BYTES, Evidence
from mpc.v1 import mpc_pb2

MAX_TAGS = 256   # one per peer: the most participants a session may have


def evidence_to_wire(evidence: Evidence | None) -> mpc_pb2.Evidence | None:
    """A node's evidence as its PrepareReply carries it (None: it named no pair key)."""
    if evidence is None or not evidence.tags:
        return None
    return mpc_pb2.Evidence(length=evidence.length, frac_bits=evidence.frac_bits, input_version=evidence.input_version,
                            tags={peer: mpc_pb2.PairTag(key_id=key_id, tag=tag)
                                  for peer, (key_id, tag) in evidence.tags.items()})


def evidence_from_wire(message: mpc_pb2.Evidence, what: str) -> Evidence:
    """Parse and check the shape of one node's evidence.

    Raises: RemoteProtocolError naming `what` and the field at fault.
    """
    if len(message.tags) > MAX_TAGS:
        raise RemoteProtocolError(f"{what}: more than {MAX_TAGS} tags")
    tags: dict[str, tuple[bytes, bytes]] = {}
    for peer, entry in message.tags.items():
        if not NODE_NAME.match(peer):
            raise RemoteProtocolError(f"{what}: a tag for {quoted(peer, 40)}, which is not a node name")
        if len(entry.key_id) != KEY_ID_BYTES or len(entry.tag) != TAG_BYTES:
            raise RemoteProtocolError(f"{what}: the tag for node {peer} needs a {KEY_ID_BYTES}-byte key id and a "
                                      f"{TAG_BYTES}-byte tag")
        tags[peer] = (bytes(entry.key_id), bytes(entry.tag))
    return Evidence(int(message.length), int(message.frac_bits), int(message.input_version), tags)
