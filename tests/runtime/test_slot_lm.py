"""specdec.runtime.slot_lm: batched passes over the slot KV cache give each session the logits a
per-session DynamicCache gives it, on tiny random Llama, Qwen2 and GPT-2 models."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from specdec.runtime.cached_lm import CachedLM, Step
from specdec.runtime.hosted_model import kv_cache_for
from specdec.runtime.slot_lm import SlotLM, agrees_with_reference

VOCAB = 50
CAPACITY = 96


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        return LlamaForCausalLM(config).eval()
    if kind == "qwen2":
        config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128)
        return Qwen2ForCausalLM(config).eval()
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(params=["llama", "qwen2", "gpt2"])
def model(request):
    return tiny(request.param)


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_batched_steps_match_a_per_session_cache(model):
    """Sessions join and leave, extend by a token or a verify block of k = 1..7, roll back by a few
    tokens or diverge, always several in one pass with different cached lengths and widths."""
    lm, reference = SlotLM(model, 1 << 30, CAPACITY), CachedLM(model, 1 << 30)
    rng = random.Random(1)
    sequences: dict[str, list[int]] = {}
    for round_ in range(12):
        if round_ % 3 == 0:  # a new session joins
            sequences[f"s{round_}"] = [rng.randrange(VOCAB) for _ in range(rng.randrange(1, 20))]
        if round_ == 7:  # one leaves
            gone = next(iter(sequences))
            lm.end_session(gone)
            del sequences[gone]
        steps = []
        for session_id, tokens in sequences.items():
            if rng.random() < 0.2:
                continue  # not every session has a step pending
            k = rng.randrange(0, 8)
            drafts = [rng.randrange(VOCAB) for _ in range(k)]
            steps.append(Step(session_id, tokens + drafts, k + 1))
            accepted = rng.randrange(0, k + 1)
            sequences[session_id] = tokens + drafts[:accepted] + [rng.randrange(VOCAB)]  # the correction
        for step, got in zip(steps, lm.forward(steps)):
            assert_same(got.logits, reference.logits(step.session_id, step.token_ids, step.num_logits))
    assert lm.num_sessions == len(sequences)


def test_a_session_diverging_far_back_and_a_long_prefill_alone(model):
    lm, reference = SlotLM(model, 1 << 30, CAPACITY), CachedLM(model, 1 << 30)
    tokens = [i % VOCAB for i in range(1, 70)]
    for step in (Step("a", tokens, 1), Step("a", tokens[:10] + [3, 4], 2), Step("a", tokens[:5], 5)):
        assert_same(lm.forward([step])[0].logits, reference.logits(step.session_id, step.token_ids, step.num_logits))


def test_a_pass_that_only_fills_the_cache_returns_no_rows(model):
    lm = SlotLM(model, 1 << 30, CAPACITY)
    (filled,) = lm.forward([Step("a", list(range(40)), 0)])  # ids < VOCAB
    assert filled.logits.shape == (0, VOCAB) and filled.features is None
    assert lm.uncached_len("a", list(range(41))) == 1


def test_sessions_beyond_the_slots_evict_the_least_recently_used_and_are_recomputed(model):
    probe = SlotLM(model, 1 << 30, CAPACITY)
    lm = SlotLM(model, 2 * probe.bytes_per_slot * (CAPACITY + 32) // CAPACITY, CAPACITY)
    assert lm.num_slots == 2
    reference = CachedLM(model, 1 << 30)
    prompts = {name: [i + 1, 7, 3, i + 2, 9] for i, name in enumerate("abc")}
    for name in "ab":
        lm.forward([Step(name, prompts[name], 1)])
    lm.forward([Step("a", prompts["a"] + [4], 1)])  # b is now least recently used
    got = lm.forward([Step("c", prompts["c"], 1), Step("a", prompts["a"] + [4, 5], 1)])
    assert lm.uncached_len("b", prompts["b"]) == len(prompts["b"])  # b was evicted
    assert_same(got[0].logits, reference.logits("c", prompts["c"], 1))
    assert_same(lm.forward([Step("b", prompts["b"] + [1], 2)])[0].logits, reference.logits("b", prompts["b"] + [1], 2))


def test_limits_are_refused_not_corrupted():
    lm = SlotLM(tiny("llama"), 1 << 30, CAPACITY)
    with pytest.raises(ValueError, match="capacity"):
        lm.forward([Step("a", [1] * (CAPACITY + 1), 1)])
    with pytest.raises(ValueError, match="alone"):
        lm.forward([Step("a", [1] * 40, 1), Step("b", [2], 1)])


def test_usage_counts_the_tokens_held():
    lm = SlotLM(tiny("llama"), 1 << 30, CAPACITY)
    lm.forward([Step("a", [1] * 48, 1)])
    assert lm.cache_usage == pytest.approx(48 / (lm.num_slots * CAPACITY))
    lm.end_session("a")
    assert lm.cache_usage == 0


def test_an_architecture_the_slots_get_wrong_falls_back_to_the_per_session_cache(model, monkeypatch):
    assert agrees_with_reference(SlotLM(model, 1 << 30, CAPACITY))
    assert isinstance(kv_cache_for(model, 1 << 30, CAPACITY), SlotLM)
    # Break the mask the way an architecture that ignores a 4D mask would.
    original = SlotLM.forward

    def forward_without_mask(self, steps):
        self.model.forward = _dropping_mask(type(self.model).forward.__get__(self.model))
        return original(self, steps)

    monkeypatch.setattr(SlotLM, "forward", forward_without_mask)
    assert isinstance(kv_cache_for(model, 1 << 30, CAPACITY), CachedLM)


def _dropping_mask(forward):
    def wrapped(*args, **kwargs):
        kwargs.pop("attention_mask", None)
        return forward(*args, **kwargs)

    return wrapped
