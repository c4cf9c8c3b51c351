"""Incremental detokenisation with stop strings.

Text is released only in whole characters (a token can end inside a multi-byte character) and
never includes any part of a stop string: the tail that could still grow into one is held back.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

_PREFIX_TOKENS = 5  # context decoded along, so a token's leading space survives (sentencepiece)


class TextStream:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int], stop: tuple[str, ...]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids[-_PREFIX_TOKENS:])
        self._prefix_offset = 0  # decode from here for context
        self._read_offset = len(self._ids)  # text up to here has been produced
        self._stop = stop
        self._pending = ""  # produced but held back
        self.stopped = False  # a stop string was found; nothing more will be released

    def push(self, token_id: int) -> str:
        """Adds one token; returns the text that is now safe to release."""
        self._ids.append(token_id)
        self._pending += self._new_text()
        hit = min((i for i in (self._pending.find(s) for s in self._stop) if i >= 0), default=-1)
        if hit >= 0:
            self.stopped = True
            released, self._pending = self._pending[:hit], ""
            return released
        hold = max((_overlap(self._pending, s) for s in self._stop), default=0)
        released, self._pending = self._pending[: len(self._pending) - hold], self._pending[len(self._pending) - hold :]
        return released

    def flush(self) -> str:
        """The held-back text, once generation has ended without a stop string."""
        released, self._pending = self._pending, ""
        return released

    def _new_text(self) -> str:
        decode = self._tokenizer.decode
        before = decode(self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        after = decode(self._ids[self._prefix_offset :], skip_special_tokens=True)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""  # inside a multi-byte character, or nothing visible yet: wait for more tokens
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return after[len(before) :]


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for length in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:length]):
            return length
    return 0
