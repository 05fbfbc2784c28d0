from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Param(_message.Message):
    __slots__ = ("integer", "flag", "integers", "real")
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    INTEGERS_FIELD_NUMBER: _ClassVar[int]
    REAL_FIELD_NUMBER: _ClassVar[int]
    integer: int
    flag: bool
    integers: IntegerList
    real: float
    def __init__(self, integer: _Optional[int] = ..., flag: _Optional[bool] = ..., integers: _Optional[_Union[IntegerList, _Mapping]] = ..., real: _Optional[float] = ...) -> None: ...

class IntegerList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("session_id", "protocol", "input_name", "participants", "timeout_ms", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Param
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Param, _Mapping]] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    protocol: int
    input_name: str
    participants: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    params: _containers.MessageMap[str, Param]
    def __init__(self, session_id: _Optional[str] = ..., protocol: _Optional[int] = ..., input_name: _Optional[str] = ..., participants: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ..., params: _Optional[_Mapping[str, Param]] = ...) -> None: ...

class PrepareReply(_message.Message):
    __slots__ = ("session_id", "node", "length", "frac_bits", "is_scalar", "input_version", "evidence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    IS_SCALAR_FIELD_NUMBER: _ClassVar[int]
    INPUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    node: str
    length: int
    frac_bits: int
    is_scalar: bool
    input_version: int
    evidence: Evidence
    def __init__(self, session_id: _Optional[str] = ..., node: _Optional[str] = ..., length: _Optional[int] = ..., frac_bits: _Optional[int] = ..., is_scalar: _Optional[bool] = ..., input_version: _Optional[int] = ..., evidence: _Optional[_Union[Evidence, _Mapping]] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("length", "frac_bits", "input_version", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: PairTag
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[PairTag, _Mapping]] = ...) -> None: ...
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    INPUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    length: int
    frac_bits: int
    input_version: int
    tags: _containers.MessageMap[str, PairTag]
    def __init__(self, length: _Optional[int] = ..., frac_bits: _Optional[int] = ..., input_version: _Optional[int] = ..., tags: _Optional[_Mapping[str, PairTag]] = ...) -> None: ...

class PairTag(_message.Message):
    __slots__ = ("key_id", "tag")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    key_id: bytes
    tag: bytes
    def __init__(self, key_id: _Optional[bytes] = ..., tag: _Optional[bytes] = ...) -> None: ...

class ComputeRequest(_message.Message):
    __slots__ = ("session_id", "frac_bits", "length", "progress", "input_versions", "lengths", "evidence")
    class InputVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LengthsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class EvidenceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Evidence
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Evidence, _Mapping]] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    INPUT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    frac_bits: int
    length: int
    progress: bool
    input_versions: _containers.ScalarMap[str, int]
    lengths: _containers.ScalarMap[str, int]
    evidence: _containers.MessageMap[str, Evidence]
    def __init__(self, session_id: _Optional[str] = ..., frac_bits: _Optional[int] = ..., length: _Optional[int] = ..., progress: _Optional[bool] = ..., input_versions: _Optional[_Mapping[str, int]] = ..., lengths: _Optional[_Mapping[str, int]] = ..., evidence: _Optional[_Mapping[str, Evidence]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("peer_bytes_sent", "peer_bytes_received", "peer_messages")
    PEER_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    PEER_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PEER_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    peer_bytes_sent: int
    peer_bytes_received: int
    peer_messages: int
    def __init__(self, peer_bytes_sent: _Optional[int] = ..., peer_bytes_received: _Optional[int] = ..., peer_messages: _Optional[int] = ...) -> None: ...

class ShareChunk(_message.Message):
    __slots__ = ("session_id", "node", "offset", "total_length", "words", "progress")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    node: str
    offset: int
    total_length: int
    words: bytes
    progress: Progress
    def __init__(self, session_id: _Optional[str] = ..., node: _Optional[str] = ..., offset: _Optional[int] = ..., total_length: _Optional[int] = ..., words: _Optional[bytes] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("session_id", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InputInfo(_message.Message):
    __slots__ = ("name", "length", "frac_bits", "is_scalar", "version", "kind", "bounded", "lo", "hi", "epsilon_spent", "epsilon_budget", "delta_spent", "delta_budget", "exact_allowed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    IS_SCALAR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BOUNDED_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    DELTA_SPENT_FIELD_NUMBER: _ClassVar[int]
    DELTA_BUDGET_FIELD_NUMBER: _ClassVar[int]
    EXACT_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    name: str
    length: int
    frac_bits: int
    is_scalar: bool
    version: int
    kind: str
    bounded: bool
    lo: int
    hi: int
    epsilon_spent: str
    epsilon_budget: str
    delta_spent: str
    delta_budget: str
    exact_allowed: bool
    def __init__(self, name: _Optional[str] = ..., length: _Optional[int] = ..., frac_bits: _Optional[int] = ..., is_scalar: _Optional[bool] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., bounded: _Optional[bool] = ..., lo: _Optional[int] = ..., hi: _Optional[int] = ..., epsilon_spent: _Optional[str] = ..., epsilon_budget: _Optional[str] = ..., delta_spent: _Optional[str] = ..., delta_budget: _Optional[str] = ..., exact_allowed: _Optional[bool] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "kind", "length", "min_batch", "submissions", "closed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    MIN_BATCH_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    length: int
    min_batch: int
    submissions: int
    closed: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., length: _Optional[int] = ..., min_batch: _Optional[int] = ..., submissions: _Optional[int] = ..., closed: _Optional[bool] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node", "version", "inputs", "active_sessions", "cert_not_after", "collections")
    NODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    node: str
    version: str
    inputs: _containers.RepeatedCompositeFieldContainer[InputInfo]
    active_sessions: int
    cert_not_after: str
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, node: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[InputInfo, _Mapping]]] = ..., active_sessions: _Optional[int] = ..., cert_not_after: _Optional[str] = ..., collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class Shape(_message.Message):
    __slots__ = ("length", "frac_bits", "is_scalar", "input_version")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    IS_SCALAR_FIELD_NUMBER: _ClassVar[int]
    INPUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    length: int
    frac_bits: int
    is_scalar: bool
    input_version: int
    def __init__(self, length: _Optional[int] = ..., frac_bits: _Optional[int] = ..., is_scalar: _Optional[bool] = ..., input_version: _Optional[int] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("prepare", "shapes", "frac_bits", "length", "key_ids", "tickets")
    class ShapesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Shape
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Shape, _Mapping]] = ...) -> None: ...
    class KeyIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    PREPARE_FIELD_NUMBER: _ClassVar[int]
    SHAPES_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    TICKETS_FIELD_NUMBER: _ClassVar[int]
    prepare: PrepareRequest
    shapes: _containers.MessageMap[str, Shape]
    frac_bits: int
    length: int
    key_ids: _containers.ScalarMap[str, bytes]
    tickets: _containers.RepeatedCompositeFieldContainer[PoolTicket]
    def __init__(self, prepare: _Optional[_Union[PrepareRequest, _Mapping]] = ..., shapes: _Optional[_Mapping[str, Shape]] = ..., frac_bits: _Optional[int] = ..., length: _Optional[int] = ..., key_ids: _Optional[_Mapping[str, bytes]] = ..., tickets: _Optional[_Iterable[_Union[PoolTicket, _Mapping]]] = ...) -> None: ...

class PoolTicket(_message.Message):
    __slots__ = ("receiver", "sender", "id", "segments")
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    receiver: str
    sender: str
    id: bytes
    segments: bytes
    def __init__(self, receiver: _Optional[str] = ..., sender: _Optional[str] = ..., id: _Optional[bytes] = ..., segments: _Optional[bytes] = ...) -> None: ...

class RunReply(_message.Message):
    __slots__ = ("session_id", "node", "offset", "total_length", "words", "shape", "key_ids", "code", "error", "stale", "tickets")
    class KeyIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    TICKETS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    node: str
    offset: int
    total_length: int
    words: bytes
    shape: Shape
    key_ids: _containers.ScalarMap[str, bytes]
    code: str
    error: str
    stale: bool
    tickets: _containers.RepeatedCompositeFieldContainer[PoolTicket]
    def __init__(self, session_id: _Optional[str] = ..., node: _Optional[str] = ..., offset: _Optional[int] = ..., total_length: _Optional[int] = ..., words: _Optional[bytes] = ..., shape: _Optional[_Union[Shape, _Mapping]] = ..., key_ids: _Optional[_Mapping[str, bytes]] = ..., code: _Optional[str] = ..., error: _Optional[str] = ..., stale: _Optional[bool] = ..., tickets: _Optional[_Iterable[_Union[PoolTicket, _Mapping]]] = ...) -> None: ...

class PeerHeader(_message.Message):
    __slots__ = ("session_id", "step", "sender", "payload_bytes", "one_round")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    ONE_ROUND_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    step: str
    sender: str
    payload_bytes: int
    one_round: bool
    def __init__(self, session_id: _Optional[str] = ..., step: _Optional[str] = ..., sender: _Optional[str] = ..., payload_bytes: _Optional[int] = ..., one_round: _Optional[bool] = ...) -> None: ...

class PeerFrame(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class PeerMessage(_message.Message):
    __slots__ = ("header", "payload")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    payload: bytes
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class PeerAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamMessage(_message.Message):
    __slots__ = ("seq", "header", "payload", "bundle")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    header: PeerHeader
    payload: bytes
    bundle: _containers.RepeatedCompositeFieldContainer[PeerMessage]
    def __init__(self, seq: _Optional[int] = ..., header: _Optional[_Union[PeerHeader, _Mapping]] = ..., payload: _Optional[bytes] = ..., bundle: _Optional[_Iterable[_Union[PeerMessage, _Mapping]]] = ...) -> None: ...

class StreamRefusal(_message.Message):
    __slots__ = ("seq", "session_id", "code", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    session_id: str
    code: str
    error: str
    def __init__(self, seq: _Optional[int] = ..., session_id: _Optional[str] = ..., code: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Submission(_message.Message):
    __slots__ = ("token", "nonce", "share")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    token: bytes
    nonce: bytes
    share: bytes
    def __init__(self, token: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., share: _Optional[bytes] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("collection", "submissions")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    submissions: _containers.RepeatedCompositeFieldContainer[Submission]
    def __init__(self, collection: _Optional[str] = ..., submissions: _Optional[_Iterable[_Union[Submission, _Mapping]]] = ...) -> None: ...

class SubmitResult(_message.Message):
    __slots__ = ("stored", "replaced", "code", "error")
    STORED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    replaced: bool
    code: str
    error: str
    def __init__(self, stored: _Optional[bool] = ..., replaced: _Optional[bool] = ..., code: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitResult, _Mapping]]] = ...) -> None: ...

class CollectionRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class CollectionReply(_message.Message):
    __slots__ = ("name", "kind", "lo", "hi", "length", "min_batch", "resubmit", "owner_key", "submissions", "nodes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    MIN_BATCH_FIELD_NUMBER: _ClassVar[int]
    RESUBMIT_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    lo: int
    hi: int
    length: int
    min_batch: int
    resubmit: str
    owner_key: bytes
    submissions: int
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., lo: _Optional[int] = ..., hi: _Optional[int] = ..., length: _Optional[int] = ..., min_batch: _Optional[int] = ..., resubmit: _Optional[str] = ..., owner_key: _Optional[bytes] = ..., submissions: _Optional[int] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...
