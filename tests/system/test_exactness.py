"""Speculative sampling through the real services reproduces the target's own distribution.

Tiny random draft and target models over an 8-token vocabulary, deliberately peaked and
different. For the first two generated tokens (k = 2, so both come from one speculative block
whenever the first draft is accepted) the empirical joint distribution over 64 outcomes is
compared with the exact one, computed from the target model alone, by a chi-square test. Seeds
are fixed, so a run is reproducible; the thresholds leave a correct implementation a wide margin
and catch lenience 0.5 (a lossy acceptance rule) by many orders of magnitude.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch
from scipy.stats import chisquare
from transformers import AutoModelForCausalLM

from specdec.runtime import precision
from specdec.runtime.precision import Precision
from specdec.runtime.sampling import SamplingParams, sampling_probs
from specdec.v1 import generation_pb2, generation_pb2_grpc
from tests.stack import Stack

PROMPT = [1, 2, 3, 1, 2]  # "abcab": gives the n-gram drafter matches to propose
SAMPLES = 3000


@pytest.fixture(scope="module")
def tiny_stack(tiny_target, tiny_draft):
    stack = Stack(str(tiny_target), str(tiny_draft), threads=1)
    yield stack
    stack.close()


@torch.inference_mode()
def exact_joint(target_dir, params: SamplingParams, served_at: str = "float32") -> torch.Tensor:
    """[V, V]: P(t1, t2) under the target alone, at the precision it is served at."""
    model = precision.apply(AutoModelForCausalLM.from_pretrained(target_dir).eval(), Precision(served_at))
    vocab = model.config.vocab_size
    p1 = sampling_probs(model(torch.tensor([PROMPT])).logits[0, -1].float(), params)  # [V]
    second = torch.tensor([PROMPT + [t] for t in range(vocab)])  # [V, len+1]
    p2 = sampling_probs(model(second).logits[:, -1].float(), params)  # [V, V]
    return p1[:, None] * p2


async def sampled_joint(
    address: str, params: SamplingParams, draft: str, k: int, vocab: int
) -> tuple[torch.Tensor, int]:
    """Counts of (t1, t2) over SAMPLES seeds, and how many drafts came from prompt lookup."""
    counts = torch.zeros(vocab, vocab)
    looked_up = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        limit = asyncio.Semaphore(16)

        async def one(seed: int) -> None:
            request = generation_pb2.GenerateRequest(
                prompt_token_ids=PROMPT, max_new_tokens=3, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k, lenience=params.lenience, seed=seed, num_speculative_tokens=k, draft=draft,
                ignore_eos=True,
            )
            nonlocal looked_up
            async with limit:
                chunks = [chunk async for chunk in stub.Generate(request, timeout=60)]
            tokens = [t for chunk in chunks for t in chunk.token_ids]
            counts[tokens[0], tokens[1]] += 1
            looked_up += chunks[-1].stats.lookup_drafted_tokens

        await asyncio.gather(*(one(seed) for seed in range(SAMPLES)))
    return counts, looked_up


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pools cells expected below 5 times into one, as the test's approximation needs."""
    probs = probs.double()
    expected = (probs / probs.sum() * counts.sum()).flatten()
    observed = counts.double().flatten()
    small = expected < 5
    expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    observed = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    if expected[-1] == 0:
        expected, observed = expected[:-1], observed[:-1]
    return float(chisquare(observed.numpy(), expected.numpy()).pvalue)


CASES = {  # sampling, drafter, k
    "temperature 1": (SamplingParams(temperature=1.0), "model", 2),
    "temperature 0.7, top-k 4": (SamplingParams(temperature=0.7, top_k=4), "model", 2),
    "temperature 1.3, top-p 0.8": (SamplingParams(temperature=1.3, top_p=0.8), "model", 2),
    "n-gram draft, temperature 0.8": (SamplingParams(temperature=0.8), "ngram", 2),
    # Adaptive k weighs prompt lookup too: the prompt's repeated "ab" offers "cab" as a proposal.
    "adaptive k with prompt lookup, temperature 1": (SamplingParams(temperature=1.0), "model", 0),
}


@pytest.mark.parametrize("case", CASES)
def test_speculative_sampling_matches_the_target_distribution(tiny_stack, tiny_target, case):
    params, draft, k = CASES[case]
    exact = exact_joint(tiny_target, params)
    counts, looked_up = asyncio.run(sampled_joint(tiny_stack.address, params, draft, k, exact.shape[0]))
    assert counts.sum() == SAMPLES
    assert (looked_up > 0) == (k == 0)  # adaptive k sent some prompt-lookup proposals
    assert chi_square_pvalue(counts, exact) > 1e-3


def test_lenient_acceptance_is_detected(tiny_stack, tiny_target):
    """The negative control: lenience 0.5 favours the draft, and the test must see it."""
    params = SamplingParams(temperature=1.0, lenience=0.5)
    exact = exact_joint(tiny_target, SamplingParams(temperature=1.0))
    counts, _ = asyncio.run(sampled_joint(tiny_stack.address, params, "model", 2, exact.shape[0]))
    assert chi_square_pvalue(counts, exact) < 1e-6
