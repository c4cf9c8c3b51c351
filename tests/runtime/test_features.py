"""specdec.runtime.features and the features out of the forward pass: the rows every LM path returns are the
model's own last hidden states (`output_hidden_states=True`'s last), alone, batched, chunked and quantized."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specdec.runtime import batching, precision
from specdec.runtime.batching import BatchScheduler, Job
from specdec.runtime.cached_lm import CachedLM, Step, StepOutput
from specdec.runtime.features import FeatureRows, decode_features, encode_features
from specdec.runtime.slot_lm import SlotLM
from specdec.v1 import common_pb2

VOCAB, HIDDEN = 40, 32


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def hidden_states(model: torch.nn.Module, token_ids: list[int]) -> torch.Tensor:
    """[len, H]: the features of every position, as the model itself reports them."""
    with torch.inference_mode():
        output = model(input_ids=torch.tensor([token_ids]), output_hidden_states=True)
    return output.hidden_states[-1][0]


def assert_features(got: torch.Tensor | None, model: torch.nn.Module, token_ids: list[int], first: int) -> None:
    """`got` holds the features of positions first..len-1 (float16's tolerance)."""
    want = hidden_states(model, token_ids)[first:]
    assert got is not None and got.dtype == torch.float16 and got.shape == want.shape
    torch.testing.assert_close(got.float(), want.float(), atol=2e-3, rtol=2e-3)


def tokens(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_rows_round_trip_as_float16_bytes():
    rows = torch.randn(3, 5).to(torch.float16)
    message = encode_features(FeatureRows(7, rows))
    assert (message.offset, message.num_rows, message.width, len(message.data)) == (7, 3, 5, 30)
    decoded = decode_features(message)
    assert decoded.offset == 7 and decoded.end == 10 and torch.equal(decoded.rows, rows)
    assert decode_features(encode_features(FeatureRows(0, torch.zeros(0, 5)))).rows.shape == (0, 5)


@pytest.mark.parametrize("message, words", [
    (common_pb2.Features(num_rows=2, width=3, data=b"\0" * 10), "10 bytes of data for float16 \\[2, 3\\]"),
    (common_pb2.Features(num_rows=1, width=2, data=b"\0" * 5), "5 bytes"),
    (common_pb2.Features(offset=-1, num_rows=0, width=2), "none may be negative"),
    (common_pb2.Features(num_rows=-1, width=2), "none may be negative"),
])
def test_malformed_rows_raise_value_error(message, words):
    with pytest.raises(ValueError, match=words):
        decode_features(message)


@pytest.mark.parametrize("kind", ["slot", "cached"])
def test_features_are_the_last_hidden_states_alone_batched_and_after_rollback(model, kind):
    lm = SlotLM(model, 1 << 24, capacity=96) if kind == "slot" else CachedLM(model, 1 << 24)
    a, b = tokens(20, 1), tokens(9, 2)
    (first,) = lm.forward([Step("a", a, 1, num_features=20)])  # a prefill asking every position's
    assert_features(first.features, model, a, 0)
    assert first.logits.shape == (1, VOCAB)
    # A batch mixing steps with and without features; a's features reach back into its cache.
    with_features, without = lm.forward([Step("a", a + [3, 4], 3, num_features=6), Step("b", b, 2)])
    assert_features(with_features.features, model, a + [3, 4], 16)
    assert without.features is None and without.logits.shape == (2, VOCAB)
    rolled_back = a[:12] + [5]  # rejected drafts dropped, a correction in their place
    (again,) = lm.forward([Step("a", rolled_back, 1, num_features=2)])
    assert_features(again.features, model, rolled_back, 11)


def test_features_of_a_quantized_model_are_its_own_last_hidden_states(model):
    quantized = precision.apply(LlamaForCausalLM(model.config).eval(), precision.resolve("int8", model, "cpu"))
    lm = SlotLM(quantized, 1 << 24, capacity=96)
    token_ids = tokens(10, 3)
    (output,) = lm.forward([Step("a", token_ids, 1, num_features=4)])
    want = hidden_states(quantized, token_ids)[6:]
    torch.testing.assert_close(output.features.float(), want.float(), atol=5e-2, rtol=5e-2)  # bfloat16 activations


def test_a_chunked_prefill_returns_the_features_of_every_position(model, monkeypatch):
    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    prompt = tokens(90, 4)
    passes: list[list[Step]] = []

    def load() -> SlotLM:
        lm = SlotLM(model, 1 << 24, capacity=128)
        forward = lm.forward

        def recorded(steps: list[Step]) -> list[StepOutput]:
            passes.append(steps)
            return forward(steps)

        lm.forward = recorded
        return lm

    def job(token_ids: list[int], num_logits: int, num_features: int) -> Job[StepOutput]:
        return (yield Step("long", token_ids, num_logits, num_features))

    async def main() -> tuple[StepOutput, StepOutput]:
        scheduler = BatchScheduler(load)
        prefill, _ = await asyncio.wait_for(scheduler.run(job(prompt, 1, len(prompt))), 60)
        # The cache holds the prompt now; features from position 0 again mean computing it all again.
        again, _ = await asyncio.wait_for(scheduler.run(job(prompt + [1, 2], 3, len(prompt) + 2)), 60)
        return prefill, again

    prefill, again = asyncio.run(main())
    assert_features(prefill.features, model, prompt, 0)
    assert_features(again.features, model, prompt + [1, 2], 0)
    chunks = [len(steps[0].token_ids) for steps in passes]
    assert chunks == [16, 32, 48, 64, 90, 16, 32, 48, 64, 92]  # chunks, then the step's own rest, twice
