"""A causal LM behind a per-session prefix KV cache.

Every request carries the full token sequence. The cache keeps, per session, the tokens it has
keys/values for; a request reuses the longest common prefix and drops the rest (that drop is the
rollback of rejected drafts). A session the replica never saw, or evicted, is recomputed from the
tokens: slower, never wrong. Memory is bounded by a byte budget with LRU eviction.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from specdec.runtime.features import FeatureRows, feature_tap


@dataclass(frozen=True)
class Step:
    """One model call of a session: the logits after each of the last `num_logits` positions, and the
    features (final hidden states) of the last `num_features`. Those positions are computed now: the
    prefix cache is reused only up to the first of them."""

    session_id: str
    token_ids: list[int]
    num_logits: int
    num_features: int = 0
    features: FeatureRows | None = None  # input features, for a feature drafter's model; LMs ignore them

    @property
    def num_computed(self) -> int:
        """The trailing positions this step must compute whatever the cache holds."""
        return max(self.num_logits, self.num_features)


@dataclass(frozen=True)
class StepOutput:
    logits: torch.Tensor  # [num_logits, V] float32: row j predicts the successor of position len - num_logits + j
    features: torch.Tensor | None = None  # [num_features, H] float16, the last positions' hidden states; None if 0


@dataclass
class _Session:
    token_ids: list[int]  # the tokens whose keys/values `cache` holds
    cache: DynamicCache
    nbytes: int


class CachedLM:
    def __init__(self, model: PreTrainedModel, cache_budget_bytes: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().out_features)
        self.cache_budget_bytes = cache_budget_bytes
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._features = feature_tap(model)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._cached_bytes = 0  # kept as a running sum: metrics read it from another thread

    def logits(self, session_id: str, token_ids: list[int], num_logits: int) -> torch.Tensor:
        """[num_logits, V] float32: the logits predicting each of the last `num_logits` positions' successors.

        Row j is the model's output after token_ids[: len(token_ids) - num_logits + 1 + j].
        """
        return self._run(Step(session_id, token_ids, num_logits)).logits

    max_batch_rows = 64  # steps run one after another here: any number may come at once

    def forward(self, steps: list[Step]) -> list[StepOutput]:
        return [self._run(step) for step in steps]

    @torch.inference_mode()
    def _run(self, step: Step) -> StepOutput:
        token_ids = step.token_ids
        session = self._pop(step.session_id)
        if session is not None:
            reuse = min(common_prefix_len(session.token_ids, token_ids), len(token_ids) - step.num_computed)
            cache = session.cache
            drop = cache.get_seq_length() - reuse
            if drop > 0 and cache.is_croppable:
                cache.crop(-drop)
            elif drop > 0:  # e.g. sliding-window caches: start over
                reuse, cache = 0, DynamicCache(config=self.model.config)
        else:
            reuse, cache = 0, DynamicCache(config=self.model.config)

        input_ids = torch.tensor([token_ids[reuse:]], dtype=torch.long, device=self.device)  # [1, S]
        new = input_ids.shape[1]
        # Skip the LM head elsewhere (logits_to_keep=0 would mean every position).
        keep = {"logits_to_keep": max(step.num_logits, 1)} if self._keeps_logits else {}
        output = self.model(input_ids=input_ids, cache=cache, use_cache=True, **keep)
        logits = output.logits[0, output.logits.shape[1] - step.num_logits:].float()  # [num_logits, V]
        features = None
        if step.num_features:
            features = self._features.take()[0, new - step.num_features:].to(torch.float16)  # [num_features, H]

        self._store(step.session_id, _Session(list(token_ids), cache, _cache_nbytes(cache)))
        return StepOutput(logits, features)

    def uncached_len(self, session_id: str, token_ids: list[int]) -> int:
        """How many of `token_ids` a call would run through the model: the rest come from the cache."""
        session = self._sessions.get(session_id)
        return len(token_ids) - (common_prefix_len(session.token_ids, token_ids) if session is not None else 0)

    def end_session(self, session_id: str) -> None:
        self._pop(session_id)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    @property
    def cache_usage(self) -> float:
        """Fraction of the byte budget in use."""
        return min(1.0, self._cached_bytes / self.cache_budget_bytes)

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    def _pop(self, session_id: str) -> _Session | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._cached_bytes -= session.nbytes
        return session

    def _store(self, session_id: str, session: _Session) -> None:
        self._sessions[session_id] = session  # most recently used last
        self._cached_bytes += session.nbytes
        while self._sessions and self._cached_bytes > self.cache_budget_bytes:
            self._pop(next(iter(self._sessions)))


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, at C speed
        return n
    return next(i for i in range(n) if a[i] != b[i])


def _cache_nbytes(cache: DynamicCache) -> int:
    return sum(
        tensor.numel() * tensor.element_size()
        for layer in cache.layers
        if layer.is_initialized
        for tensor in (layer.keys, layer.values)
    )
