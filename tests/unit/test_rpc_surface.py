"""No RPC returns a raw input or a single input share to anyone (issue 5, "Authorization").

The proof is a list: every RPC a node serves, with every field of its response message
(walked recursively from the generated descriptors), must equal the table written below, in
which each field says why it is safe to hand to the caller. Adding an RPC or a response field
changes the list and fails this test until someone adds the row here, with its reason: the
table is the review.

Who may call what (DESIGN.md §2, mpc/node/servicer.py): Control only with a coordinator
certificate, Peer only with a node certificate of the cluster; the health service with any
certificate of the cluster CA.

The requests are reviewed the same way (EXPECTED_REQUESTS): every field a caller controls, and
why it cannot make a node reveal more than the declared output. Since the protocol catalogue
(mpc/protocols/catalogue.py), PrepareRequest names its protocol by wire id and carries its
parameters in `map<string, Param> params`; PROTOCOLS lists every protocol of the catalogue with
its parameters, how the nodes' output shares combine and what the words a node returns are, so a
protocol added to the catalogue fails this test until its row is reviewed here (STYLE.md §9).

A second test starts a 3-node cluster, stores distinctive values and checks that the bytes of
a Status reply hold none of them in any encoding (integration-light: loopback only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import struct
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2

from mpc.coordinator.client import Coordinator
from mpc.protocols.catalogue import CATALOGUE
from mpc.transport.tls import TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc
from tests.integration.harness import running_cluster

# ---- the table -----------------------------------------------------------------------------------
#
# RPC -> (request type, "unary"/"stream" request -> response, response type, response fields).
# A field is "path: type"; a repeated field's path ends in "[]"; a nested message's fields follow
# it as "path.field". The comment on each row is the reason the field reveals nothing private.

EXPECTED: dict[str, tuple[str, str, str, list[str]]] = {
    # Control (coordinator -> node) -----------------------------------------------------------------
    "mpc.v1.Control/Prepare": ("mpc.v1.PrepareRequest", "unary -> unary", "mpc.v1.PrepareReply", [
        "session_id: string",   # echoes the coordinator's own fresh id
        "node: string",         # the callee's name, public (it is in the cluster file)
        "length: uint64",       # public shape: the words of this node's contribution (the coordinator
                                # checks the nodes agree before anything is shared, and a sum's length is
                                # public); for an auction, whose nodes' bids are laid end to end, the number
                                # of bids this node holds: the stored length Status shows anyway, and the
                                # result names the winner's index among them. 1 for a vote (the ballot count
                                # stays hidden), the option count for a plurality vote.
        "frac_bits: uint32",    # public scale of the stored encoding (0 for votes)
        "is_scalar: bool",      # public shape
        "input_version: uint64",  # public: which stored version takes part (it keys the release budget
                                  # and enters the session description the nodes agree on)
        # The keyed path's evidence (mpc/protocols/pairing.py): the same public shape again, and per peer
        # the public id of a pair key (an HKDF output of a seed the coordinator never saw) and an
        # HMAC-SHA256 tag, under a key the coordinator never holds, over the public session description.
        "evidence: message mpc.v1.Evidence",
        "evidence.length: uint64",
        "evidence.frac_bits: uint32",
        "evidence.input_version: uint64",
        "evidence.tags[]: message mpc.v1.Evidence.TagsEntry",
        "evidence.tags[].key: string",
        "evidence.tags[].value: message mpc.v1.PairTag",
        "evidence.tags[].value.key_id: bytes",
        "evidence.tags[].value.tag: bytes",
    ]),
    "mpc.v1.Control/Compute": ("mpc.v1.ComputeRequest", "unary -> stream", "mpc.v1.ShareChunk", [
        "session_id: string",   # echo
        "node: string",         # the callee's name
        "offset: uint64",       # position of the chunk in the share (public framing)
        "total_length: uint64",  # the agreed, public length
        "words: bytes",         # this node's OUTPUT share, combined as PROTOCOLS below says: x_i plus
                                # pairwise PRG masks (sum, average, plurality counts), an XOR share of the
                                # output bits (vote, threshold, the clearing price's one-hot vector), or its
                                # additive share of a program's return value (the auction's winning key, or
                                # winner's position and second price; a plurality's winner), which the last
                                # Beaver product (a select) re-randomises: uniformly random on its own, and
                                # only the combination of every node's share is the (public) result.
                                # It is never an input share: those travel node to node only, and not
                                # even as shares (seeds, OT messages and masked Beaver openings); an
                                # auction's bids never leave their node at all, only masked openings.
                                # The node sends it once per session: a second Compute is refused.
        "progress: message mpc.v1.Progress",     # only when the coordinator asks, every 0.25 s before
        "progress.peer_bytes_sent: uint64",      # the share: counts of what the node exchanged with its
        "progress.peer_bytes_received: uint64",  # peers so far. They follow from the session's public
        "progress.peer_messages: uint64",        # shape (parties, lengths, OT reuse), not from inputs.
    ]),
    # The one-round path: Prepare's and Compute's answers in one stream, per session.
    "mpc.v1.Control/Run": ("mpc.v1.RunRequest", "stream -> stream", "mpc.v1.RunReply", [
        "session_id: string",   # echo
        "node: string",         # the callee's name
        "offset: uint64",       # as ShareChunk
        "total_length: uint64",
        "words: bytes",         # this node's OUTPUT share, exactly as Compute's words (see there); never
                                # sent with a refusal, and never before the node checked its own stated shape
        "shape: message mpc.v1.Shape",   # the callee's public shape for the query, as Prepare reports it
        "shape.length: uint64",
        "shape.frac_bits: uint32",
        "shape.is_scalar: bool",
        "shape.input_version: uint64",
        "key_ids[]: message mpc.v1.RunReply.KeyIdsEntry",   # per peer, the public id of the newest pair key
        "key_ids[].key: string",                           # (an HKDF output of a seed the coordinator never
        "key_ids[].value: bytes",                          # saw), as Prepare's evidence names it
        "code: string",         # a refusal: its status name and message, as Prepare's and Compute's errors
        "error: string",
        "stale: bool",          # the refusal is a stated shape or key that is not the node's now
        # Pool tickets for the next session of the query (mpc/ot/pool.py "Tickets"), one per peer: a fresh
        # random 16-byte id (secrets.token_bytes) and the reserved ranges, which name pool batches by their
        # random 8-byte ids and give word offsets and counts. Positions in the node's pool, the same for any
        # input; the choice bits and chosen messages of those ranges never leave the node.
        "tickets[]: message mpc.v1.PoolTicket",
        "tickets[].receiver: string",   # the callee's name
        "tickets[].sender: string",     # a participant's name
        "tickets[].id: bytes",
        "tickets[].segments: bytes",
    ]),
    "mpc.v1.Control/Abort": ("mpc.v1.AbortRequest", "unary -> unary", "mpc.v1.AbortReply", []),
    "mpc.v1.Control/Status": ("mpc.v1.StatusRequest", "unary -> unary", "mpc.v1.StatusReply", [
        "node: string",         # the callee's name
        "version: string",      # the mpc version
        "inputs[]: message mpc.v1.InputInfo",   # names and shapes only, never values:
        "inputs[].name: string",        # the input's name (the owner chose it; it is what sessions cite)
        "inputs[].length: uint64",      # public shape; 0 for ballots (a vote hides their count)
        "inputs[].frac_bits: uint32",   # public scale
        "inputs[].is_scalar: bool",     # public shape
        "inputs[].version: uint64",     # public: the stored version (a counter, never reused)
        "inputs[].kind: string",        # public declaration: number or ballots
        "inputs[].bounded: bool",       # whether bounds were declared
        "inputs[].lo: sint64",          # the declared public bounds (what refusals are computed from)
        "inputs[].hi: sint64",
        "inputs[].epsilon_spent: string",   # the owner's DP budget: what DP releases spent (their count and
        "inputs[].epsilon_budget: string",  # sizes are what the coordinators asked for; no value enters it)
        "inputs[].delta_spent: string",
        "inputs[].delta_budget: string",
        "inputs[].exact_allowed: bool",     # the owner's policy: exact releases allowed, or DP only
        "active_sessions: uint32",      # a count
        "cert_not_after: string",       # the node's certificate expiry (the certificate itself is
                                        # sent in every TLS handshake anyway)
        "collections[]: message mpc.v1.CollectionInfo",   # contributors' collections at this node:
        "collections[].name: string",          # the public rule the node's operator created,
        "collections[].kind: string",
        "collections[].length: uint32",
        "collections[].min_batch: uint64",
        "collections[].submissions: uint64",   # how many submissions it stores (public by design, DESIGN.md §12)
        "collections[].closed: bool",          # whether sessions may run over it
    ]),
    # Peer (node <-> node): the only answer is an empty acknowledgement --------------------------------
    "mpc.v1.Peer/Send": ("mpc.v1.PeerFrame", "stream -> unary", "mpc.v1.PeerAck", []),
    "mpc.v1.Peer/Deliver": ("mpc.v1.PeerMessage", "unary -> unary", "mpc.v1.PeerAck", []),
    "mpc.v1.Peer/Stream": ("mpc.v1.StreamMessage", "stream -> stream", "mpc.v1.StreamRefusal", [
        "seq: uint64",          # echoes the caller's own message number
        "session_id: string",   # and its session (the caller's own id)
        "code: string",         # only for a refused message: status name and message, as Deliver's errors
        "error: string",
    ]),
    # Submit (contributor -> node, on the node's submission listener, no client certificate): the answers
    # are about the caller's own submissions and the collection's public spec, never a share or a value.
    "mpc.v1.Submit/Submit": ("mpc.v1.SubmitRequest", "unary -> unary", "mpc.v1.SubmitReply", [
        "results[]: message mpc.v1.SubmitResult",   # one per submission of the caller's own batch, in order
        "results[].stored: bool",       # whether this node now holds the caller's share
        "results[].replaced: bool",     # whether it replaced the same credential's earlier one
        "results[].code: string",       # a refusal's status name
        "results[].error: string",      # and its reason, naming the credential by 8 hex digits (the caller's own)
    ]),
    "mpc.v1.Submit/Describe": ("mpc.v1.CollectionRequest", "unary -> unary", "mpc.v1.CollectionReply", [
        "name: string",                 # the collection's public spec, the same at every node: what a
        "kind: string",                 # contributor needs to split and check its value
        "lo: sint64",
        "hi: sint64",
        "length: uint32",
        "min_batch: uint64",
        "resubmit: string",
        "owner_key: bytes",             # the owner's Ed25519 public key (public by definition)
        "submissions: uint64",          # how many submissions this node stores: public by design (DESIGN.md §12)
        "nodes[]: string",              # the nodes that hold its shares: what a contributor splits over
    ]),
}

# RPC -> every field of its request (walked like the responses). The comment on each row is what the
# caller controls and why that cannot make the node reveal more than a session's declared output.
# Control callers are coordinators: semi-honest at best, and across sessions the adversary of
# DESIGN.md §9. Peer callers are the other nodes of the cluster.
EXPECTED_REQUESTS: dict[str, list[str]] = {
    "mpc.v1.Control/Prepare": [
        "session_id: string",   # 32 lowercase hex characters or refused; never reused at a node
        "protocol: uint32",     # a wire id of the catalogue (PROTOCOLS below); any other is refused
                                # (INVALID_ARGUMENT "unknown protocol N") and audited as refused
        "input_name: string",   # checked against the name pattern before any message quotes it; the
                                # owner's policy decides which protocols may use it
        "participants[]: string",   # node names of the cluster, no repeats, including the callee, at least
                                    # min_participants, and the set the owner pinned (participants)
        "timeout_ms: uint32",   # the session's deadline, capped at the node (24 h)
        "params[]: message mpc.v1.PrepareRequest.ParamsEntry",   # the protocol's parameters by name: only
        "params[].key: string",                                  # those its catalogue entry declares, each
        "params[].value: message mpc.v1.Param",                  # of its declared type and validated (else
        "params[].value.integer: sint64",                        # INVALID_ARGUMENT naming the parameter,
        "params[].value.flag: bool",                             # audited as refused). Every parameter enters
        "params[].value.integers: message mpc.v1.IntegerList",   # the session digest the nodes agree on and
        "params[].value.integers.values[]: sint64",              # the release query the owner's budget counts:
        "params[].value.real: double",            # a DP release's epsilon or delta
                                                                 # another parameter is another, budgeted query
    ],
    "mpc.v1.Control/Compute": [
        "session_id: string",   # a session this coordinator prepared here (another coordinator's: refused)
        "frac_bits: uint32",    # the common scale: refused below the node's own, above 32, or non-zero for
                                # a protocol that takes integers; refusals look at declared bounds only
        "length: uint64",       # words of the output share the coordinator expects: must equal the node's own
        "progress: bool",       # ask for Progress chunks (sizes of the public shape only)
        "input_versions[]: message mpc.v1.ComputeRequest.InputVersionsEntry",   # every participant's input
        "input_versions[].key: string",                                         # version: the node checks its
        "input_versions[].value: uint64",                                       # own; all enter the digest
        "lengths[]: message mpc.v1.ComputeRequest.LengthsEntry",   # every participant's length as reported at
        "lengths[].key: string",                                   # prepare: the node checks its own and that
        "lengths[].value: uint64",                                 # they name exactly the participants; all enter
                                                                   # the digest, so a lie about another node's
                                                                   # length fails agreement (an auction of fewer
                                                                   # than two bids is refused before that)
        # Every node's evidence from prepare, relayed: each node checks every peer's tag for it against its
        # own description and that the lengths, versions and scale above are the ones the nodes reported;
        # any difference (or a tag the coordinator forged) fails the session before anything is shared.
        "evidence[]: message mpc.v1.ComputeRequest.EvidenceEntry",
        "evidence[].key: string",
        "evidence[].value: message mpc.v1.Evidence",
        "evidence[].value.length: uint64",
        "evidence[].value.frac_bits: uint32",
        "evidence[].value.input_version: uint64",
        "evidence[].value.tags[]: message mpc.v1.Evidence.TagsEntry",
        "evidence[].value.tags[].key: string",
        "evidence[].value.tags[].value: message mpc.v1.PairTag",
        "evidence[].value.tags[].value.key_id: bytes",
        "evidence[].value.tags[].value.tag: bytes",
    ],
    # Prepare's request and Compute's statement in one: every check of both applies, and each node
    # checks its own stated shape and that it holds every named pair key before anything is shared.
    "mpc.v1.Control/Run": [
        "prepare: message mpc.v1.PrepareRequest",   # exactly as Prepare's request (see there)
        "prepare.session_id: string",
        "prepare.protocol: uint32",
        "prepare.input_name: string",
        "prepare.participants[]: string",
        "prepare.timeout_ms: uint32",
        "prepare.params[]: message mpc.v1.PrepareRequest.ParamsEntry",
        "prepare.params[].key: string",
        "prepare.params[].value: message mpc.v1.Param",
        "prepare.params[].value.integer: sint64",
        "prepare.params[].value.flag: bool",
        "prepare.params[].value.integers: message mpc.v1.IntegerList",
        "prepare.params[].value.integers.values[]: sint64",
        "prepare.params[].value.real: double",
        "shapes[]: message mpc.v1.RunRequest.ShapesEntry",   # every participant's shape: the node refuses
        "shapes[].key: string",                             # (stale) unless its own is exactly what it would
        "shapes[].value: message mpc.v1.Shape",             # report at prepare, and unless they name exactly the
        "shapes[].value.length: uint64",                    # participants; the versions and lengths of all enter
        "shapes[].value.frac_bits: uint32",                 # the session digest, so a lie about another node's
        "shapes[].value.is_scalar: bool",                   # fails agreement, or (a keyed sum) leaves masks that
        "shapes[].value.input_version: uint64",             # do not cancel: noise (tests/integration/test_one_round.py)
        "frac_bits: uint32",    # as Compute's, and it must be the largest of the stated shapes'
        "length: uint64",       # as Compute's
        "key_ids[]: message mpc.v1.RunRequest.KeyIdsEntry",   # the pair key to use with each peer, by public
        "key_ids[].key: string",                             # id: exactly every peer or none, each held by the
        "key_ids[].value: bytes",                            # node (else refused, stale) before anything is shared
        # Every ordered pair's pool ticket, or none: refused unless exactly one names each ordered pair; the
        # receiver takes back only a ticket it issued, with exactly its ranges, once, and the sender claims
        # ranges it holds and never claimed (else stale) before anything is shared; the whole statement
        # enters the session digest, so telling one node otherwise fails agreement before any output share
        # leaves (tests/integration/test_one_round.py).
        "tickets[]: message mpc.v1.PoolTicket",
        "tickets[].receiver: string",
        "tickets[].sender: string",
        "tickets[].id: bytes",
        "tickets[].segments: bytes",
    ],
    "mpc.v1.Control/Abort": [
        "session_id: string",   # only the coordinator that prepared the session may abort it
        "reason: string",       # quoted in the audit log, at most 200 characters
    ],
    "mpc.v1.Control/Status": [],
    "mpc.v1.Peer/Send": [
        "header: message mpc.v1.PeerHeader",   # first frame only; refused before the payload is read unless
        "header.session_id: string",           # the session is live here, the sender is a peer of it and
        "header.step: string",                 # equals the caller's certificate identity; a step has at most
        "header.sender: string",               # 64 characters and must be the one the engine expects next
        "header.payload_bytes: uint64",        # bounded (1 GiB); the frames must add up to it exactly
        "header.one_round: bool",   # a one-round session: an unknown session waits for its Run (bounded)
        "chunk: bytes",                        # the step's payload: decoded strictly by its engine (exact
                                               # length, no leftovers); never answered with data
    ],
    "mpc.v1.Peer/Deliver": [
        "header: message mpc.v1.PeerHeader",   # as for Send, in one message
        "header.session_id: string",
        "header.step: string",
        "header.sender: string",
        "header.payload_bytes: uint64",
        "header.one_round: bool",   # a one-round session: an unknown session waits for its Run (bounded)
        "payload: bytes",
    ],
    "mpc.v1.Peer/Stream": [
        "seq: uint64",                         # the sender's message number, echoed in a refusal
        "header: message mpc.v1.PeerHeader",   # as for Deliver, one message per frame; a session not yet
        "header.session_id: string",           # known waits for it (at most 10 s, 64 messages per peer)
        "header.step: string",
        "header.sender: string",
        "header.payload_bytes: uint64",
        "header.one_round: bool",   # a one-round session: an unknown session waits for its Run (bounded)
        "payload: bytes",
        "bundle[]: message mpc.v1.PeerMessage",   # instead: at most 16 messages of one session, each as for
        "bundle[].header: message mpc.v1.PeerHeader",   # Deliver, delivered in order (the first refused ends
        "bundle[].header.session_id: string",           # the rest); with a header besides, refused
        "bundle[].header.step: string",
        "bundle[].header.sender: string",
        "bundle[].header.payload_bytes: uint64",
        "bundle[].header.one_round: bool",   # a one-round session: an unknown session waits for its Run (bounded)
        "bundle[].payload: bytes",
    ],
    # Contributors: anyone who reaches the submission listener. A submission is stored only under a
    # credential the collection's owner signed, one per credential; nothing in a request makes the
    # node send anything but the per-submission results and the public spec.
    "mpc.v1.Submit/Submit": [
        "collection: string",                  # must name a collection of this node (else NOT_FOUND-like refusal)
        "submissions[]: message mpc.v1.Submission",   # at most 10,000 a call
        "submissions[].token: bytes",          # 80 bytes, verified against the owner's key (Ed25519)
        "submissions[].nonce: bytes",          # 16 bytes, the same at every node for one submission
        "submissions[].share: bytes",          # exactly 8 * length bytes: stored, never answered
    ],
    "mpc.v1.Submit/Describe": [
        "collection: string",                  # a name; the answer is that collection's public spec
    ],
}

# Every protocol of the catalogue, by wire id: (name, its parameters as "name: type", how the output
# shares combine, what a node's output share is). The reason on each row is what the opened result
# reveals; anything else stays secret, and the output share alone is uniform (see Compute.words).
# A DP release's parameters (mpc/protocols/catalogue.py `Private`), on every protocol that has one: the
# noise is public, chosen by the coordinator and checked by every node against (epsilon, delta).
PRIVATE = ["epsilon: float | None", "delta: float | None", "coins: int | None", "sensitivity: int | None",
           "unit: int | None", "local_noise: bool"]
PROTOCOLS: dict[int, tuple[str, list[str], str, str]] = {
    1: ("sum", PRIVATE, "add", "x_i plus pairwise masks; opens the (elementwise) sum, with --epsilon plus "
                               "binomial noise no coalition of n - 1 nodes knows"),
    2: ("average", [*PRIVATE, "elementwise: bool"], "add",
        "masked sums of values and of the record count; opens both (the sums noisy with --epsilon)"),
    3: ("vote", ["threshold: int | None"], "xor",
        "an XOR share of one bit; opens YES/NO, neither the tally nor the ballot count"),
    4: ("threshold", ["threshold: int"], "xor",
        "XOR shares of one bit per element; opens [sum >= K] only"),
    5: ("auction", ["second_price: bool"], "add",
        "a share of the winning key (or of the winner's position and the second price); opens the "
        "winner and the price, no losing bid and, with second_price, not the winning bid"),
    6: ("clearing-price", ["prices: tuple[int, ...]"], "xor",
        "XOR shares of a one-hot vector over the public grid; opens the clearing price only"),
    7: ("plurality", [*PRIVATE, "options: int", "winner_only: bool"], "add",
        "masked counts per option (or a share of the winner alone); opens those (noisy with --epsilon)"),
    8: ("histogram", [*PRIVATE, "edges: tuple[int, ...]"], "add",
        "masked counts per public bin; opens those (noisy with --epsilon)"),
    9: ("intersect", ["reveal: int", "recipients: tuple[int, ...]"], "add",
        "the comparing node's count (and its share of the sum, made with one correlated OT per position "
        "with each owner), 0 (or the owner's share) elsewhere; opens the size (and the sum); members go "
        "to the named nodes' data directories, never to the coordinator"),
    10: ("collection-sum", [], "add",
         "an additive share of the valid submissions' sum, with the valid and complete counts (public once the "
         "validity bits are opened among the nodes); opens the sum and the counts, never one submission"),
    11: ("collection-vote", [], "xor",
         "an XOR share of one bit, [yes >= half of the valid ballots]; opens only YES/NO"),
    12: ("collection-threshold", ["threshold: int"], "xor",
         "XOR shares of one bit per element, [sum of the valid submissions >= K]; opens only those bits"),
    13: ("collection-plurality", [*PRIVATE, "options: int", "winner_only: bool"], "add",
         "additive shares of the valid one-hot votes' counts per option with the valid and complete counts, "
         "noisy with --epsilon (or a share of the winner alone); opens those, never one vote"),
    14: ("collection-auction", ["second_price: bool"], "add",
         "a share of the winning key (or of the winner's place and the second price), the counts and the "
         "winning credential id; opens the winner and the price, no losing bid and, with second_price, not the "
         "winning bid"),
}
# The types a catalogue parameter may have: the ones `map<string, Param>` carries (mpc/node/servicer.py).
PARAM_TYPES = {"bool", "int", "int | None", "float | None", "tuple[int, ...]"}

# The standard health service every node also serves (mpc/node/daemon.py): a serving status.
EXPECTED_HEALTH: dict[str, tuple[str, str, str, list[str]]] = {
    "grpc.health.v1.Health/Check": ("grpc.health.v1.HealthCheckRequest", "unary -> unary",
                                    "grpc.health.v1.HealthCheckResponse",
                                    ["status: enum grpc.health.v1.HealthCheckResponse.ServingStatus"]),
    "grpc.health.v1.Health/Watch": ("grpc.health.v1.HealthCheckRequest", "unary -> stream",
                                    "grpc.health.v1.HealthCheckResponse",
                                    ["status: enum grpc.health.v1.HealthCheckResponse.ServingStatus"]),
    # Every registered health service name ("" and "mpc.v1.Control") with its serving status.
    "grpc.health.v1.Health/List": ("grpc.health.v1.HealthListRequest", "unary -> unary",
                                   "grpc.health.v1.HealthListResponse", [
                                       "statuses[]: message grpc.health.v1.HealthListResponse.StatusesEntry",
                                       "statuses[].key: string",
                                       "statuses[].value: message grpc.health.v1.HealthCheckResponse",
                                       "statuses[].value.status: enum "
                                       "grpc.health.v1.HealthCheckResponse.ServingStatus"]),
}

# The only response fields that carry bytes of a computation: each must be an output share.
EXPECTED_BYTES_FIELDS = {
    "mpc.v1.Control/Compute": ["words"],
    # The output share; public 16-byte key ids; pool tickets: random ids and pool positions (see the table)
    "mpc.v1.Control/Run": ["words", "key_ids[].value", "tickets[].id", "tickets[].segments"],
    # Exactly 16 and 32 bytes per peer (mpc/transport/evidence.py refuses any other size): a key id and
    # an HMAC tag over the public session description, never a value (tests/integration/test_keyed.py).
    "mpc.v1.Control/Prepare": ["evidence.tags[].value.key_id", "evidence.tags[].value.tag"],
    # The collection owner's public key, 32 bytes: part of the collection's public spec.
    "mpc.v1.Submit/Describe": ["owner_key"],
}


# ---- walking the descriptors -------------------------------------------------------------------

_TYPE_NAMES = {value: name[len("TYPE_"):].lower() for name, value in vars(FieldDescriptor).items()
               if name.startswith("TYPE_") and isinstance(value, int)}


def _is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)   # protobuf >= 5.28
    if repeated is not None:
        return bool(repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED  # pragma: no cover - older protobuf


def fields_of(message: Descriptor, prefix: str = "", seen: tuple[str, ...] = ()) -> list[str]:
    """Every field of `message`, recursively, as "path: type" (nested messages expanded)."""
    out = []
    for field in message.fields:
        path = prefix + field.name + ("[]" if _is_repeated(field) else "")
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            nested = field.message_type
            out.append(f"{path}: message {nested.full_name}")
            assert nested.full_name not in seen, f"recursive message {nested.full_name}: extend the walk"
            out += fields_of(nested, path + ".", (*seen, message.full_name))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            out.append(f"{path}: enum {field.enum_type.full_name}")
        else:
            out.append(f"{path}: {_TYPE_NAMES[field.type]}")
    return out


def surface(services: list[ServiceDescriptor]) -> dict[str, tuple[str, str, str, list[str]]]:
    """RPC -> (request type, streaming, response type, response fields) for every method."""
    table = {}
    for service in services:
        for method in service.methods:
            shape = f"{'stream' if method.client_streaming else 'unary'} -> " \
                    f"{'stream' if method.server_streaming else 'unary'}"
            table[f"{service.full_name}/{method.name}"] = (
                method.input_type.full_name, shape, method.output_type.full_name, fields_of(method.output_type))
    return table


def test_every_rpc_and_response_field_is_in_the_reviewed_table() -> None:
    services = list(mpc_pb2.DESCRIPTOR.services_by_name.values())
    assert sorted(s.full_name for s in services) == ["mpc.v1.Control", "mpc.v1.Peer", "mpc.v1.Submit"]
    actual = surface(services)
    assert sorted(actual) == sorted(EXPECTED), "an RPC was added or removed: review it and update EXPECTED"
    for rpc, row in EXPECTED.items():
        assert actual[rpc] == row, f"{rpc} changed: review every response field and update EXPECTED\n" \
                                   f"now: {actual[rpc]}\nwas: {row}"


def test_every_rpc_and_request_field_is_in_the_reviewed_table() -> None:
    services = list(mpc_pb2.DESCRIPTOR.services_by_name.values())
    requests = {f"{s.full_name}/{m.name}": fields_of(m.input_type) for s in services for m in s.methods}
    assert sorted(requests) == sorted(EXPECTED_REQUESTS), "an RPC was added or removed: review its request"
    for rpc, fields in EXPECTED_REQUESTS.items():
        assert requests[rpc] == fields, f"{rpc}'s request changed: review every field and update " \
                                        f"EXPECTED_REQUESTS\nnow: {requests[rpc]}\nwas: {fields}"
    # Protocols and their parameters are no longer fields of their own: no enum is left on the wire.
    assert not mpc_pb2.DESCRIPTOR.enum_types_by_name


def _type_name(kind: object) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)


def test_every_protocol_of_the_catalogue_is_in_the_reviewed_table() -> None:
    actual = {}
    for entry in CATALOGUE:
        hints = typing.get_type_hints(entry.params)
        params = [f"{f.name}: {_type_name(hints[f.name])}" for f in dataclasses.fields(entry.params)]
        actual[entry.wire_id] = (entry.name, params, entry.combine)
    assert sorted(actual) == sorted(PROTOCOLS), "a protocol was added to or removed from the catalogue: review it"
    for wire_id, (name, params, combine, _) in PROTOCOLS.items():
        assert actual[wire_id] == (name, params, combine), f"protocol {wire_id} changed: review its row\n" \
                                                           f"now: {actual[wire_id]}\nwas: {(name, params, combine)}"
        assert all(p.split(": ", 1)[1] in PARAM_TYPES for p in params), (name, params)
    # The proto's comment on PrepareRequest.protocol lists the same wire ids and names.
    proto = (Path(__file__).resolve().parents[2] / "protos" / "mpc" / "v1" / "mpc.proto").read_text(encoding="utf-8")
    comment = re.search(r"wire id in the catalogue \(mpc/protocols/catalogue\.py\):(.*?)uint32 protocol = 2;",
                        proto, re.S)
    assert comment is not None, "PrepareRequest.protocol lost its comment listing the wire ids"
    listed = dict(re.findall(r"(\d+) ([a-z][a-z-]*)", comment.group(1)))
    assert {int(k): v for k, v in listed.items()} == {w: row[0] for w, row in PROTOCOLS.items()}, listed


def test_the_health_service_returns_only_a_serving_status() -> None:
    assert surface(list(health_pb2.DESCRIPTOR.services_by_name.values())) == EXPECTED_HEALTH


def test_only_compute_returns_bytes_and_they_are_the_output_share() -> None:
    """No response field but ShareChunk.words can hold value bytes (bytes, or any number of them)."""
    byte_fields = {rpc: [f.split(":")[0] for f in fields if f.endswith(": bytes")]
                   for rpc, (_, _, _, fields) in surface(list(mpc_pb2.DESCRIPTOR.services_by_name.values())).items()}
    assert {rpc: f for rpc, f in byte_fields.items() if f} == EXPECTED_BYTES_FIELDS
    # A repeated number could carry a vector just as well: the only repeated response fields are
    # the list of InputInfo (names and shapes) in Status, the keyed path's tags and the pool tickets, one
    # per peer.
    repeated = [(rpc, f) for rpc, (_, _, _, fields) in EXPECTED.items() for f in fields
                if f.split(":")[0].endswith("[]")]
    assert repeated == [("mpc.v1.Control/Prepare", "evidence.tags[]: message mpc.v1.Evidence.TagsEntry"),
                        ("mpc.v1.Control/Run", "key_ids[]: message mpc.v1.RunReply.KeyIdsEntry"),
                        ("mpc.v1.Control/Run", "tickets[]: message mpc.v1.PoolTicket"),
                        ("mpc.v1.Control/Status", "inputs[]: message mpc.v1.InputInfo"),
                        ("mpc.v1.Control/Status", "collections[]: message mpc.v1.CollectionInfo"),
                        ("mpc.v1.Submit/Submit", "results[]: message mpc.v1.SubmitResult"),
                        ("mpc.v1.Submit/Describe", "nodes[]: string")]


# ---- Status of a running node never holds a stored value ----------------------------------------


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of n (negative numbers as their 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encodings(value: int) -> dict[str, bytes]:
    """Ways a stored int64 could show up in a serialized reply."""
    return {
        "int64 LE": struct.pack("<q", value), "int64 BE": struct.pack(">q", value),
        "varint": _varint(value), "zigzag varint": _varint((value << 1) ^ (value >> 63)),
        "decimal": str(value).encode(), "hex": f"{value & ((1 << 64) - 1):x}".encode(),
        "double": struct.pack("<d", float(value)), "float": struct.pack("<f", float(value)),
    }


def test_status_of_a_running_node_never_contains_a_stored_value(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            # Distinctive values: 13-digit random numbers, unlikely to occur anywhere by chance.
            values = {name: [(1 << 40) + secrets.randbelow(1 << 40) for _ in range(3)] for name in lc.cluster.nodes}
            scalars = {name: (1 << 40) + secrets.randbelow(1 << 40) for name in lc.cluster.nodes}
            fixed = {name: 1234.5678 + secrets.randbelow(1000) for name in lc.cluster.nodes}
            for name in lc.cluster.nodes:
                lc.put(name, "salary-vector", values[name], bounds=(0, 1 << 42))
                lc.put(name, "salary", [scalars[name]], scalar=True, bounds=(0, 1 << 42))
                lc.put(name, "rate", [round(fixed[name] * (1 << 16))], frac_bits=16, scalar=True)
            me = lc.cluster.require_coordinator()
            creds = TlsMaterial.load(lc.cluster.ca, me.cert, me.key).channel_credentials()

            async def replies() -> dict[str, bytes]:
                out = {}
                for name in lc.cluster.nodes:
                    node = lc.cluster.node(name)
                    async with grpc_channel(node.address, creds, node.name) as channel:
                        reply = await mpc_pb2_grpc.ControlStub(channel).Status(mpc_pb2.StatusRequest(), timeout=10)
                    out[name] = reply.SerializeToString()
                return out

            before = await replies()
            async with Coordinator(lc.cluster) as c:
                total = await c.sum("salary")
                assert total.value == sum(scalars.values())
                shown = [s.as_dict() for s in await c.status()]
            after = await replies()

            secrets_to_find: dict[str, int] = {}
            for name in lc.cluster.nodes:
                for i, v in enumerate(values[name]):
                    secrets_to_find[f"{name} salary-vector[{i}]"] = v
                secrets_to_find[f"{name} salary"] = scalars[name]
                secrets_to_find[f"{name} rate (encoded)"] = round(fixed[name] * (1 << 16))
            secrets_to_find["the sum"] = int(total.value)  # type: ignore[arg-type]
            for name in lc.cluster.nodes:
                blob = np.asarray(values[name], dtype="<i8").tobytes()
                for when, raw in (("before", before[name]), ("after", after[name])):
                    # Positive control: the scan looks at the real reply, which names the inputs.
                    assert b"salary-vector" in raw and name.encode() in raw, raw
                    assert blob not in raw, f"{name}: Status {when} a session holds a stored vector"
                    for what, value in secrets_to_find.items():
                        for how, needle in encodings(value).items():
                            assert needle not in raw, f"Status of {name} ({when} a sum) holds {what} as {how}"
                    assert str(fixed[name]).encode() not in raw
            text = repr(shown)
            for what, value in secrets_to_find.items():
                assert str(value) not in text, f"`mpc status` output holds {what}"
    asyncio.run(go())


@asynccontextmanager
async def grpc_channel(address: str, creds: grpc.ChannelCredentials, node: str) -> AsyncIterator[grpc.aio.Channel]:
    """A secure channel to node `node` (at `address`), closed on exit."""
    channel = grpc.aio.secure_channel(address, creds, options=channel_options(node))
    try:
        yield channel
    finally:
        await channel.close()
