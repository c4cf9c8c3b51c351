from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TINY_CHARS
from tests.fuzz.harness import FuzzStack
from tests.tiny_models import char_tokenizer, save_tiny_lm

MAX_CONTEXT = 64  # a short context bounds what any one case can cost (a prompt, a generation)
# tests.tiny_models.CHAT_TEMPLATE, refusing roles it does not know as many real templates do.
STRICT_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + m['role']) }}{% endif %}{{ m['role'][0] }}{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}a{% endif %}"
)


@pytest.fixture(scope="session")
def fuzz_models(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny target and draft (the suite's 8-token vocabulary) with a 64-token context."""
    tokenizer = char_tokenizer(TINY_CHARS)
    tokenizer.chat_template = STRICT_CHAT_TEMPLATE
    return (save_tiny_lm(tmp_path_factory.mktemp("fuzz-target"), tokenizer, seed=1, max_context=MAX_CONTEXT),
            save_tiny_lm(tmp_path_factory.mktemp("fuzz-draft"), tokenizer, seed=2, max_context=MAX_CONTEXT))


@pytest.fixture(scope="module")
def stack(fuzz_models) -> Iterator[FuzzStack]:
    """One set of servers and one event loop per test module."""
    stack = FuzzStack.start(*fuzz_models)
    yield stack
    stack.close()
