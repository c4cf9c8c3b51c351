"""Prompt-lookup drafting: no weights, just the sequence itself.

Finds the latest earlier occurrence of the sequence's last n tokens (longest n first) and
proposes the tokens that followed it. Strong on inputs that repeat (code edits, quoting,
summaries), free everywhere else. Its q is one-hot at each proposal, which the accept rule
handles exactly.
"""

from __future__ import annotations

MAX_NGRAM = 3
MIN_NGRAM = 1


def propose_ngram(token_ids: list[int], k: int, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM) -> list[int]:
    """Up to k tokens continuing the latest earlier match of the last n-gram; [] if none."""
    return find_ngram(token_ids, k, max_ngram, min_ngram)[1]


def find_ngram(
    token_ids: list[int], k: int, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM
) -> tuple[int, list[int]]:
    """(n, up to k tokens continuing the latest earlier match of the last n tokens), longest n
    first; (0, []) if none."""
    length = len(token_ids)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        suffix = token_ids[-n:]
        for start in range(length - n - 1, -1, -1):  # latest occurrence first
            if token_ids[start : start + n] == suffix:
                return n, token_ids[start + n : start + n + k]
    return 0, []
