"""orchestrator.http_api's body parsing: what fuzzing (tests/fuzz/test_fuzz_public_api.py) found
answering 500 now answers 400 with the field's name (InvalidArgument), before any generation."""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestrator.http_api import _json_body, _to_request
from specdec.runtime.errors import InvalidArgument


class _Body:
    """What _json_body reads of a starlette Request: json() parses the raw body as starlette does."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    async def json(self):
        return json.loads(self._raw)


@pytest.mark.parametrize("body, words", [
    ({"prompt": "a\ud800b"}, r"`prompt` holds an unpaired UTF-16 surrogate \('\\ud800' at index 1\)"),
    ({"prompt": "ab", "stop": ["\udfff"]}, "a `stop` string holds an unpaired"),
    ({"prompt": "ab", "draft": "\ud800"}, "`draft` holds an unpaired"),
    ({"prompt": "ab", "max_tokens": 2**31}, r"`max_tokens` must be an integer in \[-2147483648, 2147483647\]"),
    ({"prompt": "ab", "top_k": -(2**40)}, "`top_k` must be an integer in"),
    ({"prompt": "ab", "num_speculative_tokens": 10**30}, "`num_speculative_tokens` must be an integer in"),
    ({"prompt": "ab", "seed": -1}, r"`seed` must be an integer in \[0, 18446744073709551615\]"),
    ({"prompt": "ab", "seed": 2**64}, "`seed` must be an integer in"),
    ({"prompt": "ab", "temperature": 10**400}, "`temperature` is out of range: got an integer of 401 digits"),
    ({"prompt": [1, 2**31]}, "`prompt` token ids must be 32-bit integers"),
])
def test_completion_fields_protobuf_cannot_hold_are_invalid_argument(body, words):
    with pytest.raises(InvalidArgument, match=words):
        _to_request(body, chat=False)


@pytest.mark.parametrize("messages, words", [
    ([{"role": "\ud800", "content": "a"}], "a message's `role` holds an unpaired"),
    ([{"role": "user", "content": "a\udfff"}], "a message's `content` holds an unpaired"),
    ([{"role": "user", "content": [{"type": "text", "text": {"nested": 1}}]}], "list of .*text.* parts"),
])
def test_chat_messages_protobuf_cannot_hold_are_invalid_argument(messages, words):
    with pytest.raises(InvalidArgument, match=words):
        _to_request({"messages": messages}, chat=True)


def test_valid_fields_at_their_types_limits_still_pass():
    request, _, _ = _to_request({"prompt": [0, 2**31 - 1], "seed": 2**64 - 1, "top_k": 2**31 - 1}, chat=False)
    assert list(request.prompt_token_ids) == [0, 2**31 - 1] and request.seed == 2**64 - 1


def test_a_body_nested_too_deeply_to_parse_is_invalid_argument():
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        asyncio.run(_json_body(_Body(b"[" * 100_000)))
