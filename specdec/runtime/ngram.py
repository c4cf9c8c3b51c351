"""Prompt lookup: proposals from the sequence itself, no weights.

Finds the latest earlier occurrence of the sequence's last n tokens (longest n first, n from
MAX_NGRAM down to 1) and proposes the tokens that followed it. Strong on text that repeats its
input (code edits, quoting, summaries), free everywhere else. The one implementation behind the
draft service's n-gram drafter and the orchestrator's prompt lookup; which match lengths are worth
verifying is the caller's call (orchestrator.adaptive_k weighs n >= 2 beside a draft model).
A lookup's proposals are deterministic: q is one-hot at each (speculative.Proposal.one_hot).
"""

from __future__ import annotations

MAX_NGRAM = 3


def find_ngram(token_ids: list[int], k: int) -> tuple[int, list[int]]:
    """(n, up to k tokens continuing the latest earlier match of the last n tokens), longest n
    first; (0, []) if no token of the tail occurred before."""
    length = len(token_ids)
    for n in range(min(MAX_NGRAM, length - 1), 0, -1):
        suffix = token_ids[-n:]
        for start in range(length - n - 1, -1, -1):  # latest occurrence first
            if token_ids[start : start + n] == suffix:
                return n, token_ids[start + n : start + n + k]
    return 0, []
