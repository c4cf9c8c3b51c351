"""Hypothesis strategies for every request of every service: valid-ish values mixed with hostile ones.

Valid values are kept cheap (short sequences, k and max_new_tokens small, mostly greedy), so a case
costs milliseconds; hostile ones cover types' edges: empty, negative, beyond the vocabulary or the
context, huge, NaN and infinities, tiny temperatures, long and unicode strings.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from specdec.runtime.wire import encode_rows
from specdec.v1 import common_pb2, draft_pb2, generation_pb2, target_pb2
from tests.fuzz.conftest import MAX_CONTEXT

VOCAB = 8  # tests.conftest.TINY_CHARS + <eos>
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT64 = st.integers(0, 2**64 - 1)
HOSTILE_FLOATS = st.sampled_from([
    math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 1e-45, 1e-38, 1e-6, 1e-5, 1.0001e-5, 1e-4, 0.5, 1.0, 1.0000001,
    2.0, 100.0, 100.01, 1e6, 3.4e38,
])
ANY_FLOAT32 = st.floats(width=32)


def floats(valid: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    return st.one_of(valid, valid, HOSTILE_FLOATS, ANY_FLOAT32)


def valid_ids(min_size: int, max_size: int) -> st.SearchStrategy[list[int]]:
    """Valid ids, cheap to draw at any length: a seeded pseudo-random sequence."""
    return st.tuples(st.integers(min_size, max_size), st.randoms(use_true_random=False)).map(
        lambda t: [t[1].randrange(VOCAB) for _ in range(t[0])])


def token_ids(max_valid: int = 12) -> st.SearchStrategy[list[int]]:
    return st.one_of(
        st.lists(st.integers(0, VOCAB - 1), max_size=max_valid),
        valid_ids(1, max_valid),
        valid_ids(MAX_CONTEXT - 8, MAX_CONTEXT + 2),  # at the context
        st.lists(st.one_of(st.integers(0, VOCAB - 1), st.integers(-3, VOCAB + 3), INT32), max_size=max_valid),
        st.tuples(INT32, st.integers(2, 6)).map(lambda t: [t[0]] * t[1]),  # repeats: n-gram matches of any id
        st.integers(MAX_CONTEXT, 20_000).map(lambda n: [1, 2] * (n // 2)),  # far past the context
    )


def ks() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 3), st.integers(0, 3), st.integers(-3, 20),
                     st.sampled_from([-(2**31), 2**31 - 1, 16, 17, 64, 65]))


def session_ids() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["", "s1", "s2", "s3"]),  # shared sessions: prefix reuse and rollback across cases
        st.text(max_size=24),
        st.integers(1_000, 100_000).map(lambda n: "\u00e9\U0001f600x" * (n // 3)),
    )


def valid_sampling() -> st.SearchStrategy[common_pb2.SamplingParams | None]:
    """Mostly greedy; proto3 zeros mean unset (top_p and lenience 1)."""
    return st.one_of(st.none(), st.builds(
        common_pb2.SamplingParams,
        temperature=st.one_of(st.just(0.0), st.just(0.0), st.floats(0.05, 2.0)),
        top_p=st.one_of(st.just(0.0), st.floats(0.05, 1.0)),
        top_k=st.integers(0, VOCAB + 2),
        lenience=st.one_of(st.just(0.0), st.floats(0.05, 1.0)),
    ))


def sampling() -> st.SearchStrategy[common_pb2.SamplingParams]:
    return st.builds(
        common_pb2.SamplingParams,
        temperature=st.one_of(st.just(0.0), st.just(0.0), floats(st.floats(0.05, 2.0))),
        top_p=floats(st.floats(0.0, 1.0)),
        top_k=st.one_of(st.integers(0, VOCAB + 2), st.integers(-5, 5), INT32),
        lenience=floats(st.floats(0.0, 1.0)),
    )


def unknown_fields() -> st.SearchStrategy[bytes]:
    """Mostly nothing, else a well-formed protobuf field with a number no message uses (a newer
    client's field)."""
    field_ = st.builds(_field_bytes, st.integers(100, 2**29 - 1), st.sampled_from([0, 1, 2, 5]),
                       st.binary(max_size=24), UINT64)
    return st.one_of(st.just(b""), st.just(b""), st.just(b""), field_)


def _field_bytes(number: int, wire_type: int, blob: bytes, value: int) -> bytes:
    tag = _varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + _varint(value)
    if wire_type == 1:
        return tag + value.to_bytes(8, "little")
    if wire_type == 5:
        return tag + (value & 0xFFFFFFFF).to_bytes(4, "little")
    return tag + _varint(len(blob)) + blob


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class Mix:
    """How one case mixes valid and hostile fields: all valid, exactly one hostile (each validation
    alone), or each field either way."""

    def __init__(self, draw: st.DrawFn, names: list[str]) -> None:
        self._draw = draw
        mode = draw(st.sampled_from(["valid", "one", "any"]))
        self._bad: set[str] | None = None  # "any"
        if mode != "any":
            self._bad = {draw(st.sampled_from(names))} if mode == "one" else set()

    def __call__(self, name: str, valid: st.SearchStrategy, hostile: st.SearchStrategy):
        if self._bad is None:
            return self._draw(st.one_of(valid, hostile))
        return self._draw(hostile if name in self._bad else valid)


VALID_SESSIONS = st.one_of(st.sampled_from(["s1", "s2", "s3"]), st.text(max_size=8))


@st.composite
def propose_requests(draw: st.DrawFn) -> draft_pb2.ProposeRequest:
    mix = Mix(draw, ["session_id", "token_ids", "num_tokens", "sampling", "method"])
    sampling_ = mix("sampling", valid_sampling(), sampling())
    return draft_pb2.ProposeRequest(
        session_id=mix("session_id", VALID_SESSIONS, session_ids()),
        token_ids=mix("token_ids", valid_ids(1, 24), token_ids()),
        num_tokens=mix("num_tokens", st.integers(0, 3), ks()),
        sampling=sampling_,
        seed=draw(UINT64),
        method=mix("method", st.sampled_from([1, 2]), st.sampled_from([0, 3, -1, 2**31 - 1])),
    )


def _exactly(n: int, values: st.SearchStrategy) -> st.SearchStrategy[list]:
    return st.lists(values, min_size=n, max_size=n)


_SMALL = st.one_of(st.integers(-3, 12), st.sampled_from([-(2**31), 2**31 - 1, 2**20]))


def _packed(dtype: str, values: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    arrays = st.lists(values, max_size=12).map(lambda v: np.array(v, dtype=dtype).tobytes())
    return st.one_of(arrays, arrays, st.binary(max_size=13))  # binary: lengths not a multiple of 4


def prob_rows() -> st.SearchStrategy[common_pb2.ProbRows]:
    """ProbRows of any shape and content, mostly malformed."""
    floats = st.one_of(st.floats(0, 1, width=32), st.floats(width=32))
    return st.builds(
        common_pb2.ProbRows,
        num_rows=_SMALL,
        vocab_size=_SMALL,
        dense=st.one_of(st.just(b""), _packed("<f4", floats)),
        sparse_row_lengths=_packed("<i4", _SMALL),
        sparse_token_ids=_packed("<i4", _SMALL),
        sparse_probs=_packed("<f4", floats),
    )


def _one_hot(ids: list[int]) -> common_pb2.ProbRows:
    """Rows one-hot at each id, max id + 1 wide, as prompt lookup's go: sparse and narrower than the vocabulary."""
    width = max(ids, default=0) + 1
    return encode_rows(torch.nn.functional.one_hot(torch.tensor(ids, dtype=torch.long), width).float())


def q_rows(drafts: list[int]) -> st.SearchStrategy[common_pb2.ProbRows]:
    """Rows a draft could have sampled `drafts` (valid ids) from: random and dense, or one-hot at each."""
    def dense(seed: int) -> common_pb2.ProbRows:
        rows = torch.rand(len(drafts), VOCAB, generator=torch.Generator().manual_seed(seed)) + 1e-3
        return encode_rows(rows / rows.sum(-1, keepdim=True))

    return st.one_of(st.integers(0, 2**32 - 1).map(dense), st.just(_one_hot(drafts)))


@st.composite
def score_requests(draw: st.DrawFn) -> target_pb2.ScoreRequest:
    mix = Mix(draw, ["session_id", "token_ids", "draft_token_ids", "sampling", "draft_probs", "uniforms",
                     "correction_uniform", "features_from"])
    drafts = mix("draft_token_ids", st.lists(st.integers(0, VOCAB - 1), max_size=4), st.one_of(
        st.lists(st.one_of(st.integers(0, VOCAB - 1), INT32), max_size=4), valid_ids(15, 20)))
    k = len(drafts)
    hostile_uniforms = st.lists(floats(st.floats(0.0, 1.0, width=32)), max_size=6)
    valid_drafts = all(0 <= x < VOCAB for x in drafts)
    # Malformed rows, a row too many, none, or (for valid drafts) rows that give each draft probability 0
    hostile_q = st.one_of(prob_rows(), q_rows([0] * (k + 1)), st.none(),
                          *([st.just(_one_hot([(x + 1) % VOCAB for x in drafts]))] if valid_drafts and k else []))
    return target_pb2.ScoreRequest(
        session_id=mix("session_id", VALID_SESSIONS, session_ids()),
        token_ids=mix("token_ids", valid_ids(1, 24), token_ids()),
        draft_token_ids=drafts,
        sampling=mix("sampling", valid_sampling(), sampling()),
        # q_1..q_k, each > 0 at its draft, and uniforms in [0, 1), one per draft; greedy steps ignore them all
        draft_probs=mix("draft_probs", q_rows(drafts) if valid_drafts else prob_rows(), hostile_q),
        uniforms=mix("uniforms", _exactly(k, st.floats(0.0, 1.0, width=32, exclude_max=True)), hostile_uniforms),
        correction_uniform=mix("correction_uniform", st.floats(0.0, 1.0, exclude_max=True), floats(st.floats(0, 1))),
        # 0 is a committed position of every valid sequence; unset asks for no features
        features_from=mix("features_from", st.sampled_from([None, 0]), st.one_of(st.none(), INT32)),
    )


def _texts(valid_chars: str = "abcdefg") -> st.SearchStrategy[str]:
    return st.one_of(st.text(alphabet=valid_chars, max_size=12), st.text(max_size=12))


def messages() -> st.SearchStrategy[list[generation_pb2.Message]]:
    message = st.builds(generation_pb2.Message, role=st.one_of(st.just("user"), st.just(""), st.text(max_size=8)),
                        content=_texts())
    return st.one_of(st.lists(message, min_size=1, max_size=4),
                     st.integers(100, 5_000).map(lambda n: [generation_pb2.Message(role="u", content="a")] * n))


def stop_strings() -> st.SearchStrategy[list[str]]:
    return st.one_of(
        st.just([]), st.lists(st.text(alphabet="abcdefg", max_size=3), max_size=3), st.lists(st.text(), max_size=20),
        st.integers(17, 20_000).map(lambda n: ["a"] * n), st.integers(257, 200_000).map(lambda n: ["ab" * (n // 2)]),
    )


def _inputs() -> st.SearchStrategy[tuple[str, list[generation_pb2.Message], list[int]]]:
    """Exactly one of prompt, messages and prompt_token_ids, each valid."""
    prompt = st.text(alphabet="abcdefg", min_size=1, max_size=12) | st.text(min_size=1, max_size=12)
    message = st.builds(generation_pb2.Message, role=st.sampled_from(["user", "assistant", "system"]), content=_texts())
    return st.one_of(prompt.map(lambda p: (p, [], [])), st.lists(message, min_size=1, max_size=3).map(
        lambda m: ("", m, [])), valid_ids(1, 12).map(lambda i: ("", [], i)))


@st.composite
def _hostile_inputs(draw: st.DrawFn) -> tuple[str, list[generation_pb2.Message], list[int]]:
    """None, two or all three inputs, or one with hostile content."""
    given = draw(st.sampled_from([
        ("prompt",), ("messages",), ("prompt_token_ids",), (), ("prompt", "prompt_token_ids"), ("prompt", "messages"),
        ("messages", "prompt_token_ids"), ("prompt", "messages", "prompt_token_ids"),
    ]))
    long_prompts = st.integers(2_000, 3_000_000).map(lambda n: "ab" * (n // 2))  # up to 3 MB: refused untokenized
    prompt = draw(st.one_of(_texts(), long_prompts)) if "prompt" in given else ""
    messages_ = draw(messages()) if "messages" in given else []
    return prompt, messages_, draw(token_ids()) if "prompt_token_ids" in given else []


@st.composite
def generate_requests(draw: st.DrawFn) -> generation_pb2.GenerateRequest:
    names = ["inputs", "max_new_tokens", "temperature", "top_p", "top_k", "num_speculative_tokens", "draft",
             "lenience", "stop"]
    mix = Mix(draw, names)
    prompt, messages_, prompt_ids = mix("inputs", _inputs(), _hostile_inputs())
    request = generation_pb2.GenerateRequest(
        prompt=prompt, messages=messages_, prompt_token_ids=prompt_ids,
        max_new_tokens=mix("max_new_tokens", st.integers(0, 4), st.sampled_from(
            [-1, -(2**31), 2**31 - 1, MAX_CONTEXT, 1000])),
        top_k=mix("top_k", st.integers(0, VOCAB + 2), INT32),
        num_speculative_tokens=mix("num_speculative_tokens", st.integers(0, 3), ks()),
        draft=mix("draft", st.sampled_from(["", "model", "ngram", "none"]), st.text(max_size=8)),
        lenience=mix("lenience", st.one_of(st.just(0.0), st.floats(0.05, 1.0)), floats(st.floats(0.0, 1.0))),
        stop=mix("stop", st.lists(st.text(alphabet="abcdefg", min_size=1, max_size=3), max_size=3), stop_strings()),
        ignore_eos=draw(st.booleans()),
    )
    hostile = ANY_FLOAT32 | HOSTILE_FLOATS
    temperature = mix("temperature", st.one_of(st.none(), st.just(0.0), st.floats(0.05, 2.0)), hostile)
    top_p = mix("top_p", st.one_of(st.none(), st.floats(0.05, 1.0)), hostile)
    if temperature is not None:
        request.temperature = temperature
    if top_p is not None:
        request.top_p = top_p
    if draw(st.booleans()):
        request.seed = draw(UINT64)
    return request


# The HTTP API: JSON bodies of every shape, fields of the right and the wrong types.
_HUGE_INTS = st.sampled_from([2**31, -(2**31) - 1, 2**63, 2**64, -(2**64), 10**30, 10**400])
_ODD_STRINGS = st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "\U0001f600" * 3, "a" * 10_000])
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), INT32, _HUGE_INTS, HOSTILE_FLOATS,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), _ODD_STRINGS,
)
JSON_JUNK = st.recursive(
    JSON_SCALARS, lambda children: st.one_of(st.lists(children, max_size=3),
                                             st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=6,
)


_ABSENT = object()  # a field left out of the body


def _maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just(_ABSENT), valid)


def _prompts() -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(valid, hostile) completion prompts: a string, token ids, or a list of one of either."""
    text = st.text(alphabet="abcdefg", min_size=1, max_size=12) | st.text(min_size=1, max_size=12)
    ids = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8)
    hostile_ids = st.lists(st.one_of(st.integers(0, VOCAB - 1), INT32, _HUGE_INTS), max_size=8)
    return (st.one_of(text, text, ids, text.map(lambda t: [t]), ids.map(lambda i: [i])),
            st.one_of(_ODD_STRINGS, hostile_ids, hostile_ids.map(lambda i: [i]), st.lists(text, max_size=3), JSON_JUNK))


def _chat_messages() -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(valid, hostile) chat messages."""
    text = st.text(alphabet="abcdefg", max_size=12)
    parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=3)
    valid = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                            "content": st.one_of(text, parts)}), min_size=1, max_size=3)
    content = st.one_of(text, _ODD_STRINGS, JSON_JUNK, st.lists(st.fixed_dictionaries({
        "type": st.sampled_from(["text", "image_url"]), "text": st.one_of(text, JSON_JUNK)}), max_size=3))
    message = st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "", "tool", "robot"]), JSON_JUNK)},
                                    optional={"content": content, "name": JSON_JUNK})
    return valid, st.one_of(st.lists(message, max_size=4), st.lists(JSON_JUNK, max_size=3), JSON_JUNK)


def _http_fields(chat: bool, model: str) -> dict[str, tuple[st.SearchStrategy, st.SearchStrategy]]:
    """Each body field: (valid values or absent, hostile values, junk of any JSON type among them)."""
    small = st.integers(0, 4)
    hostile_floats = st.one_of(HOSTILE_FLOATS, _HUGE_INTS, JSON_JUNK)
    prompt = _chat_messages() if chat else _prompts()
    return {
        "messages" if chat else "prompt": (prompt[0], st.one_of(st.just(_ABSENT), prompt[1])),
        "model": (_maybe(st.just(model)), st.one_of(st.sampled_from(["gpt-4", ""]), JSON_JUNK)),
        "max_tokens": (_maybe(small), st.one_of(INT32, _HUGE_INTS, JSON_JUNK)),
        "max_completion_tokens": (_maybe(small), st.one_of(INT32, JSON_JUNK)),
        "temperature": (_maybe(st.one_of(st.just(0), st.just(0.0), st.floats(0.05, 2.0))), hostile_floats),
        "top_p": (_maybe(st.floats(0.05, 1.0)), hostile_floats),
        "top_k": (_maybe(small), st.one_of(INT32, _HUGE_INTS, JSON_JUNK)),
        "n": (_maybe(st.just(1)), st.one_of(st.sampled_from([2, 0, -1]), JSON_JUNK)),
        "seed": (_maybe(UINT64), st.one_of(st.integers(-5, -1), _HUGE_INTS, JSON_JUNK)),
        "stop": (_maybe(st.one_of(st.text(alphabet="abcdefg", min_size=1, max_size=3),
                                  st.lists(st.text(alphabet="abcdefg", min_size=1, max_size=3), max_size=3))),
                 st.one_of(st.integers(17, 5_000).map(lambda n: ["a"] * n), st.integers(257, 50_000).map(
                     lambda n: "a" * n), st.lists(st.one_of(_ODD_STRINGS, JSON_JUNK), max_size=3), JSON_JUNK)),
        "stream": (_maybe(st.booleans()), JSON_JUNK),
        "stream_options": (_maybe(st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})), JSON_JUNK),
        "num_speculative_tokens": (_maybe(st.integers(0, 3)), st.one_of(ks(), JSON_JUNK)),
        "draft": (_maybe(st.sampled_from(["", "model", "ngram", "none"])), st.one_of(_ODD_STRINGS, JSON_JUNK)),
        "lenience": (_maybe(st.floats(0.05, 1.0)), hostile_floats),
        "ignore_eos": (_maybe(st.booleans()), JSON_JUNK),
        # OpenAI's that this server refuses unless at the value that means "unused"
        "logprobs": (_maybe(st.sampled_from([None, False, 0])), st.one_of(st.sampled_from([True, 5]), JSON_JUNK)),
        "echo": (_maybe(st.just(False)), st.one_of(st.just(True), JSON_JUNK)),
        "logit_bias": (_maybe(st.just({})), st.one_of(st.just({"1": 5}), JSON_JUNK)),
        "user": (_maybe(st.text(max_size=8)), JSON_JUNK),  # OpenAI's, unused here
        "an_unknown_field": (_maybe(JSON_JUNK), JSON_JUNK),
    }


@st.composite
def http_bodies(draw: st.DrawFn, chat: bool, model: str) -> dict:
    """An OpenAI request body, its fields mixed valid and hostile as Mix says, or a dict of junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.dictionaries(st.text(max_size=8), JSON_JUNK, max_size=4))
    fields = _http_fields(chat, model)
    mix = Mix(draw, list(fields))
    body = {name: mix(name, valid, hostile) for name, (valid, hostile) in fields.items()}
    return {name: value for name, value in body.items() if value is not _ABSENT}


RAW_BODIES = st.one_of(
    st.sampled_from([
        b"", b"{", b"}", b"null", b"[]", b"[1, 2]", b'"prompt"', b"42", b"NaN", b"\xff\xfe\x00", b'{"prompt": NaN}',
        b'{"prompt": "ab", "temperature": Infinity}', b'{"prompt": "ab", "max_tokens": -Infinity}',
        b'{"prompt": "ab", "max_tokens": ' + b"9" * 5_000 + b"}", b'{"prompt": "ab", "top_p": 1e999}',
        b'{"prompt": "ab"}{"prompt": "cd"}', b'{"prompt": "\\ud800"}', b"[" * 100_000, b'{"a":' * 50_000,
        '{"prompt": "ab"}'.encode("utf-16"), b'{"prompt": "ab", "prompt": ["c"]}',
    ]),
    st.binary(max_size=40),
)
