"""A model as the draft and target services host it: weights, KV cache, batch scheduler and ModelInfo."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from specdec.runtime import precision, service_metrics
from specdec.runtime.batching import BatchScheduler
from specdec.runtime.cached_lm import CachedLM, Step
from specdec.runtime.eagle_head import eagle_dir, load_eagle, slice_of
from specdec.runtime.eagle_lm import EagleLM
from specdec.runtime.features import feature_size_of
from specdec.runtime.models import load_model, load_tokenizer, max_context, tokenizer_fingerprint
from specdec.runtime.slot_lm import SlotLM, agrees_with_reference
from specdec.runtime.vocab_slice import apply_vocab_slice
from specdec.v1 import common_pb2

log = logging.getLogger("specdec")


@dataclass(frozen=True)
class ModelOptions:
    precision: str = "float32"  # one of precision_names.CHOICES
    device: str = "cpu"
    cache_mb: int = 2048  # `specdec serve` has the same defaults
    max_context: int = 2048  # tokens per session, at most the model's own context
    max_k: int = 16
    trust_remote_code: bool = False
    threads: int = 0  # torch threads of the model thread (0 = torch's default)
    compile: bool = False  # torch.compile the forward pass, at load
    vocab_slice: str = ""  # an EAGLE head whose FR-Spec slice the LM's output layer is cut to ("" = whole)


@dataclass(frozen=True)
class HostedModel:
    lm: SlotLM | CachedLM
    scheduler: BatchScheduler
    info: common_pb2.ModelInfo

    @classmethod
    def load(cls, spec: str, options: ModelOptions, returns_features: bool = False) -> HostedModel:
        """`returns_features`: the service returns the model's features (a target), which ModelInfo says."""
        started = time.perf_counter()

        picked: list[precision.Precision] = []

        contexts: list[int] = []

        def load_lm() -> SlotLM | CachedLM | EagleLM:  # on the model thread, which runs all the model's work
            if (head_dir := eagle_dir(spec)) is not None:
                if options.vocab_slice:
                    raise ValueError("--vocab-slice is for an LM draft: an EAGLE head scores its own slice already")
                head, target_context = load_eagle(head_dir, options.device, options.trust_remote_code)
                picked.append(precision.FLOAT32)
                contexts.append(min(options.max_context, target_context))
                return EagleLM(head, options.cache_mb * 1024 * 1024, contexts[0])
            model = load_model(spec, "float32", "cpu", options.trust_remote_code)
            if options.vocab_slice:
                apply_vocab_slice(model, slice_of(options.vocab_slice))
            picked.append(precision.resolve(options.precision, model, options.device))
            contexts.append(min(options.max_context, max_context(model)))
            lm = kv_cache_for(model.to(options.device), options.cache_mb * 1024 * 1024, contexts[0], picked[0])
            if options.compile:
                compile_forward(lm)
            return lm

        scheduler = BatchScheduler(load_lm, options.threads, on_batch=service_metrics.observe_batch)
        lm, served, context = scheduler.model, picked[0], contexts[0]
        tokenizer = load_tokenizer(spec, options.trust_remote_code)
        info = common_pb2.ModelInfo(
            model=spec,
            vocab_size=lm.vocab_size,
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            max_context=context,
            max_speculative_tokens=options.max_k,
            precision=served.name,
            feature_size=feature_size_of(lm, returns_features),
        )
        log.info("loaded %s at %s on %s in %.1f s", spec, served.describe(), options.device,
                 time.perf_counter() - started)
        service_metrics.observe_layout(lm)
        return cls(lm, scheduler, info)

    async def end_session(self, session_id: str) -> None:
        await self.scheduler.end_session(session_id)


def compile_forward(lm: SlotLM | CachedLM) -> None:
    """torch.compile the model (shapes dynamic) and run each kind of pass the services send once, so that
    compiling happens at load rather than inside the first requests."""
    started = time.perf_counter()
    log.info("compiling the forward pass (4 minutes for the default target on 2 CPU cores) ...")
    lm.model = torch.compile(lm.model, dynamic=True)
    prompt = [i % lm.vocab_size for i in range(1, 9)]
    warm_ups = [
        [Step("compile-a", prompt, 1)],  # a prefill
        [Step("compile-a", prompt + prompt[:1], 1)],  # one row of one token: no mask
        [Step("compile-a", prompt + prompt[:4], 3)],  # a verify
        [Step("compile-a", prompt + prompt[:2], 1), Step("compile-b", prompt[:3], 1)],  # a batch
    ]
    for steps in warm_ups:
        lm.forward(steps)
    for session_id in ("compile-a", "compile-b"):
        lm.end_session(session_id)
    log.info("compiled in %.0f s", time.perf_counter() - started)


def kv_cache_for(
    model, budget_bytes: int, context: int, served: precision.Precision = precision.FLOAT32
) -> SlotLM | CachedLM:
    """The model at its served precision behind a slot KV cache (batched passes) where the architecture
    gives the same logits through it, else behind the per-session cache, which runs sessions one after
    another. The check runs on the float32 model, before conversion: it is about the architecture, and
    below float32 the rounding of a batched pass alone moves logits by more than a wrong cache would hide."""
    try:
        agrees = agrees_with_reference(SlotLM(model, cache_budget_bytes=1 << 24, capacity=16))
        reason = "" if agrees else "its logits differ from a per-session cache's"
    except Exception as error:  # noqa: BLE001 - any failure means: not this architecture
        reason = f"{type(error).__name__}: {error}"
    model = precision.apply(model, served)
    if not reason:
        lm = SlotLM(model, budget_bytes, context)
        log.info("slot KV cache: %d slots of %d tokens", lm.num_slots, context)
        return lm
    log.warning("no slot KV cache for %s (%s): sessions run one at a time", type(model).__name__, reason)
    return CachedLM(model, budget_bytes)
