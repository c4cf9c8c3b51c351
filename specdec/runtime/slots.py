"""The session bookkeeping of a preallocated slot cache, shared by SlotLM (a causal LM's layers) and
EagleLM (the draft head's one layer): a session owns a slot and the tokens whose keys/values it holds;
the lowest free slot is handed out first (a steady set of sessions gets contiguous slots), and a new
session evicts the least recently used one outside the batch."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from specdec.runtime.cached_lm import Step, common_prefix_len


@dataclass
class SlotSession:
    slot: int
    token_ids: list[int]  # the tokens whose keys/values the slot holds, in order


S = TypeVar("S", bound=SlotSession)


class SlotSessions(Generic[S]):
    def __init__(self, num_slots: int, capacity: int, bytes_per_slot: int) -> None:
        self.num_slots, self.capacity, self.bytes_per_slot = num_slots, capacity, bytes_per_slot
        self._sessions: OrderedDict[str, S] = OrderedDict()  # least recently used first
        self._free = list(range(num_slots))  # a heap

    @property
    def max_batch_rows(self) -> int:
        return self.num_slots

    def uncached_len(self, session_id: str, token_ids: list[int]) -> int:
        session = self._sessions.get(session_id)
        return len(token_ids) - (common_prefix_len(session.token_ids, token_ids) if session is not None else 0)

    def end_session(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            heapq.heappush(self._free, session.slot)

    @property
    def cached_bytes(self) -> int:
        return len(self._sessions) * self.bytes_per_slot

    @property
    def cache_usage(self) -> float:
        """Fraction of the slots' token capacity holding keys/values: what gateways route on."""
        held = sum(len(session.token_ids) for session in list(self._sessions.values()))
        return held / (self.num_slots * self.capacity)

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    def _new_session(self, slot: int) -> S:
        raise NotImplementedError

    def _claim(self, session_id: str, batch: list[Step]) -> S:
        """The session's slot, marked most recently used; a new session takes a free slot or evicts
        the least recently used session outside this batch."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            if not self._free:
                in_batch = {step.session_id for step in batch}
                self.end_session(next(s for s in self._sessions if s not in in_batch))
            session = self._new_session(heapq.heappop(self._free))
        self._sessions[session_id] = session
        return session
