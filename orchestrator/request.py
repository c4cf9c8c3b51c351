"""GenerateRequest -> a validated GenerationConfig, or InvalidArgument with an actionable message."""

from __future__ import annotations

import random
from dataclasses import dataclass

import jinja2
from transformers import PreTrainedTokenizerBase

from specdec.runtime.errors import FailedPrecondition, InvalidArgument
from specdec.runtime.sampling import SamplingParams
from specdec.runtime.validation import checked_sampling
from specdec.v1 import generation_pb2

DRAFT_KINDS = ("model", "ngram", "none")
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 256  # each one is matched against the text after every token
# A prompt longer than this many characters per token of context cannot fit: refused before it is
# tokenized, so a multi-megabyte prompt costs no tokenizer time on the orchestrator's event loop.
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class ServerDefaults:
    draft: str  # "model", "ngram" or "none"
    k: int  # 0 = adaptive
    max_k: int  # the largest k both upstreams accept
    adaptive_max_k: int  # adaptive k's ceiling
    max_new_tokens: int
    draft_has_model: bool


@dataclass(frozen=True)
class GenerationConfig:
    prompt_ids: list[int]
    max_new_tokens: int  # already capped by the model's context
    params: SamplingParams
    seed: int
    draft: str
    k: int  # 0 when draft == "none"; the ceiling when adaptive
    adaptive: bool  # choose k each iteration (up to k)
    stop: tuple[str, ...]
    ignore_eos: bool


def parse_request(
    request: generation_pb2.GenerateRequest,
    tokenizer: PreTrainedTokenizerBase,
    defaults: ServerDefaults,
    vocab_size: int,
    max_context: int,
) -> GenerationConfig:
    text_chars = len(request.prompt) + sum(len(m.content) + len(m.role) for m in request.messages)
    if text_chars > MAX_CHARS_PER_TOKEN * max_context:
        raise InvalidArgument(
            f"the prompt is {text_chars} characters; the target model's context of {max_context} tokens cannot hold it"
        )
    if len(request.messages) >= max_context:  # every message renders to at least one token
        raise InvalidArgument(
            f"{len(request.messages)} messages; the target model's context of {max_context} tokens cannot hold them"
        )
    prompt_ids = _prompt_ids(request, tokenizer, vocab_size, max_context)
    if len(prompt_ids) >= max_context:
        raise InvalidArgument(
            f"the prompt is {len(prompt_ids)} tokens; the target model's context is {max_context} tokens, "
            "which leaves no room to generate"
        )
    if request.max_new_tokens < 0:
        raise InvalidArgument(f"max_new_tokens must be >= 0 (0 = server default), got {request.max_new_tokens}")
    max_new_tokens = min(request.max_new_tokens or defaults.max_new_tokens, max_context - len(prompt_ids))

    params = checked_sampling(SamplingParams(
        temperature=request.temperature if request.HasField("temperature") else 0.0,
        top_p=request.top_p if request.HasField("top_p") else 1.0,
        top_k=request.top_k,
        lenience=request.lenience or 1.0,
    ))

    draft = request.draft or defaults.draft
    if draft not in DRAFT_KINDS:
        raise InvalidArgument(f"unknown draft {request.draft!r}; choose one of {', '.join(DRAFT_KINDS)}")
    if draft == "model" and not defaults.draft_has_model:
        raise FailedPrecondition("the draft service has no model loaded; use draft=ngram or draft=none")
    if request.num_speculative_tokens < 0 or request.num_speculative_tokens > defaults.max_k:
        raise InvalidArgument(
            f"num_speculative_tokens must be in 0..{defaults.max_k} (0 = server default), "
            f"got {request.num_speculative_tokens}"
        )
    k = 0 if draft == "none" else request.num_speculative_tokens or defaults.k or defaults.adaptive_max_k
    adaptive = draft != "none" and not request.num_speculative_tokens and not defaults.k

    if any(not s for s in request.stop):
        raise InvalidArgument("stop strings must not be empty")
    if len(request.stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in request.stop):
        raise InvalidArgument(
            f"at most {MAX_STOP_STRINGS} stop strings of at most {MAX_STOP_CHARS} characters each; "
            f"got {len(request.stop)}, the longest {max(len(s) for s in request.stop)} characters"
        )
    seed = request.seed if request.HasField("seed") else random.getrandbits(63)
    return GenerationConfig(
        prompt_ids=prompt_ids,
        max_new_tokens=max_new_tokens,
        params=params,
        seed=seed,
        draft=draft,
        k=k,
        adaptive=adaptive,
        stop=tuple(request.stop),
        ignore_eos=request.ignore_eos,
    )


def _prompt_ids(
    request: generation_pb2.GenerateRequest, tokenizer: PreTrainedTokenizerBase, vocab_size: int, max_context: int
) -> list[int]:
    given = [name for name in ("prompt", "messages", "prompt_token_ids") if _is_set(request, name)]
    if len(given) != 1:
        raise InvalidArgument(
            "set exactly one of prompt, messages or prompt_token_ids"
            + (f" (got {', '.join(given)})" if given else " (the prompt is empty)")
        )
    if request.prompt:
        ids = list(tokenizer(request.prompt)["input_ids"])
        if not ids:
            raise InvalidArgument("the prompt tokenizes to no tokens")
        return ids
    if request.messages:
        if not tokenizer.chat_template:
            raise InvalidArgument("the target tokenizer has no chat template; send prompt or prompt_token_ids instead")
        if any(not m.role for m in request.messages):
            raise InvalidArgument("every message needs a role (e.g. 'user')")
        conversation = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            rendered = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        except jinja2.TemplateSyntaxError:
            raise  # the server's template is broken, not the request
        except jinja2.TemplateError as error:  # raise_exception() in the template: it refuses this conversation
            raise InvalidArgument(f"the target model's chat template refuses these messages: {error}") from None
        if len(rendered) > MAX_CHARS_PER_TOKEN * max_context:  # the template's own text counts too
            raise InvalidArgument(
                f"the messages render to {len(rendered)} characters with the chat template; the target model's "
                f"context of {max_context} tokens cannot hold them"
            )
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    ids = list(request.prompt_token_ids)
    if not 0 <= min(ids) <= max(ids) < vocab_size:
        raise InvalidArgument(f"prompt_token_ids must be in [0, {vocab_size}); got {min(ids)}..{max(ids)}")
    return ids


def _is_set(request: generation_pb2.GenerateRequest, name: str) -> bool:
    return len(getattr(request, name)) > 0
