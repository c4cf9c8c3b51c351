"""A model as the draft and target services host it: weights, prefix cache and its ModelInfo."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from specdec.runtime.cached_lm import CachedLM
from specdec.runtime.models import load_model, load_tokenizer, max_context, tokenizer_fingerprint
from specdec.v1 import common_pb2

log = logging.getLogger("specdec")


@dataclass(frozen=True)
class ModelOptions:
    dtype: str = "float32"
    device: str = "cpu"
    cache_mb: int = 1024
    max_k: int = 16
    trust_remote_code: bool = False


@dataclass(frozen=True)
class HostedModel:
    lm: CachedLM
    info: common_pb2.ModelInfo

    @classmethod
    def load(cls, spec: str, options: ModelOptions) -> HostedModel:
        started = time.perf_counter()
        model = load_model(spec, options.dtype, options.device, options.trust_remote_code)
        tokenizer = load_tokenizer(spec, options.trust_remote_code)
        lm = CachedLM(model, cache_budget_bytes=options.cache_mb * 1024 * 1024)
        info = common_pb2.ModelInfo(
            model=spec,
            vocab_size=lm.vocab_size,
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            max_context=max_context(model),
            max_speculative_tokens=options.max_k,
        )
        log.info("loaded %s (%s, %s) in %.1f s", spec, options.dtype, options.device, time.perf_counter() - started)
        return cls(lm, info)


def configure_torch_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
