"""Packing probability rows into the ProbRows message and back.

Rows travel as raw little-endian float32, never `repeated float`. A row with few non-zero
entries (greedy, top-k/top-p, one-hot drafts) goes sparse: ids + probabilities of the
non-zero entries only, so a sampling draft's top-N rows cost bytes, not a vocabulary, each.
"""

from __future__ import annotations

import numpy as np
import torch

from specdec.v1 import common_pb2

_SPARSE_ENTRY_BYTES = 8  # int32 id + float32 prob
_DENSE_ENTRY_BYTES = 4


def encode_rows(rows: torch.Tensor) -> common_pb2.ProbRows:
    """[n, V] float32 rows -> ProbRows, sparse when that is smaller."""
    rows = rows.detach().to("cpu", torch.float32).contiguous()
    num_rows, vocab_size = rows.shape
    message = common_pb2.ProbRows(num_rows=num_rows, vocab_size=vocab_size)
    lengths = np.count_nonzero(rows.numpy(), axis=-1)  # [n]; numpy's is twice as fast as torch's
    if int(lengths.sum()) * _SPARSE_ENTRY_BYTES < rows.numel() * _DENSE_ENTRY_BYTES:
        row_idx, token_ids = rows.nonzero(as_tuple=True)  # row-major, so grouped by row
        message.sparse_row_lengths = _le(lengths, "<i4")
        message.sparse_token_ids = _le(token_ids.numpy(), "<i4")
        message.sparse_probs = _le(rows[row_idx, token_ids].numpy(), "<f4")
    else:
        message.dense = _le(rows.numpy(), "<f4")
    return message


def check_rows(message: common_pb2.ProbRows, vocab_size: int | None = None) -> None:
    """Raises ValueError saying what is wrong with a malformed message (its sender's bug), without widening
    its rows. `vocab_size`: the vocabulary the rows must fit in (default: the message's own width)."""
    width = vocab_size or message.vocab_size
    if message.vocab_size > width:
        raise ValueError(f"malformed ProbRows: rows {message.vocab_size} wide, wider than the vocabulary ({width})")
    if message.dense:
        _dense(message)
        return
    lengths, token_ids, _ = _sparse(message)
    if lengths.size and int(lengths.max()) > width:
        raise ValueError(f"malformed sparse ProbRows: a row has {int(lengths.max())} entries, more than the {width} "
                         "tokens of the vocabulary")
    if token_ids.size and not 0 <= int(token_ids.min()) <= int(token_ids.max()) < width:
        raise ValueError(f"malformed ProbRows: a token id is outside [0, {width})")


def decode_rows(message: common_pb2.ProbRows, vocab_size: int | None = None) -> torch.Tensor:
    """ProbRows -> [n, V] float32 rows. `vocab_size` widens sparse rows to a known vocabulary.
    A malformed message raises ValueError (check_rows)."""
    check_rows(message, vocab_size)
    width = vocab_size or message.vocab_size
    if message.dense:
        rows = torch.from_numpy(_dense(message).reshape(message.num_rows, message.vocab_size).astype(np.float32))
        if width > message.vocab_size:
            rows = torch.nn.functional.pad(rows, (0, width - message.vocab_size))
        return rows
    lengths, token_ids, probs = _sparse(message)
    rows = np.zeros((message.num_rows, width), dtype=np.float32)
    # numpy, not torch: torch.repeat_interleave costs milliseconds per call on small inputs.
    rows[np.repeat(np.arange(message.num_rows), lengths), token_ids] = probs
    return torch.from_numpy(rows)


def _dense(message: common_pb2.ProbRows) -> np.ndarray:
    """The dense float32 entries, checked against the message's shape."""
    if message.num_rows < 0 or message.vocab_size < 0:
        raise ValueError(f"malformed ProbRows: shape [{message.num_rows}, {message.vocab_size}]")
    dense = _array(message.dense, "<f4", "dense")
    if dense.size != message.num_rows * message.vocab_size:
        raise ValueError(
            f"malformed ProbRows: {dense.size} dense entries for [{message.num_rows}, {message.vocab_size}]"
        )
    return dense


def _sparse(message: common_pb2.ProbRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row lengths, token ids, probabilities), checked to agree with one another."""
    lengths = _array(message.sparse_row_lengths, "<i4", "sparse_row_lengths")
    token_ids = _array(message.sparse_token_ids, "<i4", "sparse_token_ids")
    probs = _array(message.sparse_probs, "<f4", "sparse_probs")
    if (lengths.size != message.num_rows or (lengths.size and int(lengths.min()) < 0)
            or not token_ids.size == probs.size == int(lengths.sum(dtype=np.int64))):
        raise ValueError("malformed sparse ProbRows: lengths do not match the entries")
    return lengths, token_ids, probs


def _array(data: bytes, dtype: str, name: str) -> np.ndarray:
    if len(data) % 4:
        raise ValueError(f"malformed ProbRows: {name} is {len(data)} bytes, not a whole number of 4-byte values")
    return np.frombuffer(data, dtype=dtype)


def _le(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
