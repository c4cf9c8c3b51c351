"""specdec.runtime.wire: ProbRows encode/decode round trips bit for bit and picks the smaller layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specdec.runtime.wire import decode_rows, encode_rows
from specdec.v1 import common_pb2


def assert_bit_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def is_sparse(message: common_pb2.ProbRows) -> bool:
    sparse = bool(message.sparse_row_lengths)
    assert sparse != bool(message.dense), "exactly one layout must be set"
    return sparse


def test_dense_random_rows_round_trip_bit_for_bit():
    rows = torch.rand(3, 1000, generator=torch.Generator().manual_seed(0)).softmax(dim=-1)
    message = encode_rows(rows)
    assert not is_sparse(message)
    assert (message.num_rows, message.vocab_size) == (3, 1000)
    assert_bit_equal(decode_rows(message), rows)


def test_one_hot_rows_go_sparse_and_are_tiny():
    vocab = 49152
    rows = torch.zeros(4, vocab)
    rows[torch.arange(4), torch.tensor([0, 17, 49151, 17])] = 1.0
    message = encode_rows(rows)
    assert is_sparse(message)
    assert message.ByteSize() * 1000 < rows.numel() * 4  # vs. the dense float32 bytes
    assert_bit_equal(decode_rows(message), rows)


def test_top_k_truncated_rows_round_trip_sparse():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4096, generator=gen)
    kth = logits.topk(20, dim=-1).values[:, -1:]
    rows = logits.masked_fill(logits < kth, float("-inf")).softmax(dim=-1)
    message = encode_rows(rows)
    assert is_sparse(message)
    assert np.frombuffer(message.sparse_row_lengths, "<i4").tolist() == [20] * 5
    assert_bit_equal(decode_rows(message), rows)


def test_rows_with_different_numbers_of_entries_including_an_empty_row():
    rows = torch.zeros(3, 300)
    rows[0, [5, 6, 7]] = torch.tensor([0.2, 0.3, 0.5])
    rows[2, 299] = 1.0
    message = encode_rows(rows)
    assert is_sparse(message)
    assert_bit_equal(decode_rows(message), rows)


def test_zero_rows_round_trip():
    decoded = decode_rows(encode_rows(torch.zeros(0, 77)))
    assert decoded.shape == (0, 77) and decoded.dtype == torch.float32


@pytest.mark.parametrize("dense", [True, False])
def test_decode_widens_rows_to_a_larger_vocab_with_zeros(dense):
    rows = torch.rand(2, 64) if dense else torch.eye(2, 64)
    message = encode_rows(rows)
    assert is_sparse(message) != dense
    wide = decode_rows(message, vocab_size=100)
    assert wide.shape == (2, 100)
    assert_bit_equal(wide[:, :64].contiguous(), rows)
    assert (wide[:, 64:] == 0).all()


def _sparse(lengths, ids, probs, num_rows) -> common_pb2.ProbRows:
    return common_pb2.ProbRows(
        num_rows=num_rows,
        vocab_size=10,
        sparse_row_lengths=np.array(lengths, "<i4").tobytes(),
        sparse_token_ids=np.array(ids, "<i4").tobytes(),
        sparse_probs=np.array(probs, "<f4").tobytes(),
    )


@pytest.mark.parametrize(
    "message",
    [
        _sparse([2, 1], [1, 2], [0.5, 0.5], num_rows=2),  # lengths sum to 3, only 2 entries
        _sparse([1], [1, 2], [0.5, 0.5], num_rows=1),  # more entries than lengths say
        _sparse([1, 1], [1, 2], [0.5], num_rows=2),  # ids and probs differ in count
        _sparse([1], [3], [1.0], num_rows=2),  # fewer row lengths than rows
    ],
)
def test_malformed_sparse_message_raises_value_error(message):
    with pytest.raises(ValueError, match="malformed"):
        decode_rows(message)


def test_sparse_ids_outside_the_vocabulary_are_rejected():
    message = encode_rows(torch.nn.functional.one_hot(torch.tensor([3]), 10).float())
    message.sparse_token_ids = np.array([-1], dtype="<i4").tobytes()
    with pytest.raises(ValueError, match="outside"):
        decode_rows(message)
    message.sparse_token_ids = np.array([10], dtype="<i4").tobytes()
    with pytest.raises(ValueError, match="outside"):
        decode_rows(message)


@pytest.mark.parametrize(
    "message, words",
    [
        (common_pb2.ProbRows(num_rows=1, vocab_size=2, dense=b"\x00" * 9), "not a whole number"),
        (common_pb2.ProbRows(num_rows=-1, vocab_size=2, dense=b"\x00" * 8), r"shape \[-1, 2\]"),  # reshape would infer
        (common_pb2.ProbRows(num_rows=2, vocab_size=3, dense=b"\x00" * 8), "2 dense entries"),
        (common_pb2.ProbRows(num_rows=1, vocab_size=20, dense=b"\x00" * 80), "wider than the vocabulary"),
        (_sparse([2, -1], [1], [1.0], num_rows=2), "malformed sparse"),  # a negative length
        (common_pb2.ProbRows(num_rows=0, sparse_probs=b"\x00"), "not a whole number"),
        (_sparse([11], [1] * 11, [0.1] * 11, num_rows=1), "11 entries, more than the 10 tokens"),  # repeated ids
    ],
)
def test_every_malformed_message_raises_value_error_saying_what_is_wrong(message, words):
    """Fuzzing (tests/fuzz/test_fuzz_wire.py) found these raising numpy's unexplained errors, or decoding."""
    with pytest.raises(ValueError, match=words):
        decode_rows(message, 10)
