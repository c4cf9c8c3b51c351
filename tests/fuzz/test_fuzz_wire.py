"""Property-based fuzzing of ProbRows decoding (specdec.runtime.wire), which the target runs on the q rows
a Score carries: 1,000 junk messages.

A malformed message must raise ValueError saying so (the target answers INVALID_ARGUMENT with it), never
another exception, never an allocation the message's own bytes do not justify; a well-formed one
decodes to [num_rows, width] rows.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from specdec.runtime.wire import decode_rows
from specdec.v1 import common_pb2
from tests.fuzz.harness import FUZZ
from tests.fuzz.strategies import prob_rows

@FUZZ
@given(message=prob_rows(), vocab_size=st.integers(1, 12))
def test_decode_rows_returns_rows_or_says_what_is_malformed(message: common_pb2.ProbRows, vocab_size: int) -> None:
    try:
        rows = decode_rows(message, vocab_size)
    except ValueError as error:
        assert "ProbRows" in str(error), error
        return
    assert tuple(rows.shape) == (message.num_rows, vocab_size)

