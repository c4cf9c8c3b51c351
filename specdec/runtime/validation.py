"""Checks on what the draft and target services are asked, shared by both."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from specdec.runtime.errors import FailedPrecondition, InvalidArgument
from specdec.runtime.features import FeatureRows, decode_features
from specdec.runtime.sampling import MIN_TEMPERATURE, SamplingParams
from specdec.runtime.speculative import Uniforms
from specdec.runtime.wire import decode_rows
from specdec.v1 import common_pb2


def checked_sampling(params: SamplingParams) -> SamplingParams:
    """`params`, or InvalidArgument saying which setting is out of range. A temperature below
    MIN_TEMPERATURE (where logits / temperature would overflow) is treated as greedy, its limit."""
    if 0.0 < params.temperature < MIN_TEMPERATURE:
        params = dataclasses.replace(params, temperature=0.0)
    try:
        params.validate()
    except ValueError as error:
        raise InvalidArgument(str(error)) from None
    return params


def sampling_from_proto(message: common_pb2.SamplingParams) -> SamplingParams:
    return checked_sampling(SamplingParams(
        temperature=message.temperature,
        top_p=message.top_p or 1.0,  # proto3 default 0 means unset
        top_k=message.top_k,
        lenience=message.lenience or 1.0,
    ))


def sampling_to_proto(params: SamplingParams) -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(
        temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, lenience=params.lenience
    )


def check_fingerprint(expected: str, info: common_pb2.ModelInfo) -> None:
    """FailedPrecondition when the caller expects another tokenizer than this replica's model has."""
    if expected and expected != info.tokenizer_fingerprint:
        raise FailedPrecondition(
            f"this replica serves {info.model!r}, whose tokenizer is not the one the caller expects "
            "(a rollout mixing models?); the step must go to a replica with the caller's model"
        )


def check_tokens(
    token_ids: Sequence[int],
    *,
    num_new: int,
    max_new: int,
    vocab_size: int,
    max_context: int,
    draft_ids: Sequence[int] = (),
) -> list[int]:
    """Validates a committed sequence that `num_new` more tokens (`draft_ids`, if given) extend."""
    if not token_ids:
        raise InvalidArgument("token_ids is empty: send the full committed sequence (at least one token)")
    if not 0 <= num_new <= max_new:
        raise InvalidArgument(f"asked for {num_new} speculative tokens; this service allows 0..{max_new}")
    if len(token_ids) + num_new > max_context:
        raise InvalidArgument(
            f"{len(token_ids)} tokens + {num_new} more exceed the model's context of {max_context} tokens"
        )
    tokens = list(token_ids)  # one pass over the protobuf container: this runs on every step
    low, high = min(tokens), max(tokens)
    if draft_ids:
        low, high = min(low, min(draft_ids)), max(high, max(draft_ids))
    if vocab_size and not 0 <= low <= high < vocab_size:
        raise InvalidArgument(f"token ids must be in [0, {vocab_size}); got {low}..{high}")
    return tokens


def check_sampled_step(
    draft_probs: common_pb2.ProbRows,
    uniforms: Sequence[float],
    correction_uniform: float,
    *,
    draft_ids: Sequence[int],
    vocab_size: int,
) -> tuple[torch.Tensor, Uniforms]:
    """A sampled Score's q rows ([k, vocab_size] float32) and the orchestrator's uniforms, checked: one row and
    one uniform per draft, rows well-formed and no wider than the vocabulary, each giving its draft q_i(x_i) > 0
    (it was sampled from that row)."""
    k = len(draft_ids)
    if len(uniforms) != k or draft_probs.num_rows != k:
        raise InvalidArgument(
            f"sampling needs uniforms and draft_probs rows (q_i) for each of the {k} draft tokens; "
            f"got {len(uniforms)} and {draft_probs.num_rows}"
        )
    u = torch.tensor(list(uniforms), dtype=torch.float32)
    if not (bool(((u >= 0) & (u < 1)).all()) and 0.0 <= correction_uniform < 1.0):
        raise InvalidArgument("uniforms and correction_uniform must be in [0, 1)")
    try:
        q = decode_rows(draft_probs, vocab_size)  # [k, V]
    except ValueError as error:
        raise InvalidArgument(f"draft_probs: {error}") from None
    if not bool(((q >= 0) & (q <= 1)).all()):
        raise InvalidArgument("draft_probs must hold probabilities, in [0, 1]")
    q_x = q[torch.arange(k), torch.tensor(list(draft_ids), dtype=torch.long)]  # [k]
    if not bool((q_x > 0).all()):
        i = int((q_x <= 0).nonzero()[0])
        raise InvalidArgument(
            f"draft_probs row {i} gives draft token {draft_ids[i]} probability 0: each row must be the "
            "distribution its draft token was sampled from"
        )
    return q, Uniforms(u, correction_uniform)


def check_features_from(features_from: int | None, num_tokens: int) -> int | None:
    """A Score's features_from: the first committed position whose features the reply carries."""
    if features_from is not None and not 0 <= features_from <= num_tokens - 1:
        raise InvalidArgument(
            f"features_from {features_from} is outside [0, {num_tokens - 1}]: ask for the features from a "
            "committed position (len(token_ids) - 1 once the earlier ones are known, 0 at the first step)"
        )
    return features_from


def check_features(
    message: common_pb2.Features | None, *, width: int, num_tokens: int, max_context: int
) -> FeatureRows | None:
    """A Propose's features (None: absent), which end at the second-to-last of its `num_tokens` tokens."""
    if message is None:
        return None
    if message.width != width:
        raise InvalidArgument(f"features are {message.width} wide; this draft model drafts from {width}-wide features")
    if not 0 <= message.num_rows <= max_context:
        raise InvalidArgument(f"{message.num_rows} feature rows; this service takes 0..{max_context} (its context)")
    if message.offset < 0:
        raise InvalidArgument(
            f"features offset {message.offset} is negative: it is the sequence position of the first row"
        )
    if message.offset + message.num_rows != num_tokens - 1:
        raise InvalidArgument(
            f"feature rows cover positions {message.offset}..{message.offset + message.num_rows - 1}; they must "
            f"end at position {num_tokens - 2}, the one before the last of the {num_tokens} tokens"
        )
    try:
        return decode_features(message)
    except ValueError as error:
        raise InvalidArgument(str(error)) from None
