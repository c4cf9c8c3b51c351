"""A causal LM over a slot KV cache: many sessions' steps in one forward pass.

Per layer one preallocated `[slots, kv_heads, capacity, head_dim]` pair of key/value tensors; a
session owns a slot and the tokens whose keys/values it holds. Like CachedLM (the per-session
path it replaces where the architecture allows), every step carries the full token sequence: the
longest common prefix with the slot's tokens is reused and the rest is overwritten in place, so
rolling back rejected drafts costs nothing. An unknown or evicted session is recomputed.

A batch is one padded forward: row b holds session b's new tokens at positions reuse_b.., padded on
the right to the longest row, with per-row position ids and a per-row causal mask over the slots'
keys. Padding writes land past the row's valid length (the `_PAD_SLACK` tokens past capacity keep
them inside the tensor) and are never attended to: a slot's position becomes valid only when a real
token writes it. Attention reads a view of the batch's slots when they are contiguous (slots are
handed out lowest first, so a steady set of sessions is), else one gather.
"""

from __future__ import annotations

import inspect

import torch
from transformers import Cache, DynamicCache, PreTrainedModel

from specdec.runtime.cached_lm import CachedLM, Step, StepOutput, common_prefix_len
from specdec.runtime.features import feature_tap
from specdec.runtime.slots import SlotSession, SlotSessions

MAX_BATCH_NEW_TOKENS = 32  # a batched row's new tokens (a decode or verify step); longer steps run alone
_PAD_SLACK = MAX_BATCH_NEW_TOKENS
_ZERO_BLOCK = 256  # tokens of a slot zeroed at a time, ahead of its first use


class _BatchCache(Cache):
    """The slot tensors as one forward sees them: writes go to each row's slot, reads return the
    batch's slots up to the longest row."""

    def __init__(self, lm: SlotLM, slots: torch.Tensor, write_positions: torch.Tensor, kv_length: int) -> None:
        super().__init__(layers=[])
        self._lm, self._slots, self._write_positions, self._kv_length = lm, slots, write_positions, kv_length
        first, count = int(slots[0]), len(slots)
        self._contiguous = bool((slots == torch.arange(first, first + count, device=slots.device)).all())
        self._range = slice(first, first + count)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self._lm.keys[layer_idx], self._lm.values[layer_idx]  # [slots, H, capacity + slack, D]
        index = (self._slots[:, None], slice(None), self._write_positions)  # -> [B, S, H, D]
        keys[index] = key_states.transpose(1, 2)
        values[index] = value_states.transpose(1, 2)
        return self._read(keys), self._read(values)

    def _read(self, tensor: torch.Tensor) -> torch.Tensor:  # [B, H, kv_length, D]
        visible = tensor[:, :, : self._kv_length]
        return visible[self._range] if self._contiguous else visible[self._slots]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_length - self._write_positions.shape[1]


class SlotLM(SlotSessions[SlotSession]):
    def __init__(self, model: PreTrainedModel, cache_budget_bytes: int, capacity: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().out_features)
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._features = feature_tap(model)
        # The per-layer key/value shapes, as the model itself lays them out.
        with torch.inference_mode():
            probe = DynamicCache(config=model.config)
            model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=self.device), cache=probe, use_cache=True)
        layers = [(layer.keys.shape[1], layer.keys.shape[3], layer.values.shape[3]) for layer in probe.layers]
        dtype = probe.layers[0].keys.dtype
        bytes_per_token = sum(heads * (key_dim + value_dim) for heads, key_dim, value_dim in layers) * dtype.itemsize
        super().__init__(max(1, cache_budget_bytes // (bytes_per_token * (capacity + _PAD_SLACK))), capacity,
                         bytes_per_token * capacity)
        # Allocated empty, so memory is committed as slots fill, and zeroed ahead of use in blocks:
        # a masked position still multiplies its zero attention weight by its value, so it must be
        # finite. _zeroed[slot] is how far that slot is.
        self._length = capacity + _PAD_SLACK
        self.keys = [torch.empty(self.num_slots, h, self._length, d, dtype=dtype, device=self.device) for h, d, _ in layers]
        self.values = [torch.empty(self.num_slots, h, self._length, d, dtype=dtype, device=self.device) for h, _, d in layers]
        self._zeroed = [0] * self.num_slots

    @torch.inference_mode()
    def forward(self, steps: list[Step]) -> list[StepOutput]:
        """Each step's [num_logits, V] float32 logits and [num_features, H] float16 features, from one
        forward pass over all of them.

        At most one step per session and max_batch_rows steps; a step with more than
        MAX_BATCH_NEW_TOKENS uncached tokens must come alone.
        """
        if too_long := [step for step in steps if len(step.token_ids) > self.capacity]:
            raise ValueError(f"{len(too_long[0].token_ids)} tokens exceed the slot capacity of {self.capacity}")
        claimed = [self._claim(step.session_id, steps).slot for step in steps]
        order = sorted(range(len(steps)), key=claimed.__getitem__)  # ascending slots: a view when contiguous
        rows = [steps[i] for i in order]
        sessions = [self._sessions[step.session_id] for step in rows]
        # Positions whose logits or features we return must be computed now, so reuse stops short of them.
        reuse = [
            min(common_prefix_len(session.token_ids, step.token_ids), len(step.token_ids) - step.num_computed)
            for session, step in zip(sessions, rows)
        ]
        new = [len(step.token_ids) - r for step, r in zip(rows, reuse)]
        width = max(new)
        if len(rows) > 1 and width > MAX_BATCH_NEW_TOKENS:  # the padding must fit in the slack
            raise ValueError(f"a step of {width} new tokens must run alone")
        for session, r in zip(sessions, reuse):  # what the slot holds while the pass overwrites the rest
            del session.token_ids[r:]
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        for b, (step, r) in enumerate(zip(rows, reuse)):
            input_ids[b, : new[b]] = torch.tensor(step.token_ids[r:], dtype=torch.long)
        write_positions = torch.tensor(reuse)[:, None] + torch.arange(width)  # [B, S]
        kv_length = int(write_positions.max()) + 1
        for session in sessions:
            self._zero_ahead(session.slot, kv_length)
        slots = torch.tensor([session.slot for session in sessions], device=self.device)
        cache = _BatchCache(self, slots, write_positions.to(self.device), kv_length)

        # Logits are needed at positions [new_b - num_logits_b, new_b) of each row: keep their union.
        wanted = [(n - step.num_logits, n) for n, step in zip(new, rows)]
        first_wanted = min((lo for lo, hi in wanted if hi > lo), default=width - 1)
        keep = {"logits_to_keep": width - first_wanted} if self._keeps_logits else {}
        # One row of one token sees every key it reads: no mask lets attention take its fastest path.
        mask = None
        if write_positions.numel() > 1:
            mask = _causal_mask(write_positions, kv_length, self.keys[0].dtype).to(self.device)
        output = self.model(
            input_ids=input_ids.to(self.device), attention_mask=mask,
            # Clamped for padding only (learned position tables end at the model's context).
            position_ids=write_positions.clamp(max=self.capacity - 1).to(self.device),
            cache=cache, use_cache=True, **keep,
        )
        for session, step in zip(sessions, rows):
            session.token_ids = list(step.token_ids)
        offset = output.logits.shape[1] - width  # negative when the model kept only the tail
        # The decoder's output covers every position of the pass, the LM head's only the kept tail.
        hidden = self._features.take() if any(step.num_features for step in rows) else None  # [B, width, H]
        results: list[StepOutput] = [StepOutput(torch.empty(0))] * len(steps)
        for b, (i, (lo, hi), step) in enumerate(zip(order, wanted, rows)):
            features = hidden[b, hi - step.num_features: hi].to(torch.float16) if step.num_features else None
            results[i] = StepOutput(output.logits[b, lo + offset: hi + offset].float(), features)
        return results

    def logits(self, session_id: str, token_ids: list[int], num_logits: int) -> torch.Tensor:
        return self.forward([Step(session_id, token_ids, num_logits)])[0].logits

    def _zero_ahead(self, slot: int, length: int) -> None:
        start = self._zeroed[slot]
        if start >= length:
            return
        end = min(self._length, -(-length // _ZERO_BLOCK) * _ZERO_BLOCK)
        for tensor in (*self.keys, *self.values):
            tensor[slot, :, start:end].zero_()
        self._zeroed[slot] = end

    def _new_session(self, slot: int) -> SlotSession:
        return SlotSession(slot, [])


def _causal_mask(write_positions: torch.Tensor, kv_length: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, S, kv_length] additive: row b's query at position p sees its slot's keys 0..p."""
    allowed = torch.arange(kv_length)[None, None, :] <= write_positions[:, :, None]
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def agrees_with_reference(lm: SlotLM, tolerance: float = 1e-3) -> bool:
    """Whether batched passes over lm's slots give a per-session DynamicCache's logits: checked once at
    load, so an architecture whose attention or cache works otherwise falls back instead of being wrong."""
    reference = CachedLM(lm.model, cache_budget_bytes=1 << 40)
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(0, lm.vocab_size, (n,), generator=generator).tolist() for n in (7, 4))
    steps = [
        [Step("a", first[:5], 1)],
        [Step("b", second[:3], 2)],
        [Step("a", first, 3), Step("b", second, 1)],  # a batch of different lengths and widths
        [Step("a", first[:6] + second[:1], 2), Step("b", second[:2], 1)],  # rollback in both
    ]
    try:
        for batch in steps:
            for step, got in zip(batch, lm.forward(batch)):
                want = reference.logits(step.session_id, step.token_ids, step.num_logits)
                if not torch.allclose(got.logits, want, atol=tolerance, rtol=tolerance):
                    return False
    finally:
        for session_id in ("a", "b"):
            lm.end_session(session_id)
    return True
