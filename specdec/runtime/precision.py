"""The precision a model is served at: the dtype its activations run in and how its weights are stored.

A decode step reads every weight once per token, so on a CPU its cost is the bytes of weights read and
the kernel reading them. Besides the three float dtypes, two weight-only quantized settings store the
linear layers' weights as int8 (one scale per output channel) or int4 (a scale and a zero per group of
32 inputs, the output layer kept at int8 as llama.cpp's Q4 files keep it at 8 bits) and run them
through the CPU kernels torch itself ships (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`, the
ones gpt-fast and torchao call). Those kernels are fast for bfloat16 inputs only, so under int8 and
int4 the activations, embeddings and KV cache are bfloat16; and they are fast for few rows only, so
prefills and wide batches multiply by a bfloat16 copy of the same quantized weights (WIDE_ROWS). A
decode step reads the small weights; the copy costs memory (2 bytes per weight), not decode speed.

`auto` picks, for the device, the fastest setting whose quality cost is small (README, "Precision",
has the measurements): on CUDA bfloat16, or float16 where the GPU lacks bfloat16; on a CPU int4 when
the weights already sit on a 4-bit grid of 32-input groups (a Q4_0/Q4_1 GGUF, like the default
model: int4 then stores the very same weights), else int8 when its kernel beats float32 on this CPU
(timed at load on one of the model's layers), else float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from specdec.runtime.precision_names import CHOICES, QUANTIZED

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INT4_GROUP = 32  # inputs per scale/zero pair: Q4_0/Q4_1's block, so a GGUF's 4-bit grid fits exactly
# From this many rows on (prefills, wide batches) a pass multiplies by a bfloat16 copy of the quantized
# weights instead: the weight-only kernels are built for few rows, and on the dev VM's CPU a 256-token
# prefill of the default target took 364 ms through them against 112 ms as bfloat16 (AMX).
WIDE_ROWS = 16
_ACTIVATIONS = torch.bfloat16  # the only input dtype the CPU weight-only kernels are fast for
_DESCRIPTIONS = {
    "float32": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
    "int8": "int8 weights (per output channel), bfloat16 activations",
    "int4": "int4 weights (groups of 32; output layer int8), bfloat16 activations",
}


@dataclass(frozen=True)
class Precision:
    name: str  # one of CHOICES but auto
    reason: str = ""  # why auto picked it ("" when named)

    @property
    def dtype(self) -> torch.dtype:
        """What activations, the KV cache and the weights left unquantized are held in."""
        return FLOAT_DTYPES.get(self.name, _ACTIVATIONS)

    def describe(self) -> str:
        """What ModelInfo and the start-up log say."""
        return _DESCRIPTIONS[self.name] + (f" (auto: {self.reason})" if self.reason else "")


FLOAT32 = Precision("float32")


def resolve(name: str, model: nn.Module, device: str) -> Precision:
    """The Precision `name` (one of CHOICES) means for this float32 model on this device."""
    kind = torch.device(device).type
    if name not in CHOICES:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(CHOICES)}")
    if name in QUANTIZED and kind != "cpu":
        raise ValueError(f"{name} weights run on CPU kernels only; on {device} use bfloat16 or float16")
    if name != "auto":
        return Precision(name)
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bfloat16", "a GPU with bfloat16")
        return Precision("float16", "a GPU without bfloat16")
    if kind != "cpu":
        return Precision("float32", f"no faster setting measured on {kind}")
    linears = [m for m in _decoder_linears(model) if Int4WeightLinear.fits(m)]
    if linears and all(on_4bit_grid(linear.weight) for linear in linears):
        return Precision("int4", "the weights are already 4-bit, so int4 keeps them as they are")
    if _int8_is_faster(model):
        return Precision("int8", "int8 weights run faster than float32 on this CPU")
    return Precision("float32", "int8 weights are no faster than float32 on this CPU")


def apply(model: nn.Module, precision: Precision) -> nn.Module:
    """The model, converted in place to `precision`."""
    model.to(precision.dtype)
    if precision.name not in QUANTIZED:
        return model
    output_layer = _output_linear(model)
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if type(child) is not nn.Linear:
                continue
            # The output layer keeps 8 bits under int4: its error shows most directly in the logits.
            if precision.name == "int4" and child is not output_layer and Int4WeightLinear.fits(child):
                setattr(parent, child_name, Int4WeightLinear(child))
            else:
                setattr(parent, child_name, Int8WeightLinear(child))
    return model


class _WeightOnlyLinear(nn.Module):
    """y = x W^T + b through a weight-only kernel (`_narrow`) for few rows, else through `wide_weight`,
    a bfloat16 copy of the same quantized values (WIDE_ROWS)."""

    in_features: int
    wide_weight: torch.Tensor
    bias: nn.Parameter | None

    def _narrow(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(_ACTIVATIONS)  # [rows, K]
        out = F.linear(rows, self.wide_weight) if rows.shape[0] >= WIDE_ROWS else self._narrow(rows)  # [rows, N]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


class Int8WeightLinear(_WeightOnlyLinear):
    """W stored as int8 rows times one scale per output channel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        # [N], rounded to what the kernel takes before the codes are chosen against it
        scale = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).to(_ACTIVATIONS)
        codes = torch.round(weight / scale.float()[:, None]).clamp(-128, 127)
        self.register_buffer("weight_int8", codes.to(torch.int8))  # [N, K]
        self.register_buffer("scale", scale)
        self.register_buffer("wide_weight", (codes * scale.float()[:, None]).to(_ACTIVATIONS))  # see WIDE_ROWS
        self.bias = _bias(linear)

    def _narrow(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(rows, self.weight_int8, self.scale)


class Int4WeightLinear(_WeightOnlyLinear):
    """W stored as 4-bit codes q: per group of 32 inputs, w = (q - 8) * scale + zero."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        codes, scale, low = _int4_grid(linear.weight)  # [N, K], [N, K / 32, 1] twice
        zero = low + 8 * scale  # the kernel centres the codes on 8
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            codes.reshape(self.out_features, self.in_features).to(torch.int32), 2))
        scales_and_zeros = torch.cat([scale, zero], dim=-1).transpose(0, 1)  # [K / 32, N, 2]
        self.register_buffer("scales_and_zeros", scales_and_zeros.contiguous().to(_ACTIVATIONS))
        scale, zero = (t.to(_ACTIVATIONS).float() for t in (scale, zero))  # as the kernel holds them
        wide = (codes - 8) * scale + zero  # [N, K / 32, 32]: see WIDE_ROWS
        self.register_buffer("wide_weight", wide.reshape(self.out_features, self.in_features).to(_ACTIVATIONS))
        self.bias = _bias(linear)

    @staticmethod
    def fits(linear: nn.Linear) -> bool:
        return linear.in_features % INT4_GROUP == 0 and linear.out_features % 16 == 0

    def _narrow(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.weight_int4, INT4_GROUP, self.scales_and_zeros)


def on_4bit_grid(weight: torch.Tensor) -> bool:
    """Whether (nearly) every weight is one of its 32-input group's 16 evenly spaced levels from min to max."""
    codes, scale, low = _int4_grid(weight)
    groups = weight.detach().float().reshape(codes.shape)
    off_grid = (groups - (low + codes * scale)).abs() > 0.01 * scale
    return float(off_grid.float().mean()) < 0.01  # a group that never uses code 0 or 15 may sit off


def _int4_grid(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit codes per group of 32 inputs: a group's min is code 0 and its max code 15."""
    n, k = weight.shape
    groups = weight.detach().float().reshape(n, k // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-12)
    codes = torch.round((groups - low) / scale).clamp(0, 15)
    return codes, scale, low


def _bias(linear: nn.Linear) -> nn.Parameter | None:
    return None if linear.bias is None else nn.Parameter(linear.bias.detach().to(_ACTIVATIONS), requires_grad=False)


def _output_linear(model: nn.Module) -> nn.Module:
    """The linear the logits come from (inside a vocabulary slice, when the output layer is one)."""
    output_layer = model.get_output_embeddings()
    return getattr(output_layer, "sliced", output_layer)


def _decoder_linears(model: nn.Module) -> list[nn.Linear]:
    output_layer = _output_linear(model)
    return [m for m in model.modules() if type(m) is nn.Linear and m is not output_layer]


def _int8_is_faster(model: nn.Module) -> bool:
    """Whether this CPU runs the model's widest decoder linear, one row at a time, faster as int8 than float32."""
    linears = _decoder_linears(model)
    if not linears:
        return False
    widest = max(linears, key=lambda linear: linear.weight.numel())
    x = torch.randn(1, widest.in_features)
    weight, int8 = widest.weight.detach().float(), Int8WeightLinear(widest)
    with torch.inference_mode():
        return _best_seconds(int8, x) < 0.8 * _best_seconds(lambda rows: rows @ weight.T, x)


def _best_seconds(fn, x: torch.Tensor, repeats: int = 20) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - started)
    return best
