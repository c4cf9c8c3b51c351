"""Exactness is defined at the served precision: at every --dtype, speculative sampling through the real
services follows the target's distribution computed at that precision (the chi-square test of
test_exactness.py, on tiny models 32 wide so that int4's groups of 32 inputs apply)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from specdec.runtime.sampling import SamplingParams
from specdec.v1 import target_pb2, target_pb2_grpc
from tests.conftest import TINY_CHARS
from tests.stack import Stack
from tests.system.test_exactness import SAMPLES, chi_square_pvalue, exact_joint, sampled_joint
from tests.tiny_models import char_tokenizer, save_tiny_lm

PRECISIONS = ["bfloat16", "float16", "int8", "int4"]  # float32: test_exactness.py


@pytest.fixture(scope="module")
def wide_models(tmp_path_factory):
    tokenizer = char_tokenizer(TINY_CHARS)
    return tuple(save_tiny_lm(tmp_path_factory.mktemp(name), tokenizer, seed=seed, hidden=32, init_range=0.5)
                 for name, seed in (("target-32", 1), ("draft-32", 2)))


@pytest.mark.parametrize("served_at", PRECISIONS)
def test_speculative_sampling_matches_the_target_at_its_precision(wide_models, served_at):
    target, draft = wide_models
    params = SamplingParams(temperature=1.0)
    exact = exact_joint(target, params, served_at)
    stack = Stack(str(target), str(draft), threads=1, dtype=served_at)
    try:
        with grpc.insecure_channel(stack.target_address) as channel:
            info = target_pb2_grpc.TargetStub(channel).GetModelInfo(target_pb2.TargetGetModelInfoRequest()).info
        counts, _ = asyncio.run(sampled_joint(stack.address, params, "model", 2, exact.shape[0]))
    finally:
        stack.close()
    assert info.precision == served_at
    assert counts.sum() == SAMPLES
    assert chi_square_pvalue(counts, exact) > 1e-3
