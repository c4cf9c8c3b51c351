"""target_service over real gRPC on loopback: Score's features are the target's own last hidden states
(`output_hidden_states=True`'s last) of exactly the positions the reply commits."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch

from specdec.runtime import batching
from specdec.runtime.features import decode_features
from specdec.v1 import target_pb2
from tests.target_service.loopback import Stub, with_target

PROMPT = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3]


def score(session_id: str, token_ids: list[int], drafts: list[int] = (), features_from: int | None = None):
    return target_pb2.ScoreRequest(session_id=session_id, token_ids=token_ids, draft_token_ids=drafts,
                                   features_from=features_from)


def assert_rows(reply: target_pb2.ScoreResponse, want: torch.Tensor, offset: int) -> None:
    rows = decode_features(reply.features)
    assert rows.offset == offset and rows.rows.shape == want.shape
    torch.testing.assert_close(rows.rows.float(), want.float(), atol=2e-3, rtol=2e-3)  # float16 on the wire


def test_prefill_verify_with_rejections_and_rollback_return_the_committed_positions_features(tiny_target, reference):
    logits = reference.run(PROMPT)[0]
    accepted = int(logits[-1].argmax())  # the target's own greedy token: accepted
    rejected = int(reference.run(PROMPT + [accepted])[0][-1].argmin())  # one it never picks

    async def test(stub: Stub) -> None:
        info = (await stub.GetModelInfo(target_pb2.TargetGetModelInfoRequest())).info
        assert info.feature_size == 16  # the tiny model's hidden size
        assert_rows(await stub.Score(score("s", PROMPT, features_from=0)), reference.features(PROMPT, 0), 0)
        verify = await stub.Score(score("s", PROMPT, [accepted, rejected, 3], features_from=len(PROMPT) - 1))
        assert verify.num_accepted == 1
        # n + 1 rows: the last prompt token's and the accepted draft's; the rejected drafts' are dropped.
        assert_rows(verify, reference.features(PROMPT + [accepted], len(PROMPT) - 1), len(PROMPT) - 1)
        rolled_back = PROMPT[:6] + [2]
        assert_rows(await stub.Score(score("s", rolled_back, features_from=6)), reference.features(rolled_back, 6), 6)
        assert not (await stub.Score(score("s", rolled_back + [1]))).HasField("features")

    with_target(tiny_target, test)


def test_a_chunked_prefill_returns_every_positions_features(tiny_target, reference, monkeypatch):
    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    prompt = [1 + i % 7 for i in range(100)]

    async def test(stub: Stub) -> None:
        assert_rows(await stub.Score(score("long", prompt, features_from=0)), reference.features(prompt, 0), 0)

    with_target(tiny_target, test)


def test_concurrent_sessions_with_and_without_features(tiny_target, reference):
    prompts = {f"s{i}": [1 + (i * j) % 7 for j in range(5 + i)] for i in range(6)}

    async def test(stub: Stub) -> None:
        for session_id, prompt in prompts.items():  # cached, so the next steps are decode-sized and batch
            await stub.Score(score(session_id, prompt))
        replies = await asyncio.gather(*(
            stub.Score(score(session_id, prompt + [2], features_from=len(prompt) if i % 2 else None))
            for i, (session_id, prompt) in enumerate(prompts.items())
        ))
        for i, ((session_id, prompt), reply) in enumerate(zip(prompts.items(), replies)):
            if i % 2:
                assert_rows(reply, reference.features(prompt + [2], len(prompt)), len(prompt))
            else:
                assert not reply.HasField("features")

    with_target(tiny_target, test)


@pytest.mark.parametrize("features_from", [-1, len(PROMPT)])
def test_features_from_outside_the_committed_positions_is_invalid(tiny_target, features_from):
    async def test(stub: Stub) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Score(score("s", PROMPT, [1], features_from=features_from))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"features_from {features_from} is outside [0, {len(PROMPT) - 1}]" in caught.value.details()

    with_target(tiny_target, test)
