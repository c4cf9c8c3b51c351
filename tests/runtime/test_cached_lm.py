"""specdec.runtime.cached_lm: logits through the per-session prefix cache equal a fresh full forward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from specdec.runtime.cached_lm import CachedLM
from tests.tiny_models import char_tokenizer, save_tiny_lm

BIG_BUDGET = 1 << 30


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = save_tiny_lm(tmp_path_factory.mktemp("cached-lm"), char_tokenizer("abcdefghij"), seed=3, layers=2)
    return AutoModelForCausalLM.from_pretrained(path).eval()


def full_logits(model, token_ids: list[int], num_logits: int) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([token_ids]), use_cache=False).logits[0, -num_logits:].float()


def check(lm: CachedLM, session: str, token_ids: list[int], num_logits: int = 1) -> None:
    got = lm.logits(session, token_ids, num_logits)
    assert got.shape == (num_logits, lm.vocab_size)
    torch.testing.assert_close(got, full_logits(lm.model, token_ids, num_logits), atol=1e-5, rtol=1e-5)


def test_extend_rollback_multirow_and_sessions_match_full_forward(model):
    lm = CachedLM(model, BIG_BUDGET)
    base = [1, 4, 2, 8, 5, 7]
    check(lm, "s1", base)
    check(lm, "s1", base + [3])  # extend by one
    check(lm, "s1", base + [3, 9, 2, 6], num_logits=4)  # k=3 drafts scored: k+1 rows
    check(lm, "s1", base + [3, 9])  # rollback: two drafts rejected
    check(lm, "s1", base + [3, 1, 10, 4], num_logits=3)  # diverges from the cached drafts
    check(lm, "s1", base[:3])  # much shorter
    check(lm, "s2", [5, 5, 6, 1])  # another session
    check(lm, "s1", base[:3] + [7, 7])  # s1 still intact after s2
    assert lm.num_sessions == 2


def test_unseen_session_same_answer_as_a_warm_one(model):
    warm, cold = CachedLM(model, BIG_BUDGET), CachedLM(model, BIG_BUDGET)
    seq = [2, 3, 4, 5, 6, 7, 8]
    warm.logits("s", seq[:4], 1)
    torch.testing.assert_close(warm.logits("s", seq, 3), cold.logits("never-seen", seq, 3), atol=1e-5, rtol=1e-5)


def test_lru_eviction_keeps_answers_correct(model):
    probe = CachedLM(model, BIG_BUDGET)
    probe.logits("a", [1, 2, 3, 4], 1)
    one_session = probe.cached_bytes
    assert one_session > 0

    lm = CachedLM(model, cache_budget_bytes=2 * one_session)
    for session in ("a", "b", "c"):
        check(lm, session, [1, 2, 3, 4])
        assert lm.cached_bytes <= lm.cache_budget_bytes
    assert lm.num_sessions == 2 and lm.cached_bytes == 2 * one_session
    check(lm, "a", [1, 2, 3, 5])  # "a" was evicted (oldest): recomputed, still right; evicts "b"
    assert set(lm._sessions) == {"c", "a"}

    tiny = CachedLM(model, cache_budget_bytes=1)
    check(tiny, "x", [3, 1, 4, 1, 5])
    check(tiny, "x", [3, 1, 4, 1, 5, 9], num_logits=2)
    assert tiny.num_sessions == 0 and tiny.cached_bytes == 0


def test_use_refreshes_lru_order(model):
    probe = CachedLM(model, BIG_BUDGET)
    probe.logits("a", [1, 2, 3], 1)
    lm = CachedLM(model, cache_budget_bytes=2 * probe.cached_bytes)
    lm.logits("a", [1, 2, 3], 1)
    lm.logits("b", [1, 2, 3], 1)
    lm.logits("a", [1, 2, 3], 1)  # "a" is now the most recent, so "b" goes next
    lm.logits("c", [1, 2, 3], 1)
    assert set(lm._sessions) == {"a", "c"}


def test_end_session_frees_it(model):
    lm = CachedLM(model, BIG_BUDGET)
    lm.logits("a", [1, 2, 3], 1)
    lm.logits("b", [1, 2, 3, 4], 1)
    before = lm.cached_bytes
    lm.end_session("a")
    assert lm.num_sessions == 1 and 0 < lm.cached_bytes < before
    lm.end_session("unknown")  # a hint: no error
    lm.end_session("b")
    assert lm.num_sessions == 0 and lm.cached_bytes == 0
    check(lm, "a", [1, 2, 3, 4])


def test_only_the_uncached_suffix_is_fed_to_the_model(model, monkeypatch):
    lm = CachedLM(model, BIG_BUDGET)
    fed: list[int] = []
    forward = model.forward

    def recording_forward(*args, input_ids=None, **kwargs):
        if kwargs.get("cache") is not None:  # CachedLM's calls, not the reference's
            fed.append(input_ids.shape[1])
        return forward(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "forward", recording_forward)
    seq = [1, 2, 3, 4, 5, 6]
    check(lm, "s", seq)
    check(lm, "s", seq + [7])  # extend by one: one token
    check(lm, "s", seq + [7, 8, 9, 10], num_logits=4)  # 4 rows: from the last cached token on
    check(lm, "s", seq + [7, 2, 2])  # common prefix is 7 tokens: feed the 2 after it
    check(lm, "s", seq + [7, 2, 2])  # same sequence again: recompute only the returned row
    check(lm, "s", seq + [7, 2, 2], num_logits=3)  # rows to return are always recomputed
    assert fed == [6, 1, 4, 2, 1, 3]


def test_uncached_len_counts_what_a_call_would_feed(model):
    lm = CachedLM(model, BIG_BUDGET)
    seq = [1, 2, 3, 4, 5, 6]
    assert lm.uncached_len("s", seq) == 6  # a session never seen: everything
    lm.logits("s", seq, 1)
    assert lm.uncached_len("s", seq + [7, 8]) == 2
    assert lm.uncached_len("s", [1, 2, 9, 9]) == 2  # diverges after two cached tokens
    assert lm.uncached_len("other", seq) == 6


def test_cached_bytes_count_every_layers_keys_and_values(model):
    # Reads transformers' cache internals (cache.layers, layer.is_initialized): a release that
    # changes them fails here, not as a silently wrong memory budget.
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # keys + values, fp32
    lm = CachedLM(model, BIG_BUDGET)
    lm.logits("s", [1, 2, 3, 4, 5], 1)
    assert lm.cached_bytes == 5 * per_token
    lm.logits("s", [1, 2, 3, 9], 2)  # rolled back to 3 cached tokens, then 1 more
    assert lm.cached_bytes == 4 * per_token
