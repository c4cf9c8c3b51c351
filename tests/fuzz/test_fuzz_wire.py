"""Property-based fuzzing of ProbRows decoding (specdec.runtime.wire), which the orchestrator runs on
what draft and target replicas send: 1,000 junk messages each for decode_rows and row_argmax.

A malformed message must raise ValueError saying so (the orchestrator turns it into a status), never
another exception, never an allocation the message's own bytes do not justify; a well-formed one
decodes to [num_rows, width] rows.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from specdec.runtime.wire import decode_rows, row_argmax
from specdec.v1 import common_pb2
from tests.fuzz.harness import FUZZ

_SMALL = st.one_of(st.integers(-3, 12), st.sampled_from([-(2**31), 2**31 - 1, 2**20]))


def _packed(dtype: str, values: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    arrays = st.lists(values, max_size=12).map(lambda v: np.array(v, dtype=dtype).tobytes())
    return st.one_of(arrays, arrays, st.binary(max_size=13))  # binary: lengths not a multiple of 4


def prob_rows() -> st.SearchStrategy[common_pb2.ProbRows]:
    floats = st.one_of(st.floats(0, 1, width=32), st.floats(width=32))
    return st.builds(
        common_pb2.ProbRows,
        num_rows=_SMALL,
        vocab_size=_SMALL,
        dense=st.one_of(st.just(b""), _packed("<f4", floats)),
        sparse_row_lengths=_packed("<i4", _SMALL),
        sparse_token_ids=_packed("<i4", _SMALL),
        sparse_probs=_packed("<f4", floats),
    )


@FUZZ
@given(message=prob_rows(), vocab_size=st.integers(1, 12))
def test_decode_rows_returns_rows_or_says_what_is_malformed(message: common_pb2.ProbRows, vocab_size: int) -> None:
    try:
        rows = decode_rows(message, vocab_size)
    except ValueError as error:
        assert "ProbRows" in str(error), error
        return
    assert tuple(rows.shape) == (message.num_rows, vocab_size)


@FUZZ
@given(message=prob_rows())
def test_row_argmax_returns_an_id_or_says_what_is_malformed(message: common_pb2.ProbRows) -> None:
    try:
        token = row_argmax(message)
    except ValueError as error:
        assert "ProbRows" in str(error) or "row_argmax" in str(error), error
        return
    assert 0 <= token < message.vocab_size
