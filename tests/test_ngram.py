"""specdec.ngram: prompt-lookup proposals from the sequence itself."""

from __future__ import annotations

from specdec.ngram import find_ngram, propose_ngram


def test_proposes_the_continuation_of_the_latest_earlier_occurrence():
    # The last token 5 occurs at 1 (followed by 6, 7) and at 4 (followed by 8, 9): the latest wins.
    assert propose_ngram([1, 5, 6, 7, 5, 8, 9, 2, 5], k=2) == [8, 9]


def test_prefers_the_longer_ngram_over_a_later_shorter_match():
    # Bigram (3, 4) matches at 0 (-> 10, 11); the unigram 4 alone matches later at 5 (-> 20).
    seq = [3, 4, 10, 11, 7, 4, 20, 3, 4]
    assert propose_ngram(seq, k=2) == [10, 11]
    assert propose_ngram(seq, k=2, max_ngram=1) == [20, 3]
    assert find_ngram(seq, k=2) == (2, [10, 11])  # with the length of the match it continues


def test_returns_at_most_k_tokens():
    seq = [1, 2, 3, 4, 5, 6, 7, 1]
    assert propose_ngram(seq, k=3) == [2, 3, 4]
    assert propose_ngram(seq, k=1) == [2]


def test_returns_empty_without_a_match_or_when_too_short():
    assert propose_ngram([1, 2, 3, 4], k=3) == []
    assert propose_ngram([7], k=3) == []
    assert propose_ngram([], k=3) == []
    assert find_ngram([1, 2, 3, 4], k=3) == (0, [])


def test_continuation_running_into_the_end_of_the_sequence_is_cut_short():
    # Last bigram (1, 2) matches at 0; only 3 tokens follow it before the end.
    assert propose_ngram([1, 2, 9, 1, 2], k=5) == [9, 1, 2]
    # A self-overlapping run: the match right before the suffix has one token after it.
    assert propose_ngram([4, 4, 4, 4], k=5) == [4]


def test_min_ngram_excludes_shorter_matches():
    assert propose_ngram([1, 9, 2, 3, 1], k=2, min_ngram=2) == []
    assert propose_ngram([1, 9, 2, 3, 1], k=2) == [9, 2]
