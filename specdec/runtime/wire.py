"""Packing probability rows into the ProbRows message and back.

Rows travel as raw little-endian float32, never `repeated float`. A row with few non-zero
entries (greedy, top-k/top-p, one-hot drafts) goes sparse: ids + probabilities of the
non-zero entries only, so greedy verification costs bytes, not a vocabulary, per row.
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


def decode_rows(message: common_pb2.ProbRows, vocab_size: int | None = None) -> torch.Tensor:
    """ProbRows -> [n, V] float32 rows. `vocab_size` widens sparse rows to a known vocabulary."""
    width = vocab_size or message.vocab_size
    if message.dense:
        dense = np.frombuffer(message.dense, dtype="<f4").reshape(message.num_rows, message.vocab_size)
        rows = torch.from_numpy(dense.astype(np.float32))
        if width > message.vocab_size:
            rows = torch.nn.functional.pad(rows, (0, width - message.vocab_size))
        return rows
    lengths = np.frombuffer(message.sparse_row_lengths, dtype="<i4")
    token_ids = np.frombuffer(message.sparse_token_ids, dtype="<i4")
    probs = np.frombuffer(message.sparse_probs, dtype="<f4")
    if lengths.size != message.num_rows or not token_ids.size == probs.size == int(lengths.sum()):
        raise ValueError("malformed sparse ProbRows: lengths do not match the entries")
    if token_ids.size and not 0 <= int(token_ids.min()) <= int(token_ids.max()) < width:
        raise ValueError(f"malformed sparse ProbRows: a token id is outside [0, {width})")
    rows = np.zeros((message.num_rows, width), dtype=np.float32)
    # numpy, not torch: torch.repeat_interleave costs milliseconds per call on small inputs.
    rows[np.repeat(np.arange(message.num_rows), lengths), token_ids] = probs
    return torch.from_numpy(rows)


def row_argmax(message: common_pb2.ProbRows) -> int:
    """The argmax of a one-row ProbRows without widening it: the greedy correction."""
    if message.dense:
        return int(np.frombuffer(message.dense, dtype="<f4").argmax())
    token_ids = np.frombuffer(message.sparse_token_ids, dtype="<i4")
    if message.num_rows != 1 or not token_ids.size:
        raise ValueError("row_argmax needs one row with at least one entry")
    return int(token_ids[np.frombuffer(message.sparse_probs, dtype="<f4").argmax()])


def _le(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
