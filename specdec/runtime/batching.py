"""Batches the model calls of all sessions into shared forward passes, off the event loop.

A job is a generator that yields the model steps it needs (a Step each) and receives each step's
StepOutput (its logits, and the features it asked for): a verify is one step, a draft of k tokens
is k steps with sampling in between. One thread owns the model. Whenever the model is free, it
takes the pending step of every job (one per session) and runs them as one forward pass, so a lone
stream never waits and a crowd shares each pass; no timer holds a batch open. Each job drops out
when it returns.

A step with more than MAX_BATCH_NEW_TOKENS uncached tokens (a prefill) is not padded into a batch
of decode steps: it runs alone, PREFILL_CHUNK tokens at a time, taking turns with the batches, so
a long prompt delays other streams by one chunk at a time, not by its whole prefill. A step that wants
the features of the chunks' positions gets them stitched to its own pass's rows.

The event loop only queues jobs and receives results: health checks, cancellations and other
streams carry on while a batch computes. The model thread also loads the model, and is the only
thread that should run torch's parallel kernels: once two threads have run them, each has an OpenMP
pool and they slow each other down (a [8, 576] x [576, 1536] matmul on 2 cores: 74 us from one
thread, 160-190 us from either once both had; `specdec serve` keeps its event loop's thread at one
torch thread for that reason). A cancelled job's steps are dropped at its next turn; a
forward already running finishes first, and the model is never used by two passes at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

import torch

from specdec.runtime.cached_lm import Step, StepOutput
from specdec.runtime.slot_lm import MAX_BATCH_NEW_TOKENS

T = TypeVar("T")
Job = Generator[Step, StepOutput, T]  # yields steps, is sent their outputs, returns its result

PREFILL_CHUNK = 256  # tokens per pass of a prefill: long enough to run at full speed, short enough to share
_MAX_WAIT_FRACTION = 0.25  # of a pass: the longest wait for a stream due back (see _Regulars)
_PASS_WEIGHT = 0.2  # of each pass in the running mean of pass time


class BatchedModel(Protocol):
    max_batch_rows: int

    def forward(self, steps: list[Step]) -> list[StepOutput]: ...

    def uncached_len(self, session_id: str, token_ids: list[int]) -> int: ...

    def end_session(self, session_id: str) -> None: ...


@dataclass(eq=False)
class _Task(Generic[T]):
    job: Job[T]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    step: Step | None = None
    # Feature rows of `step`'s first positions, computed by its prefill chunks; the rest come with the step.
    chunk_features: list[torch.Tensor] = field(default_factory=list)
    session_id: str | None = None  # of its steps
    compute_seconds: float = 0.0
    done: bool = False


class BatchScheduler:
    def __init__(
        self, load: Callable[[], BatchedModel], threads: int = 0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """Starts the model thread, which runs load() (with `threads` torch threads; 0 = torch's
        default) and then serves; returns once the model is loaded, raising what load() raised."""
        self._on_batch = on_batch  # called (rows, seconds) after each pass, on the model thread
        self._inbox: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._tasks: list[_Task] = []
        self._prefill_turn = False
        self._put_off: set[_Task] = set()  # steps left out of the last pass for their width
        self._regulars = _Regulars()
        self._pass_seconds = 0.0  # a running mean
        loaded: concurrent.futures.Future[BatchedModel] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(load, threads, loaded), name="model", daemon=True)
        self._thread.start()
        loaded.result()

    @property
    def model(self) -> BatchedModel:
        return self._model

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

    async def end_session(self, session_id: str) -> None:
        """Frees the session's cache, between passes."""

        def end() -> None:
            self._regulars.forget(session_id)
            self._model.end_session(session_id)

        await self.call(end)

    # Everything below runs on the model thread.

    def _serve(self, load: Callable[[], BatchedModel], threads: int, loaded: concurrent.futures.Future) -> None:
        if threads > 0:
            torch.set_num_threads(threads)  # this thread's OpenMP setting, not the process's
        try:
            self._model = load()
        except BaseException as error:  # noqa: BLE001 - the constructor raises it
            loaded.set_exception(error)
            return
        loaded.set_result(self._model)
        while True:  # the thread is a daemon: it ends with the process
            if not self._tasks:
                self._take(timeout=None)  # idle: wait for work
            while (wait := self._regulars.wait_s(self._pending_sessions(), self._max_wait())) > 0:
                self._take(timeout=wait)
            while not self._inbox.empty():
                self._take(timeout=0.0)
            self._tasks = [task for task in self._tasks if not self._dropped(task)]
            batch = self._next_batch()
            if batch:
                self._regulars.new_pass()
                self._run(batch)

    def _take(self, timeout: float | None) -> None:
        """Starts the next job from the inbox, waiting up to `timeout` seconds for it (None: for ever)."""
        try:
            task = self._inbox.get_nowait() if timeout == 0.0 else self._inbox.get(timeout=timeout)
        except queue.Empty:
            self._regulars.new_pass()  # whoever is not back yet is not waited for again
            return
        self._start(task)

    def _pending_sessions(self) -> set[str]:
        return {task.step.session_id for task in self._tasks if task.step is not None}

    def _max_wait(self) -> float:
        return _MAX_WAIT_FRACTION * self._pass_seconds

    def _start(self, task: _Task) -> None:
        self._tasks.append(task)
        self._advance(task, None)
        if task.step is not None:
            task.session_id = task.step.session_id
            self._regulars.arrived(task.session_id)

    def _dropped(self, task: _Task) -> bool:
        if task.done:
            return True
        if task.future.cancelled():  # the caller went away: stop spending the model on it
            task.job.close()
            return True
        return False

    def _next_batch(self) -> list[tuple[_Task, Step]]:
        """The next pass: one prefill chunk alone, or the pending decode-sized steps of up to
        max_batch_rows sessions (each session's oldest) of similar width, prefills and batches taking
        turns."""
        small: list[tuple[_Task, Step, int]] = []
        large: list[tuple[_Task, Step]] = []
        sessions: set[str] = set()
        for task in self._tasks:
            step = task.step
            if step is None or step.session_id in sessions:
                continue
            sessions.add(step.session_id)
            if task.chunk_features:  # the chunks computed those rows: the step computes the rest
                step = replace(step, num_features=step.num_features - sum(len(rows) for rows in task.chunk_features))
            new = max(self._model.uncached_len(step.session_id, step.token_ids), step.num_computed)
            if new > MAX_BATCH_NEW_TOKENS:
                large.append((task, _prefill_chunk(step, new)))
            elif len(small) < self._model.max_batch_rows:
                small.append((task, step, new))
        self._prefill_turn = not self._prefill_turn
        if large and (self._prefill_turn or not small):
            return large[:1]
        return self._similar_widths(small)

    def _similar_widths(self, steps: list[tuple[_Task, Step, int]]) -> list[tuple[_Task, Step]]:
        """The steps within a band of widths around an anchor: the widest step put off last time,
        else the narrowest. A pass pads every row to its widest, so a verify block four times wider
        than the plain decode steps beside it would make them all cost four tokens: then a stream's
        drafts look free to the stream that sends them, while the others pay. Apart, each stream's
        drafts cost its own passes, and adaptive k sees it. A step put off anchors the next pass."""
        if not steps:
            return []
        put_off = [width for task, _, width in steps if task in self._put_off]
        anchor = max(put_off) if put_off else min(width for _, _, width in steps)
        band = [(task, step) for task, step, width in steps if anchor // 2 <= width <= 2 * anchor + 1]
        self._put_off = {task for task, _, _ in steps} - {task for task, _ in band}
        return band

    def _run(self, batch: list[tuple[_Task, Step]]) -> None:
        started = time.perf_counter()
        try:
            outputs = self._model.forward([step for _, step in batch])
        except Exception as error:  # noqa: BLE001 - the callers get the error, the thread carries on
            for task, _ in batch:
                self._finish(task, error=error)
            return
        seconds = time.perf_counter() - started
        self._pass_seconds += _PASS_WEIGHT * (seconds - self._pass_seconds)
        if self._on_batch is not None:
            self._on_batch(len(batch), seconds)
        for (task, step), output in zip(batch, outputs):
            task.compute_seconds += seconds
            if len(step.token_ids) < len(task.step.token_ids):  # a prefill chunk: the step itself comes later
                if output.features is not None:
                    task.chunk_features.append(output.features)
                continue
            if task.chunk_features:
                output = replace(output, features=torch.cat([*task.chunk_features, output.features]))
                task.chunk_features = []
            self._advance(task, output)

    def _advance(self, task: _Task, output: StepOutput | None) -> None:
        try:
            task.step = next(task.job) if output is None else task.job.send(output)
        except StopIteration as stop:
            self._finish(task, result=stop.value)
        except Exception as error:  # noqa: BLE001 - e.g. invalid input found by the job
            self._finish(task, error=error)

    def _finish(self, task: _Task, *, result: Any = None, error: BaseException | None = None) -> None:
        task.done, task.step = True, None
        if task.session_id is not None:
            self._regulars.answered(task.session_id)
        outcome = (result, task.compute_seconds)

        def resolve() -> None:
            if task.future.done():  # cancelled meanwhile
                return
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(outcome)

        try:
            task.loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # the caller's event loop has closed: nobody waits for this, and the thread goes on
            pass


class _Regulars:
    """Streams that come straight back, and how soon.

    A stream decoding without drafts sends its next step one RPC round trip after its reply. If the
    model started the next pass the moment it was free, the first stream back would run alone while
    the rest queue behind it, and the streams would settle into two alternating passes of half the
    rows each, each pass costing nearly a full one (8 streams: 4.3 rows per pass). So the sessions
    the last pass answered that usually return within a quarter of a pass are waited for, up to
    their usual return time. A lone stream never waits (it is the one that returned), nor does a
    stream that drafts between its steps (it returns later than that), nor one that went away (it
    is waited for once).
    """

    def __init__(self) -> None:
        self._gaps: dict[str, float] = {}  # session -> seconds from a reply to its next step, a running mean
        self._answered: dict[str, float] = {}  # sessions the last pass answered -> when

    def answered(self, session_id: str) -> None:
        self._answered[session_id] = time.perf_counter()

    def arrived(self, session_id: str) -> None:
        at = self._answered.pop(session_id, None)
        if at is not None:
            gap = time.perf_counter() - at
            self._gaps[session_id] = 0.5 * (self._gaps.get(session_id, gap) + gap)

    def wait_s(self, pending: set[str], max_wait: float) -> float:
        """How long to wait for the regulars not back yet (<= 0: none to wait for)."""
        now = time.perf_counter()
        due = [
            at + min(1.5 * self._gaps[s] + 0.001, max_wait)
            for s, at in self._answered.items()
            if s not in pending and self._gaps.get(s, math.inf) <= max_wait
        ]
        return max(due, default=now) - now

    def new_pass(self) -> None:
        self._answered.clear()

    def forget(self, session_id: str) -> None:
        self._gaps.pop(session_id, None)
        self._answered.pop(session_id, None)


def _prefill_chunk(step: Step, new: int) -> Step:
    """The part of a long step to run next, over its `new` positions still to compute: up to PREFILL_CHUNK
    of them filling the cache (with the features of those the step wants), or the step itself once what is
    left fits in one chunk (its logits come from that last chunk)."""
    length = len(step.token_ids)
    start = length - new
    end = min(start + PREFILL_CHUNK, length - step.num_logits)
    if new <= PREFILL_CHUNK or end <= start:
        return step
    # The chunk keeps the step's input features: a feature drafter's chunk reads them too.
    return replace(step, token_ids=step.token_ids[:end], num_logits=0,
                   num_features=max(0, end - max(start, length - step.num_features)))
