"""specdec.runtime.batching: what is queued when the model frees up is the next pass, off the event
loop; prefills run alone in chunks, taking turns; cancelled jobs stop; one pass at a time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from specdec.runtime.batching import PREFILL_CHUNK, BatchScheduler, Job
from specdec.runtime.cached_lm import Step, StepOutput


class RecordingModel:
    """Logits [num_logits, 1] holding the step's length; records every pass; each pass takes `seconds`
    and may wait for `gate`; fails if two passes ever overlap."""

    max_batch_rows = 4

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.passes: list[list[Step]] = []
        self.cached: dict[str, int] = {}
        self.gate = threading.Event()
        self.gate.set()
        self._busy = threading.Lock()

    def forward(self, steps: list[Step]) -> list[StepOutput]:
        assert self._busy.acquire(blocking=False), "two passes at once"
        try:
            self.gate.wait()
            time.sleep(self.seconds)
            self.passes.append(steps)
            for step in steps:
                if step.session_id == "boom":
                    raise RuntimeError("boom")
                self.cached[step.session_id] = len(step.token_ids)
            return [StepOutput(torch.full((step.num_logits, 1), float(len(step.token_ids)))) for step in steps]
        finally:
            self._busy.release()

    def uncached_len(self, session_id: str, token_ids: list[int]) -> int:
        return len(token_ids) - min(self.cached.get(session_id, 0), len(token_ids))


def decode(session_id: str, start: int, steps: int) -> Job[list[float]]:
    """A drafter-like job: `steps` one-token steps, each extending the sequence."""
    seen = []
    for i in range(steps):
        output = yield Step(session_id, [0] * (start + i), 1)
        seen.append(float(output.logits[0, 0]))
    return seen


def test_queued_jobs_share_passes_and_each_drops_out_after_its_own_steps():
    model = RecordingModel()

    async def main():
        scheduler = BatchScheduler(lambda: model)
        await scheduler.run(decode("warm", 1, 1))
        model.gate.clear()  # hold the next pass so that everything below queues behind it
        first = asyncio.create_task(scheduler.run(decode("a", 5, 3)))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(scheduler.run(decode(s, 1, n))) for s, n in (("b", 1), ("c", 2))]
        await asyncio.sleep(0.05)
        model.gate.set()
        return await first, await asyncio.gather(*rest)

    (a, a_seconds), results = asyncio.run(main())
    assert a == [5.0, 6.0, 7.0] and [r for r, _ in results] == [[1.0], [1.0, 2.0]]
    rows = [sorted(step.session_id for step in p) for p in model.passes[1:]]
    assert rows == [["a"], ["a", "b", "c"], ["a", "c"]]  # b leaves after one step, c after two
    assert a_seconds >= 0


def test_a_step_much_wider_than_the_others_waits_for_a_pass_of_its_own_kind():
    model = RecordingModel()

    def verify(session_id: str, start: int, width: int) -> Job[float]:
        output = yield Step(session_id, [0] * (start + width), width)
        return float(output.logits[0, 0])

    async def main():
        scheduler = BatchScheduler(lambda: model)
        for session_id in "abc":  # cache 10 tokens of each session
            await scheduler.run(decode(session_id, 10, 1))
        model.gate.clear()
        await_first = asyncio.create_task(scheduler.run(decode("a", 11, 1)))
        await asyncio.sleep(0.05)
        jobs = [scheduler.run(decode("b", 11, 2)), scheduler.run(verify("c", 10, 7))]
        tasks = [asyncio.create_task(job) for job in jobs]
        await asyncio.sleep(0.05)
        model.gate.set()
        await await_first
        await asyncio.gather(*tasks)

    asyncio.run(main())
    passes = [[(s.session_id, len(s.token_ids)) for s in p] for p in model.passes[3:]]
    # c's 7-token block is put off while b decodes, then anchors a pass (b's next 1-token step, in
    # the band of 3 to 15 tokens, is not in it).
    assert passes == [[("a", 11)], [("b", 11)], [("c", 17)], [("b", 12)]]


def test_a_long_prefill_runs_alone_in_chunks_taking_turns_with_decode_batches():
    model = RecordingModel()
    prompt = PREFILL_CHUNK * 2 + 10

    async def main():
        scheduler = BatchScheduler(lambda: model)
        model.gate.clear()
        long = asyncio.create_task(scheduler.run(decode("long", prompt, 1)))
        short = asyncio.create_task(scheduler.run(decode("short", 1, 4)))
        await asyncio.sleep(0.05)
        model.gate.set()
        return await long, await short

    (long, _), (short, _) = asyncio.run(main())
    assert long == [float(prompt)] and short == [1.0, 2.0, 3.0, 4.0]
    shapes = [[(s.session_id, len(s.token_ids), s.num_logits) for s in p] for p in model.passes]
    prefill = [(i, row) for i, shape in enumerate(shapes) for row in shape if row[0] == "long"]
    # Two chunks alone; the last 10 tokens are decode-sized and may share a pass.
    assert [row for _, row in prefill] == [("long", PREFILL_CHUNK, 0), ("long", 2 * PREFILL_CHUNK, 0), ("long", prompt, 1)]
    assert shapes[prefill[0][0]] == [prefill[0][1]] and shapes[prefill[1][0]] == [prefill[1][1]]
    first_short = next(i for i, shape in enumerate(shapes) if ("short", 1, 1) in shape)
    assert first_short < prefill[1][0]  # the short stream did not wait for the whole prefill


def test_the_event_loop_answers_while_a_pass_computes():
    model = RecordingModel(seconds=0.5)

    async def main():
        scheduler = BatchScheduler(lambda: model)
        job = asyncio.create_task(scheduler.run(decode("a", 1, 1)))
        await asyncio.sleep(0.01)
        started, ticks = time.perf_counter(), 0
        while not job.done():
            await asyncio.sleep(0.01)
            ticks += 1
        return ticks, time.perf_counter() - started

    ticks, seconds = asyncio.run(main())
    assert seconds > 0.4 and ticks > 10  # the loop kept turning during the half-second pass


def test_a_cancelled_job_stops_and_the_model_is_never_run_twice_at_once():
    model = RecordingModel(seconds=0.05)

    async def main():
        scheduler = BatchScheduler(lambda: model)
        doomed = asyncio.create_task(scheduler.run(decode("doomed", 1, 100)))
        await asyncio.sleep(0.02)  # its first pass is running
        doomed.cancel()
        # A new job arrives while the cancelled one's pass still runs: it must wait for that pass.
        result, _ = await scheduler.run(decode("next", 1, 2))
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return result

    assert asyncio.run(main()) == [1.0, 2.0]
    assert sum(step.session_id == "doomed" for p in model.passes for step in p) <= 2


def test_a_failed_pass_fails_its_jobs_only_and_the_thread_carries_on():
    model = RecordingModel()

    async def main():
        scheduler = BatchScheduler(lambda: model)
        with pytest.raises(RuntimeError, match="boom"):
            await scheduler.run(decode("boom", 1, 1))
        return (await scheduler.run(decode("fine", 3, 1)))[0], await scheduler.call(lambda x: x * 2, 21)

    assert asyncio.run(main()) == ([3.0], 42)


def test_a_job_whose_event_loop_closed_mid_pass_leaves_the_thread_serving():
    model = RecordingModel()
    schedulers: list[BatchScheduler] = []

    async def leave_a_job_running():
        schedulers.append(BatchScheduler(lambda: model))
        model.gate.clear()
        asyncio.ensure_future(schedulers[0].run(decode("left", 1, 1)))
        await asyncio.sleep(0.05)  # its pass is running when this loop closes

    asyncio.run(leave_a_job_running())
    model.gate.set()  # the pass ends; its result has no loop to go to
    next_job = schedulers[0].run(decode("next", 3, 1))
    assert asyncio.run(asyncio.wait_for(next_job, 5))[0] == [3.0]
