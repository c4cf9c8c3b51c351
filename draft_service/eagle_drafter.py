"""The EAGLE head's drafting job: the LM drafter's loop, fed the target's features."""

from __future__ import annotations

from draft_service.drafter import propose_with_model
from specdec.runtime.batching import Job
from specdec.runtime.eagle_lm import EagleLM
from specdec.runtime.features import FeatureRows, MissingFeatures
from specdec.runtime.sampling import SamplingParams
from specdec.runtime.speculative import Proposal


def propose_with_eagle(
    lm: EagleLM, session_id: str, token_ids: list[int], k: int, params: SamplingParams, seed: int,
    features: FeatureRows | None,
) -> Job[Proposal]:
    """A scheduler job drafting k tokens from the target's features (the rows the caller has not sent
    before); raises MissingFeatures(pos) when the head needs the session's features from pos on (a
    replica that never saw the session, or evicted it)."""
    drafting = propose_with_model(session_id, token_ids, k, params, seed, lm.vocab_size, features)
    try:
        step = next(drafting)
    except StopIteration as done:  # k = 0
        return done.value
    while True:
        output = yield step
        if output.logits.shape[0] == 0:  # the head could not compute the step (EagleLM.forward)
            needed = lm.features_needed_from(step.session_id, step.token_ids, step.features)
            raise MissingFeatures(needed if needed is not None else 0)
        try:
            step = drafting.send(output)
        except StopIteration as done:
            return done.value
