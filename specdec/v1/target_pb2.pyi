from specdec.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreRequest(_message.Message):
    __slots__ = ("session_id", "token_ids", "draft_token_ids", "sampling", "uniforms", "tokenizer_fingerprint", "features_from", "draft_probs", "correction_uniform")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    UNIFORMS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FROM_FIELD_NUMBER: _ClassVar[int]
    DRAFT_PROBS_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_UNIFORM_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    draft_token_ids: _containers.RepeatedScalarFieldContainer[int]
    sampling: _common_pb2.SamplingParams
    uniforms: _containers.RepeatedScalarFieldContainer[float]
    tokenizer_fingerprint: str
    features_from: int
    draft_probs: _common_pb2.ProbRows
    correction_uniform: float
    def __init__(self, session_id: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., draft_token_ids: _Optional[_Iterable[int]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., uniforms: _Optional[_Iterable[float]] = ..., tokenizer_fingerprint: _Optional[str] = ..., features_from: _Optional[int] = ..., draft_probs: _Optional[_Union[_common_pb2.ProbRows, _Mapping]] = ..., correction_uniform: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("num_accepted", "compute_seconds", "features", "next_token")
    NUM_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    num_accepted: int
    compute_seconds: float
    features: _common_pb2.Features
    next_token: int
    def __init__(self, num_accepted: _Optional[int] = ..., compute_seconds: _Optional[float] = ..., features: _Optional[_Union[_common_pb2.Features, _Mapping]] = ..., next_token: _Optional[int] = ...) -> None: ...

class ScoreStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: ScoreRequest
    def __init__(self, request: _Optional[_Union[ScoreRequest, _Mapping]] = ...) -> None: ...

class ScoreStreamResponse(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: ScoreResponse
    def __init__(self, response: _Optional[_Union[ScoreResponse, _Mapping]] = ...) -> None: ...

class TargetEndSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class TargetEndSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TargetGetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TargetGetModelInfoResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: _common_pb2.ModelInfo
    def __init__(self, info: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
