from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "lenience")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LENIENCE_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    lenience: float
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., lenience: _Optional[float] = ...) -> None: ...

class ProbRows(_message.Message):
    __slots__ = ("num_rows", "vocab_size", "dense", "sparse_row_lengths", "sparse_token_ids", "sparse_probs")
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_ROW_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_PROBS_FIELD_NUMBER: _ClassVar[int]
    num_rows: int
    vocab_size: int
    dense: bytes
    sparse_row_lengths: bytes
    sparse_token_ids: bytes
    sparse_probs: bytes
    def __init__(self, num_rows: _Optional[int] = ..., vocab_size: _Optional[int] = ..., dense: _Optional[bytes] = ..., sparse_row_lengths: _Optional[bytes] = ..., sparse_token_ids: _Optional[bytes] = ..., sparse_probs: _Optional[bytes] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "vocab_size", "tokenizer_fingerprint", "max_context", "max_speculative_tokens", "precision", "feature_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_SPECULATIVE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    vocab_size: int
    tokenizer_fingerprint: str
    max_context: int
    max_speculative_tokens: int
    precision: str
    feature_size: int
    def __init__(self, model: _Optional[str] = ..., vocab_size: _Optional[int] = ..., tokenizer_fingerprint: _Optional[str] = ..., max_context: _Optional[int] = ..., max_speculative_tokens: _Optional[int] = ..., precision: _Optional[str] = ..., feature_size: _Optional[int] = ...) -> None: ...

class Features(_message.Message):
    __slots__ = ("offset", "num_rows", "width", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    num_rows: int
    width: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., num_rows: _Optional[int] = ..., width: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
