"""An EAGLE-style draft head: one decoder layer that drafts from the target's own features.

Li et al. 2024, "EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty". At sequence
position i the head reads the target's feature f_{i-1} (the input of the target's LM head at i-1,
which the target service sends) and the embedding of token x_i, and predicts g_i, the target's
feature at i; the target's own LM head turns g_i into the distribution of x_{i+1}. Drafting the
next token feeds g_i back in place of the feature the target has not computed yet.

Shapes: d = the target's hidden size, N = the vocabulary slice, H / Hkv = attention / key-value
heads, D = head width. The head reuses the target's embeddings and a frequency-ranked slice of
its output layer (FR-Spec, Zhao et al. 2025): N rows of the target's most frequent output tokens,
so the head's q is zero elsewhere (the accept rule is exact for any q it samples from). Both are
frozen and come from the target at load time; the artefact holds the head's own weights and the
slice's token ids.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE, WEIGHTS_FILE = "eagle_config.json", "eagle_head.safetensors"


@dataclass(frozen=True)
class EagleConfig:
    target: str  # the target the head was trained on, as `specdec serve --model` names it
    hidden_size: int  # d, the target's feature width
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int  # the target's full vocabulary (q's width)
    slice_size: int  # N
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    @classmethod
    def for_target(cls, target_spec: str, target, slice_size: int) -> EagleConfig:
        """The head shaped like one of the target's own decoder layers."""
        text = target.config.get_text_config()
        heads = text.num_attention_heads
        rope = getattr(text, "rope_parameters", None) or {}
        return cls(
            target=target_spec, hidden_size=text.hidden_size, num_heads=heads,
            num_kv_heads=getattr(text, "num_key_value_heads", heads),
            head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
            intermediate_size=text.intermediate_size, vocab_size=int(target.get_output_embeddings().out_features),
            slice_size=min(slice_size, int(target.get_output_embeddings().out_features)),
            rope_theta=float(rope.get("rope_theta", getattr(text, "rope_theta", 10000.0))),
            rms_norm_eps=float(getattr(text, "rms_norm_eps", 1e-5)),
        )


class EagleHead(nn.Module):
    def __init__(self, config: EagleConfig) -> None:
        super().__init__()
        self.config = config
        d, heads, kv_heads, dim = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        eps = config.rms_norm_eps
        self.feature_norm, self.embed_norm = nn.RMSNorm(d, eps=eps), nn.RMSNorm(d, eps=eps)
        self.fc = nn.Linear(2 * d, d, bias=False)  # [f ; e] -> the layer's input
        self.attn_norm = nn.RMSNorm(d, eps=eps)
        self.q_proj = nn.Linear(d, heads * dim, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * dim, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * dim, bias=False)
        self.o_proj = nn.Linear(heads * dim, d, bias=False)
        self.mlp_norm = nn.RMSNorm(d, eps=eps)
        self.gate_proj = nn.Linear(d, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(d, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, d, bias=False)
        self.out_norm = nn.RMSNorm(d, eps=eps)  # g lives where the target's features do: after its final norm
        # The slice's token ids travel with the head; the frozen tables below come from the target.
        self.register_buffer("slice_ids", torch.zeros(config.slice_size, dtype=torch.long))
        self.register_buffer("embed", torch.zeros(0, d), persistent=False)  # [V, d]
        self.register_buffer("lm_head", torch.zeros(0, d), persistent=False)  # [N, d]
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def attach_target(self, target) -> None:
        """Takes the frozen embedding table and output-layer slice from the target model."""
        embed = target.get_input_embeddings().weight.detach().float()
        out = target.get_output_embeddings().weight.detach().float()
        self.embed = embed.to(self.slice_ids.device)
        self.lm_head = out[self.slice_ids.cpu()].to(self.slice_ids.device).contiguous()

    # The layer, in three parts so training (whole sequences, two unrolled steps) and serving (a KV
    # cache) share every weight-touching line.

    def project(self, features: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """[..., d] f_{i-1} and [...] x_i -> [..., d] the layer's input at position i."""
        e = F.embedding(token_ids, self.embed)
        return self.fc(torch.cat([self.feature_norm(features), self.embed_norm(e)], dim=-1))

    def qkv(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, S, d] inputs at [B, S] positions -> q [B, H, S, D], k and v [B, Hkv, S, D] (RoPE applied)."""
        c = self.config
        h = self.attn_norm(x)
        batch, seq = x.shape[:2]
        q = self.q_proj(h).view(batch, seq, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(batch, seq, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(batch, seq, c.num_kv_heads, c.head_dim).transpose(1, 2)
        angles = positions.float()[:, None, :, None] * self.inv_freq  # [B, 1, S, D/2]
        angles = torch.cat([angles, angles], -1)  # [B, 1, S, D]
        cos, sin = angles.cos(), angles.sin()
        return _rotate(q, cos, sin), _rotate(k, cos, sin), v

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """[B, S, d] inputs and [B, H, S, D] attention outputs -> [B, S, d] g."""
        batch, seq = x.shape[:2]
        x = x + self.o_proj(attended.transpose(1, 2).reshape(batch, seq, -1))
        h = self.mlp_norm(x)
        x = x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
        return self.out_norm(x)

    def logits(self, g: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., N] logits over the slice."""
        return g @ self.lm_head.T

    def full_logits(self, g: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., V] logits over the whole vocabulary, -inf outside the slice."""
        sliced = self.logits(g).float()
        out = sliced.new_full((*sliced.shape[:-1], self.config.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.slice_ids, sliced)

    def unrolled(
        self, features: torch.Tensor, token_ids: torch.Tensor, steps: int = 2
    ) -> list[torch.Tensor]:
        """Training and teacher-forced evaluation over whole sequences: [B, S, d] f_{i-1} (zeros at i = 0)
        and [B, S] x_i -> one [B, S, d] g per unrolled step.

        Step 1 reads the target's features. Step s > 1 reads the previous step's g_{i-1} in place of
        f_{i-1}, as drafting the s-th token does, and attends to step 1's keys before i (the cache then
        holds entries computed from true features) and to its own entries from step 2 on (the drafted
        tokens ahead of it): "training-time test", so the head learns to draft from its own output.
        """
        batch, seq = token_ids.shape
        positions = torch.arange(seq, device=token_ids.device).expand(batch, seq)
        x = self.project(features, token_ids)
        q, k, v = self.qkv(x, positions)
        g = self.finish(x, F.scaled_dot_product_attention(q, *_expand(k, v, q), is_causal=True))
        outputs, keys, values = [g], [k], [v]
        for step in range(1, steps):
            # Position i of step s+1 drafts after position i-1's guess of step s.
            prev = torch.cat([torch.zeros_like(g[:, :1]), g[:, :-1]], dim=1)
            x = self.project(prev, token_ids)
            q, k, v = self.qkv(x, positions)
            keys.append(k)
            values.append(v)
            g = self.finish(x, _unrolled_attention(q, keys, values, step))
            outputs.append(g)
        return outputs


def _unrolled_attention(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], step: int) -> torch.Tensor:
    """Step `step`'s queries at position i see step 0's keys at positions j < i - step + 1 and step t's
    key at position i - step + t for t = 1..step (the drafted chain): [B, H, S, D]."""
    seq = q.shape[2]
    scale = q.shape[-1] ** -0.5
    k0, v0 = _expand(keys[0], values[0], q)
    scores = [(q @ k0.transpose(-1, -2)) * scale]  # [B, H, S, S]
    j, i = torch.arange(seq)[None, :], torch.arange(seq)[:, None]
    scores[0] = scores[0].masked_fill((j > i - step).to(q.device), float("-inf"))
    chain = []
    for t in range(1, step + 1):  # the drafted entries: their key sits t positions after the true prefix
        kt, vt = _expand(keys[t], values[t], q)
        shift = step - t  # query i pairs with key i - shift of step t
        kt = torch.cat([torch.zeros_like(kt[:, :, :shift]), kt[:, :, : seq - shift]], dim=2) if shift else kt
        vt = torch.cat([torch.zeros_like(vt[:, :, :shift]), vt[:, :, : seq - shift]], dim=2) if shift else vt
        s = (q * kt).sum(-1, keepdim=True) * scale  # [B, H, S, 1]
        valid = (torch.arange(seq) >= shift).to(q.device)[None, None, :, None]
        chain.append((s.masked_fill(~valid, float("-inf")), vt))
    weights = torch.softmax(torch.cat([scores[0], *(s for s, _ in chain)], dim=-1), dim=-1)
    out = weights[..., :seq] @ v0
    for t, (_, vt) in enumerate(chain):
        out = out + weights[..., seq + t : seq + t + 1] * vt
    return out


def _expand(k: torch.Tensor, v: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query attention: repeat the key/value heads to the query heads."""
    groups = q.shape[1] // k.shape[1]
    return k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def save_head(head: EagleHead, out: Path, dtype: torch.dtype = torch.float16) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(head.config), indent=2))
    tensors = {name: t.detach().to(dtype) if t.is_floating_point() else t.detach()
               for name, t in head.state_dict().items()}
    save_file({name: t.contiguous().cpu() for name, t in tensors.items()}, str(out / WEIGHTS_FILE))


def is_eagle_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def eagle_dir(spec: str) -> Path | None:
    """The head's directory when a model name (`specdec serve --model`) names an EAGLE head, else None."""
    from specdec.runtime.models import ModelSource

    path = Path(ModelSource.resolve(spec).path_or_id).expanduser()
    return path if is_eagle_dir(path) else None


def slice_of(spec: str) -> torch.Tensor:
    """The FR-Spec slice's token ids of the EAGLE head `spec` names (for a plain LM draft too)."""
    path = eagle_dir(spec)
    if path is None:
        raise ValueError(f"--vocab-slice names an EAGLE head (e.g. default-eagle), whose slice it takes; {spec!r} is not one")
    return load_file(str(path / WEIGHTS_FILE))["slice_ids"]


def load_eagle(path: Path, device: str, trust_remote_code: bool = False) -> tuple[EagleHead, int]:
    """The head on `device` with its target's tables, and the target's context length. The target is loaded
    for its embeddings and output-layer slice only, and let go."""
    from specdec.runtime.models import load_model, max_context

    head = load_head(path)
    target = load_model(head.config.target, "float32", "cpu", trust_remote_code)
    head.attach_target(target)
    return head.to(device), max_context(target)


def load_head(path: Path) -> EagleHead:
    """The head in float32, without the target's tables (attach_target adds them)."""
    config = EagleConfig(**json.loads((path / CONFIG_FILE).read_text()))
    head = EagleHead(config)
    state = {name: t.float() if t.is_floating_point() else t for name, t in load_file(str(path / WEIGHTS_FILE)).items()}
    head.load_state_dict(state)
    return head.eval()
