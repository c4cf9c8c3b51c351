"""The EAGLE head served behind its slot cache computes what training computes (eagle_head.unrolled)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specdec.runtime.cached_lm import Step
from specdec.runtime.eagle_head import EagleHead, load_head, save_head
from specdec.runtime.eagle_lm import EagleLM
from specdec.runtime.features import FeatureRows
from tests.tiny_models import random_eagle_head

VOCAB = 40


def tiny_target() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def tiny_head(target, slice_size: int = 24) -> EagleHead:
    return random_eagle_head(target, "tiny", torch.randperm(VOCAB)[:slice_size].tolist(), seed=1)


def features(n: int, width: int = 16) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(n))


def drafted_argmax(logits: torch.Tensor) -> int:
    return int(logits[0].argmax())


def test_a_draft_round_matches_the_unrolled_steps_and_stays_in_the_slice():
    target = tiny_target()
    head = tiny_head(target)
    lm = EagleLM(head, cache_budget_bytes=1 << 20, capacity=64)
    prompt = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(2)).tolist()
    f = features(len(prompt))  # f_0..f_8; the head reads f_0..f_7
    # Round 1: the prompt with its features, then two drafted tokens from the head's own guesses.
    out = lm.forward([Step("s", prompt, 1, features=FeatureRows(0, f[:-1].half()))])[0]
    assert out.logits.shape == (1, VOCAB)
    assert torch.isinf(out.logits[0, [t for t in range(VOCAB) if t not in head.slice_ids.tolist()]]).all()
    served = [out.logits[0]]
    drafted = [drafted_argmax(out.logits)]
    for _ in range(2):
        served.append(lm.forward([Step("s", prompt + drafted, 1)])[0].logits[0])
        drafted.append(int(served[-1].argmax()))
    # Training's view: step t drafts at position P + t after t guesses (teacher-forced on the drafts).
    ids = torch.tensor([prompt + drafted[:2]])
    previous = torch.cat([torch.zeros(1, 16), f.half().float()[:-1], torch.zeros(2, 16)])[None]
    with torch.no_grad():
        unrolled = head.unrolled(previous, ids, steps=3)
    p = len(prompt) - 1
    for t in range(3):
        assert torch.allclose(head.full_logits(unrolled[t][0, p + t]), served[t], atol=1e-4), t


def test_next_round_recomputes_drafted_positions_from_the_target_features():
    target = tiny_target()
    head = tiny_head(target)
    lm = EagleLM(head, cache_budget_bytes=1 << 20, capacity=64)
    fresh = EagleLM(head, cache_budget_bytes=1 << 20, capacity=64)
    prompt = list(range(3, 11))
    f = features(12)
    lm.forward([Step("s", prompt, 1, features=FeatureRows(0, f[: len(prompt) - 1].half()))])
    lm.forward([Step("s", prompt + [5], 1)])  # a drafted token, computed from the head's guess
    # The target accepted 5 and added 7: its features for positions 7 (= P) and 8 arrive.
    committed = prompt + [5, 7]
    again = lm.forward([Step("s", committed, 1, features=FeatureRows(7, f[7:9].half()))])[0].logits
    cold = fresh.forward([Step("s", committed, 1, features=FeatureRows(0, f[:9].half()))])[0].logits
    assert torch.allclose(again, cold, atol=1e-5)


def test_missing_features_are_asked_for_and_batches_mix_sessions():
    target = tiny_target()
    head = tiny_head(target)
    lm = EagleLM(head, cache_budget_bytes=1 << 20, capacity=64)
    f = features(12)
    # A replica that never saw the session gets only the latest rows: it asks from position 0.
    assert lm.features_needed_from("s", list(range(1, 11)), FeatureRows(7, f[7:9].half())) == 0
    outputs = lm.forward([
        Step("s", list(range(1, 11)), 1, features=FeatureRows(7, f[7:9].half())),
        Step("u", list(range(2, 8)), 1, features=FeatureRows(0, f[:5].half())),
        Step("v", [4], 1),  # position 0 reads no feature
    ])
    assert outputs[0].logits.shape == (0, VOCAB)
    solo = EagleLM(head, cache_budget_bytes=1 << 20, capacity=64)
    assert torch.allclose(outputs[1].logits, solo.forward([Step("u", list(range(2, 8)), 1,
                                                                 features=FeatureRows(0, f[:5].half()))])[0].logits,
                          atol=1e-5)
    assert outputs[2].logits.shape == (1, VOCAB)


def test_the_artefact_round_trips(tmp_path):
    target = tiny_target()
    head = tiny_head(target)
    save_head(head, tmp_path, torch.float32)
    loaded = load_head(tmp_path)
    loaded.attach_target(target)
    ids = torch.tensor([[1, 2, 3, 4]])
    feats = torch.randn(1, 4, 16)
    with torch.no_grad():
        assert torch.equal(loaded.unrolled(feats, ids, 2)[1], head.unrolled(feats, ids, 2)[1])


def test_a_long_prompt_reaches_the_head_in_prefill_chunks_with_its_features(monkeypatch):
    import asyncio

    from draft_service.eagle_drafter import propose_with_eagle
    from specdec.runtime import batching
    from specdec.runtime.batching import BatchScheduler
    from specdec.runtime.sampling import SamplingParams

    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    target = tiny_target()
    head = tiny_head(target)
    prompt = torch.randint(0, VOCAB, (50,), generator=torch.Generator().manual_seed(5)).tolist()
    f = FeatureRows(0, features(len(prompt))[:-1].half())

    def propose(lm: EagleLM) -> list[int]:
        async def main():
            scheduler = BatchScheduler(lambda: lm)
            job = propose_with_eagle(lm, "s", prompt, 3, SamplingParams(), 0, f)
            proposal, _ = await asyncio.wait_for(scheduler.run(job), 30)  # a lost chunk would loop for ever
            return proposal.token_ids
        return asyncio.run(main())

    chunked = propose(EagleLM(head, cache_budget_bytes=1 << 20, capacity=64))
    monkeypatch.setattr(batching, "PREFILL_CHUNK", 256)
    assert len(chunked) == 3 and chunked == propose(EagleLM(head, cache_budget_bytes=1 << 20, capacity=64))
