"""orchestrator.request.parse_request: hostile messages get INVALID_ARGUMENT before any costly work
(found by tests/fuzz/test_fuzz_public_api.py)."""

from __future__ import annotations

import pytest

from orchestrator.request import MAX_CHARS_PER_TOKEN, ServerDefaults, parse_request
from specdec.runtime.errors import InvalidArgument
from specdec.v1 import generation_pb2
from tests.tiny_models import char_tokenizer

DEFAULTS = ServerDefaults(draft="ngram", k=2, max_k=8, adaptive_max_k=4, max_new_tokens=4, draft_has_model=False)
MAX_CONTEXT = 64


def parse(tokenizer, messages: list[tuple[str, str]]):
    request = generation_pb2.GenerateRequest(messages=[generation_pb2.Message(role=r, content=c) for r, c in messages])
    return parse_request(request, tokenizer, DEFAULTS, vocab_size=len(tokenizer), max_context=MAX_CONTEXT)


@pytest.fixture
def tokenizer():
    return char_tokenizer("abc")


def test_a_chat_template_that_refuses_the_messages_is_invalid_argument(tokenizer):
    tokenizer.chat_template = "{{ raise_exception('roles must alternate user/assistant') }}"
    with pytest.raises(InvalidArgument, match="chat template refuses these messages: roles must alternate"):
        parse(tokenizer, [("user", "a"), ("user", "b")])


def test_a_broken_chat_template_stays_a_server_error(tokenizer):
    import jinja2

    tokenizer.chat_template = "{% for %}"
    with pytest.raises(jinja2.TemplateSyntaxError):
        parse(tokenizer, [("user", "a")])


def test_more_messages_than_the_context_has_tokens_are_refused_before_rendering(tokenizer):
    tokenizer.chat_template = "{{ raise_exception('rendered') }}"  # would say so, were it rendered
    with pytest.raises(InvalidArgument, match=f"{MAX_CONTEXT} messages; .* context of {MAX_CONTEXT} tokens"):
        parse(tokenizer, [("u", "")] * MAX_CONTEXT)


def test_messages_whose_template_text_cannot_fit_are_refused_before_tokenizing(tokenizer):
    # The messages hold 2 characters; the template adds enough to each to outgrow the context.
    padding = MAX_CHARS_PER_TOKEN * MAX_CONTEXT
    tokenizer.chat_template = "{% for m in messages %}{{ 'x' * " + str(padding) + " }}{{ m['content'] }}{% endfor %}"
    with pytest.raises(InvalidArgument, match="render to .* characters with the chat template"):
        parse(tokenizer, [("user", "a"), ("user", "b")])
