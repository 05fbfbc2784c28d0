"""The one exception tree of mpc.

Messages name the session, party, input or file and what was expected versus what came.
They never contain a share, seed, key or input value.
"""

from __future__ import annotations


class MpcError(Exception):
    """Base class of every error mpc raises on purpose."""


class ConfigError(MpcError):
    """A cluster file, policy or command-line setting is missing or wrong."""


class InputError(MpcError):
    """A private input is malformed, out of range, or would overflow the ring."""


class StoreError(MpcError):
    """The node's local store cannot do what was asked (missing input, existing name...)."""


class PolicyError(MpcError):
    """A node's owner policy refuses the session; the message names the policy."""


class AuthError(MpcError):
    """The caller's certificate identity is not allowed to do this."""


class ProtocolError(MpcError):
    """Abstract: a protocol run went wrong."""


class LocalProtocolError(ProtocolError):
    """We misused a protocol object (a bug or a wrong call order on our side)."""


class RemoteProtocolError(ProtocolError):
    """A peer or the coordinator sent something the protocol does not allow."""


class RoundMismatch(RemoteProtocolError):
    """A message came for the wrong session step, or twice."""


class UnknownSession(RemoteProtocolError):
    """A message names a session this node does not know."""


class SessionClosed(RemoteProtocolError):
    """A message names a session that has already finished, failed or been interrupted."""


class StaleShape(RemoteProtocolError):
    """A one-round session states a shape or a pair key that is not this node's now (its input was
    replaced, or it restarted): refused before anything is shared; the coordinator prepares anew."""


class PeerUnavailable(MpcError):
    """A node could not be reached or did not answer before its deadline."""


class SessionFailed(MpcError):
    """A computation failed; the message says at which node and why."""


class Busy(MpcError):
    """A node has as many live sessions as its owner allows (in total or for this coordinator)."""


# A caller can send names, ids and steps of any size; what an error or a log line quotes of them is
# bounded by these, so that the caller, not the node, pays for a long string (and an error still
# fits in gRPC's status metadata).
QUOTE_LIMIT = 200
MESSAGE_LIMIT = 2000


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` as a message may quote it: repr'd, cut to `limit` characters with the full length said."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def clipped(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """A whole error message cut to `limit` characters (a last resort; quote caller strings with `quoted`)."""
    return message if len(message) <= limit else message[:limit] + f"... ({len(message) - limit} more characters)"
