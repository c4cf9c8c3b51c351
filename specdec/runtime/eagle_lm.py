"""An EAGLE head behind a slot KV cache of its one layer: the draft service's feature drafter.

Like SlotLM, every step carries the session's full token sequence and a slot keeps the keys/values
of a prefix of it. What the head computed at a position depends on the feature it read there, so a
slot also knows how many of its positions read the target's true features (`true_len`); the rest
read the head's own guess g (drafted tokens) and are recomputed once the target's features for them
arrive. A step's input features are the target's (`Step.features`: rows from some offset up to the
sequence's second-to-last position) or, for the next drafted token, the g of the session's last
position. A session whose slot lacks what its features do not cover cannot be computed: its step
returns no rows and `features_needed_from` says where the caller must resend from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from specdec.runtime.cached_lm import Step, StepOutput, common_prefix_len
from specdec.runtime.eagle_head import EagleHead, _expand
from specdec.runtime.features import FeatureRows
from specdec.runtime.slots import SlotSession, SlotSessions


@dataclass
class _Session(SlotSession):
    true_len: int = 0  # positions [0, true_len) read the target's features
    last_g: torch.Tensor | None = None  # [d] the head's output at position len(token_ids) - 1


class EagleLM(SlotSessions[_Session]):
    needs_features = True  # ModelInfo.feature_size: what the orchestrator must ask the target for

    def __init__(self, head: EagleHead, cache_budget_bytes: int, capacity: int) -> None:
        self.model = head
        c = head.config
        self.vocab_size, self.feature_size = c.vocab_size, c.hidden_size
        self.device = head.slice_ids.device
        dtype = next(head.parameters()).dtype
        bytes_per_slot = 2 * c.num_kv_heads * capacity * c.head_dim * dtype.itemsize
        super().__init__(max(1, cache_budget_bytes // bytes_per_slot), capacity, bytes_per_slot)
        # Allocated empty (memory is committed as slots fill) and zeroed when a session takes a slot:
        # a masked key still multiplies its zero weight by its value, so values must be finite.
        shape = (self.num_slots, c.num_kv_heads, capacity, c.head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=self.device)
        self.values = torch.empty(shape, dtype=dtype, device=self.device)

    def features_needed_from(self, session_id: str, token_ids: list[int], features: FeatureRows | None) -> int | None:
        """None when a step can be computed; else the first position whose feature the caller must send."""
        session = self._sessions.get(session_id)
        reuse = self._reuse(session, token_ids, features)
        if reuse == 0 and len(token_ids) == 1:
            return None  # position 0 reads no feature
        first = max(reuse - 1, 0)  # position `reuse` reads the feature of reuse - 1
        if features is not None and features.offset <= first and features.end >= len(token_ids) - 1:
            return None
        speculative = session is not None and session.last_g is not None and reuse == len(session.token_ids)
        if speculative and reuse == len(token_ids) - 1 and features is None:
            return None  # the next drafted token, after the head's own guess
        return first

    @torch.inference_mode()
    def forward(self, steps: list[Step]) -> list[StepOutput]:
        """Each step's [1, V] logits over the full vocabulary (-inf outside the slice), or [0, V] for a
        step that lacks features (see features_needed_from). One pass for all of them."""
        if too_long := [step for step in steps if len(step.token_ids) > self.capacity]:
            raise ValueError(f"{len(too_long[0].token_ids)} tokens exceed the slot capacity of {self.capacity}")
        empty = StepOutput(torch.empty(0, self.vocab_size), None)
        results: list[StepOutput] = [empty] * len(steps)
        ready = [i for i, step in enumerate(steps)
                 if self.features_needed_from(step.session_id, step.token_ids, step.features) is None]
        if not ready:
            return results
        head, c = self.model, self.model.config
        sessions = [self._claim(steps[i].session_id, [steps[j] for j in ready]) for i in ready]
        reuse = [self._reuse(s, steps[i].token_ids, steps[i].features) for s, i in zip(sessions, ready)]
        new = [len(steps[i].token_ids) - r for i, r in zip(ready, reuse)]
        width = max(new)
        tokens = torch.zeros(len(ready), width, dtype=torch.long)
        inputs = torch.zeros(len(ready), width, c.hidden_size, device=self.device)
        true_new: list[int] = []  # per row: how many of its new positions read true features
        for b, (i, s, r) in enumerate(zip(ready, sessions, reuse)):
            step = steps[i]
            tokens[b, : new[b]] = torch.tensor(step.token_ids[r:])
            # Positions [r, top) read true features (position 0 reads zeros); features_needed_from checked
            # that the rows start early enough. What follows, at most one position, is the next drafted
            # token: it reads the head's own guess of the feature before it.
            first, end, top = max(r, 1), len(step.token_ids), max(r, 1)
            if (f := step.features) is not None:
                top = min(end, f.end + 1)
                inputs[b, first - r : top - r] = f.rows[first - 1 - f.offset : top - 1 - f.offset].float()
            if top < end:
                inputs[b, top - r : end - r] = s.last_g
            true_new.append(top - r)
        positions = torch.tensor(reuse)[:, None] + torch.arange(width)  # [B, W]
        valid = torch.arange(width)[None, :] < torch.tensor(new)[:, None]  # [B, W] real tokens, not padding
        x = head.project(inputs, tokens.to(self.device))
        q, k, v = head.qkv(x, positions.to(self.device))
        slots = torch.tensor([s.slot for s in sessions], device=self.device)
        rows, cols = valid.nonzero(as_tuple=True)
        # Only real tokens are written: padding never lands in a slot.
        self.keys[slots[rows], :, positions[rows, cols]] = k[rows, :, cols]
        self.values[slots[rows], :, positions[rows, cols]] = v[rows, :, cols]
        kv_length = int(positions[valid].max()) + 1
        keys, values = _expand(self.keys[slots, :, :kv_length], self.values[slots, :, :kv_length], q)
        allowed = torch.arange(kv_length)[None, None, :] <= positions[:, :, None]  # [B, W, kv]
        g = head.finish(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed[:, None].to(self.device)))
        last = g[torch.arange(len(ready)), torch.tensor(new) - 1]  # [B, d]
        logits = head.full_logits(last)  # [B, V]
        for b, (i, s, r) in enumerate(zip(ready, sessions, reuse)):
            step = steps[i]
            if r <= s.true_len:  # the true positions lead: the target's rows, then at most one guess
                s.true_len = r + true_new[b]
            s.token_ids, s.last_g = list(step.token_ids), last[b].clone()
            results[i] = StepOutput(logits[b : b + 1], None)
        return results

    def _reuse(self, session: _Session | None, token_ids: list[int], features: FeatureRows | None) -> int:
        """How many leading positions of the slot a step keeps: the common prefix, short of the position
        whose logits it returns, and short of the drafted positions when the target's features for them
        have come (they are recomputed from the true features)."""
        if session is None:
            return 0
        reuse = min(common_prefix_len(session.token_ids, token_ids), len(token_ids) - 1)
        if features is not None:
            reuse = min(reuse, session.true_len)
        return reuse

    def _new_session(self, slot: int) -> _Session:
        self.keys[slot].zero_()
        self.values[slot].zero_()
        return _Session(slot, [])
