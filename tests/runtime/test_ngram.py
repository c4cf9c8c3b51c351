"""specdec.runtime.ngram: prompt-lookup proposals from the sequence itself."""

from __future__ import annotations

from specdec.runtime.ngram import MAX_NGRAM, find_ngram


def test_proposes_the_continuation_of_the_latest_earlier_occurrence():
    # The last token 5 occurs at 1 (followed by 6, 7) and at 4 (followed by 8, 9): the latest wins.
    assert find_ngram([1, 5, 6, 7, 5, 8, 9, 2, 5], k=2) == (1, [8, 9])


def test_prefers_the_longer_ngram_over_a_later_shorter_match():
    # Bigram (3, 4) matches at 0 (-> 10, 11); the unigram 4 alone matches later at 5 (-> 20).
    assert find_ngram([3, 4, 10, 11, 7, 4, 20, 3, 4], k=2) == (2, [10, 11])
    # The trigram (2, 3, 4) at 0 beats the later bigram (3, 4) at 5.
    assert find_ngram([2, 3, 4, 10, 11, 3, 4, 20, 2, 3, 4], k=1) == (3, [10])


def test_matches_no_longer_than_max_ngram():
    tail = list(range(MAX_NGRAM + 1))
    n, _ = find_ngram([*tail, 99, *tail], k=1)
    assert n == MAX_NGRAM


def test_returns_at_most_k_tokens():
    seq = [1, 2, 3, 4, 5, 6, 7, 1]
    assert find_ngram(seq, k=3) == (1, [2, 3, 4])
    assert find_ngram(seq, k=1) == (1, [2])


def test_returns_nothing_without_a_match_or_when_too_short():
    assert find_ngram([1, 2, 3, 4], k=3) == (0, [])
    assert find_ngram([7], k=3) == (0, [])
    assert find_ngram([], k=3) == (0, [])


def test_continuation_running_into_the_end_of_the_sequence_is_cut_short():
    # Last bigram (1, 2) matches at 0; only 3 tokens follow it before the end.
    assert find_ngram([1, 2, 9, 1, 2], k=5) == (2, [9, 1, 2])
    # A self-overlapping run: the match right before the suffix has one token after it.
    assert find_ngram([4, 4, 4, 4], k=5) == (3, [4])
