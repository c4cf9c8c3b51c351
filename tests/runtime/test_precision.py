"""Precision settings: the quantized layers compute with the weights they store, apply() converts every
layer it should, and auto picks by what the weights and the device are."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from specdec.runtime import precision
from specdec.runtime.precision import INT4_GROUP, Int4WeightLinear, Int8WeightLinear, Precision
from specdec.runtime.slot_lm import SlotLM, agrees_with_reference
from tests.tiny_models import char_tokenizer, save_tiny_lm


def _linear(n: int, k: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(k, n, bias=True)
    nn.init.normal_(linear.weight, std=0.05)
    return linear


def _on_4bit_grid(linear: nn.Linear) -> nn.Linear:
    """The linear's weights snapped to a 4-bit grid of 32-input groups, as a Q4_1 GGUF dequantizes."""
    n, k = linear.weight.shape
    groups = linear.weight.detach().reshape(n, k // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = (high - low) / 15
    with torch.no_grad():
        linear.weight.copy_((low + torch.round((groups - low) / scale) * scale).reshape(n, k))
    return linear


def test_int8_linear_computes_with_its_stored_weights():
    linear = _linear(48, 64)
    quantized = Int8WeightLinear(linear)
    x = torch.randn(3, 5, 64)
    stored = quantized.weight_int8.float() * quantized.scale.float()[:, None]  # what it holds, dequantized
    reference = x.bfloat16().float() @ stored.T + linear.bias.detach()
    assert torch.allclose(quantized(x).float(), reference, atol=0.02, rtol=0.02)
    # Per-channel int8 keeps the weights within half a step of the originals.
    assert (stored - linear.weight).abs().max() <= quantized.scale.float().max() * 0.51


def test_int4_linear_keeps_weights_already_on_a_4bit_grid():
    linear = _on_4bit_grid(_linear(32, 64))
    quantized = Int4WeightLinear(linear)
    x = torch.randn(4, 64)
    reference = x.bfloat16().float() @ linear.weight.detach().T + linear.bias.detach()
    # bfloat16 activations and scales are the only rounding left.
    assert torch.allclose(quantized(x).float(), reference, atol=0.03, rtol=0.03)
    assert precision.on_4bit_grid(linear.weight)
    assert not precision.on_4bit_grid(_linear(32, 64).weight)  # ordinary float weights are not


def test_int4_linear_approximates_ordinary_weights():
    linear = _linear(32, 96)
    x = torch.randn(2, 96)
    exact = x @ linear.weight.detach().T + linear.bias.detach()
    error = (Int4WeightLinear(linear)(x).float() - exact).abs().mean() / exact.abs().mean()
    assert 0.005 < error < 0.2  # a 4-bit grid's error: visible, and bounded


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """Wide enough (32) for int4's groups of 32 inputs."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-32"), char_tokenizer("abcdefg"), seed=3, hidden=32)


def _load(path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_apply_quantizes_every_linear_and_keeps_the_output_layer_at_8_bits(tiny_model_dir, name):
    model = precision.apply(_load(tiny_model_dir), Precision(name))
    decoder = Int4WeightLinear if name == "int4" else Int8WeightLinear
    assert type(model.get_output_embeddings()) is Int8WeightLinear
    layer = model.model.layers[0]
    assert all(type(m) is decoder for m in (layer.self_attn.q_proj, layer.mlp.down_proj))
    assert not [m for m in model.modules() if type(m) is nn.Linear]
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", "int8", "int4"])
def test_every_precision_runs_the_slot_cache(tiny_model_dir, name):
    """Batched passes over the slot cache give the per-session cache's logits at every precision."""
    model = precision.apply(_load(tiny_model_dir), Precision(name))
    lm = SlotLM(model, 1 << 20, capacity=64)
    assert lm.keys[0].dtype == Precision(name).dtype
    assert agrees_with_reference(lm, tolerance=max(1e-3, 10 * torch.finfo(lm.keys[0].dtype).eps))


def test_auto_picks_int4_for_4bit_weights_and_never_int4_for_float_weights(tiny_model_dir):
    model = _load(tiny_model_dir)
    assert precision.resolve("auto", model, "cpu").name in ("int8", "float32")  # by timing this CPU
    for module in model.modules():
        if type(module) is nn.Linear and module is not model.get_output_embeddings():
            _on_4bit_grid(module)
    picked = precision.resolve("auto", model, "cpu")
    assert picked.name == "int4" and "4-bit" in picked.describe()


def test_named_precisions_are_taken_as_named_and_bad_ones_refused(tiny_model_dir):
    model = _load(tiny_model_dir)
    assert precision.resolve("bfloat16", model, "cpu") == Precision("bfloat16")
    with pytest.raises(ValueError, match="CPU kernels only"):
        precision.resolve("int8", model, "cuda")
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        precision.resolve("int3", model, "cpu")


@pytest.mark.parametrize("quantized", [Int8WeightLinear, Int4WeightLinear])
def test_wide_passes_multiply_by_the_same_quantized_weights(quantized):
    """From WIDE_ROWS rows on, the bfloat16 copy: the same weights, to bfloat16's rounding."""
    layer = quantized(_linear(32, 64))
    x = torch.randn(precision.WIDE_ROWS + 4, 64)
    one_by_one = torch.cat([layer(row[None]) for row in x]).float()
    assert torch.allclose(layer(x).float(), one_by_one, atol=0.02, rtol=0.02)
