"""specdec.runtime.validation.check_tokens: what the draft and target services accept as a sequence."""

from __future__ import annotations

import pytest

from specdec.runtime.errors import InvalidArgument
from specdec.runtime.validation import check_tokens

LIMITS = dict(max_new=4, vocab_size=10, max_context=8)


def test_a_valid_sequence_comes_back_as_a_list():
    assert check_tokens((3, 0, 9), num_new=2, draft_ids=[1, 2], **LIMITS) == [3, 0, 9]


@pytest.mark.parametrize("token_ids, num_new, draft_ids, words", [
    ((), 0, [], "empty"),
    ((1, 2), 5, [], "0..4"),
    ((1, 2, 3, 4, 5, 6, 7), 2, [1, 2], "context of 8"),
    ((1, 10), 0, [], "got 1..10"),
    ((1, -1), 0, [], "got -1..1"),
    ((1, 2), 2, [3, 10], "got 1..10"),
    ((5, 6), 1, [-2], "got -2..6"),
])
def test_a_bad_sequence_is_invalid_argument_saying_why(token_ids, num_new, draft_ids, words):
    with pytest.raises(InvalidArgument, match=words):
        check_tokens(token_ids, num_new=num_new, draft_ids=draft_ids, **LIMITS)
