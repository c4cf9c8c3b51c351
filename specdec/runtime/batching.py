"""Batches the model calls of all sessions into shared forward passes, off the event loop.

A job is a generator that yields the model steps it needs (a Step each) and receives each step's
logits: a verify is one step, a draft of k tokens is k steps with sampling in between. One thread
owns the model. Whenever the model is free, it takes the pending step of every job (one per
session) and runs them as one forward pass, so a lone stream never waits and a crowd shares each
pass; no timer holds a batch open. Each job drops out when it returns.

A step with more than MAX_BATCH_NEW_TOKENS uncached tokens (a prefill) is not padded into a batch
of decode steps: it runs alone, PREFILL_CHUNK tokens at a time, taking turns with the batches, so
a long prompt delays other streams by one chunk at a time, not by its whole prefill.

The event loop only queues jobs and receives results: health checks, cancellations and other
streams carry on while a batch computes. A cancelled job's steps are dropped at its next turn; a
forward already running finishes first, and the model is never used by two passes at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import torch

from specdec.runtime.cached_lm import Step
from specdec.runtime.slot_lm import MAX_BATCH_NEW_TOKENS

log = logging.getLogger("specdec")

T = TypeVar("T")
Job = Generator[Step, torch.Tensor, T]  # yields steps, is sent their logits, returns its result

PREFILL_CHUNK = 256  # tokens per pass of a prefill: long enough to run at full speed, short enough to share


class BatchedModel(Protocol):
    max_batch_rows: int

    def forward(self, steps: list[Step]) -> list[torch.Tensor]: ...

    def uncached_len(self, session_id: str, token_ids: list[int]) -> int: ...


@dataclass(eq=False)
class _Task(Generic[T]):
    job: Job[T]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    step: Step | None = None
    compute_seconds: float = 0.0
    done: bool = False


class BatchScheduler:
    def __init__(self, model: BatchedModel, on_batch: Callable[[int, float], None] | None = None) -> None:
        self._model = model
        self._on_batch = on_batch  # called (rows, seconds) after each pass, on the model thread
        self._inbox: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._tasks: list[_Task] = []
        self._prefill_turn = False
        self._thread = threading.Thread(target=self._serve, name="model", daemon=True)
        self._thread.start()

    async def run(self, job: Job[T]) -> tuple[T, float]:
        """The job's result and the compute seconds of the passes it took part in."""
        loop = asyncio.get_running_loop()
        task = _Task(job, loop.create_future(), loop)
        self._inbox.put(task)
        return await task.future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the model thread, between passes: for what else touches the cache."""

        def job() -> Job[T]:
            return fn(*args)
            yield  # makes this a generator: a job of no steps

        result, _ = await self.run(job())
        return result

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join()

    # Everything below runs on the model thread.

    def _serve(self) -> None:
        while True:
            if not self._tasks:
                task = self._inbox.get()  # idle: wait for work
                if task is None:
                    return
                self._start(task)
            while not self._inbox.empty():
                task = self._inbox.get()
                if task is None:
                    return
                self._start(task)
            self._tasks = [task for task in self._tasks if not self._dropped(task)]
            batch = self._next_batch()
            if batch:
                self._run(batch)

    def _start(self, task: _Task) -> None:
        self._tasks.append(task)
        self._advance(task, None)

    def _dropped(self, task: _Task) -> bool:
        if task.done:
            return True
        if task.future.cancelled():  # the caller went away: stop spending the model on it
            task.job.close()
            return True
        return False

    def _next_batch(self) -> list[tuple[_Task, Step]]:
        """The next pass: one prefill chunk alone, or the pending decode-sized steps of up to
        max_batch_rows sessions (each session's oldest), prefills and batches taking turns."""
        small: list[tuple[_Task, Step]] = []
        large: list[tuple[_Task, Step]] = []
        sessions: set[str] = set()
        for task in self._tasks:
            step = task.step
            if step is None or step.session_id in sessions:
                continue
            sessions.add(step.session_id)
            uncached = self._model.uncached_len(step.session_id, step.token_ids)
            if uncached > MAX_BATCH_NEW_TOKENS:
                large.append((task, _prefill_chunk(step, uncached)))
            elif len(small) < self._model.max_batch_rows:
                small.append((task, step))
        self._prefill_turn = not self._prefill_turn
        if large and (self._prefill_turn or not small):
            return large[:1]
        return small

    def _run(self, batch: list[tuple[_Task, Step]]) -> None:
        started = time.perf_counter()
        try:
            logits = self._model.forward([step for _, step in batch])
        except Exception as error:  # noqa: BLE001 - the callers get the error, the thread carries on
            for task, _ in batch:
                self._finish(task, error=error)
            return
        seconds = time.perf_counter() - started
        if self._on_batch is not None:
            self._on_batch(len(batch), seconds)
        for (task, step), rows in zip(batch, logits):
            task.compute_seconds += seconds
            if step is task.step:  # a prefill chunk only fills the cache; the step itself comes later
                self._advance(task, rows)

    def _advance(self, task: _Task, logits: torch.Tensor | None) -> None:
        try:
            task.step = next(task.job) if logits is None else task.job.send(logits)
        except StopIteration as stop:
            self._finish(task, result=stop.value)
        except Exception as error:  # noqa: BLE001 - e.g. invalid input found by the job
            self._finish(task, error=error)

    def _finish(self, task: _Task, *, result: Any = None, error: BaseException | None = None) -> None:
        task.done, task.step = True, None
        outcome = (result, task.compute_seconds)

        def resolve() -> None:
            if task.future.done():  # cancelled meanwhile
                return
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(outcome)

        task.loop.call_soon_threadsafe(resolve)


def _prefill_chunk(step: Step, uncached: int) -> Step:
    """The part of a long step to run next: up to PREFILL_CHUNK tokens filling the cache, or the
    step itself once what is left fits in one chunk (its logits come from that last chunk)."""
    cached = len(step.token_ids) - uncached
    end = min(cached + PREFILL_CHUNK, len(step.token_ids) - step.num_logits)
    if uncached <= PREFILL_CHUNK or end <= cached:
        return step
    return Step(step.session_id, step.token_ids[:end], 0)
