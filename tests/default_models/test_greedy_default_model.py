"""Greedy output on the real default target is token-for-token transformers' own at the precision it is
served at: speculative (a random LM draft, prompt lookup, the shipped EAGLE head) and plain at float32; plain
at int4 (what auto picks for it on a CPU) and int8.

Speculative greedy output at int4 and int8 is not asserted: their activations are bfloat16, and a
(k + 1)-token verify pass rounds a little differently from one-token steps (torch's attention kernel is
not batch-invariant), which at a near-tie picks another token. The README reports how often."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec.default_models import DEFAULT_EAGLE
from specdec.runtime import precision
from specdec.v1 import generation_pb2, generation_pb2_grpc
from tests.stack import Stack
from tests.tiny_models import save_tiny_lm

PROMPTS = [
    "Why is the sky blue?",
    "List three prime numbers and repeat the list twice.",
    "Write a Python function that returns the square of a number.",
]
MAX_NEW_TOKENS = 32


@pytest.fixture(scope="module")
def random_draft(default_model, tmp_path_factory):
    """A random draft over SmolLM2's vocabulary: it is mostly wrong, so rejections are exercised."""
    tokenizer = AutoTokenizer.from_pretrained(default_model)
    return save_tiny_lm(tmp_path_factory.mktemp("smol-draft"), tokenizer, seed=5, init_range=0.02, max_context=8192)


@pytest.fixture(scope="module")
def served_at(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def prompts_and_references(default_model, served_at):
    tokenizer = AutoTokenizer.from_pretrained(default_model)
    model = AutoModelForCausalLM.from_pretrained(default_model).eval()
    precision.apply(model, precision.Precision(served_at))
    cases = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        ids = list(ids["input_ids"] if not isinstance(ids, list) else ids)
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
        cases.append((ids, out[0, len(ids) :].tolist()))
    return cases


@pytest.fixture(scope="module")
def stack(default_model, random_draft, served_at):
    stack = Stack(str(default_model), str(random_draft), dtype=served_at)
    yield stack
    stack.close()


async def generate_tokens(address: str, prompt_ids: list[int], draft: str, k: int) -> list[int]:
    return (await generate_with_stats(address, prompt_ids, draft, k))[0]


# (draft, k) at each precision; one stack per precision serves them all.
DRAFTS_AT = {"float32": [("ngram", 4), ("model", 3), ("none", 0)], "int4": [("none", 0)], "int8": [("none", 0)]}


@pytest.mark.parametrize("served_at", list(DRAFTS_AT), indirect=True)
def test_greedy_output_equals_transformers_generate(stack, prompts_and_references, served_at):
    for draft, k in DRAFTS_AT[served_at]:
        for prompt_ids, reference in prompts_and_references:
            assert asyncio.run(generate_tokens(stack.address, prompt_ids, draft, k)) == reference, (draft, k)


@pytest.mark.parametrize("served_at", ["float32"], indirect=True)
def test_greedy_with_the_shipped_eagle_head_equals_transformers_generate(default_model, prompts_and_references,
                                                                         served_at):
    """The EAGLE head drafts from the real target's features; its drafts are accepted often enough that
    the output holds accepted drafts and corrections both."""
    stack = Stack(str(default_model), DEFAULT_EAGLE, dtype=served_at)
    try:
        for k in (2, 0):
            accepted = 0
            for prompt_ids, reference in prompts_and_references:
                tokens, stats = asyncio.run(generate_with_stats(stack.address, prompt_ids, "model", k))
                assert tokens == reference
                accepted += stats.accepted_tokens
            assert accepted > 0
    finally:
        stack.close()


async def generate_with_stats(address: str, prompt_ids: list[int], draft: str, k: int):
    request = generation_pb2.GenerateRequest(
        prompt_token_ids=prompt_ids, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, draft=draft,
        num_speculative_tokens=k,
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        chunks = [chunk async for chunk in stub.Generate(request, timeout=300)]
    return [t for chunk in chunks for t in chunk.token_ids], chunks[-1].stats
