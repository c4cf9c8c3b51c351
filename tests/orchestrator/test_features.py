"""Features for a feature drafter: the orchestrator's ledger (orchestrator.features), and the loop against
stand-in Target and Draft replicas on loopback gRPC: the first iteration is plain, every Score asks from
the first position the request lacks, each Propose carries the rows the draft was not sent, and a draft
that lost them is resent the rows from where it asks, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import torch

from orchestrator.adaptive_k import CostModel
from orchestrator.clients import DraftClient, TargetClient
from orchestrator.draft_guard import DraftGuard
from orchestrator.features import FeatureLedger
from orchestrator.loop import LoopStats, SpeculativeLoop
from orchestrator.request import GenerationConfig
from specdec.runtime.features import FeatureRows, decode_features, encode_features
from specdec.runtime.sampling import SamplingParams
from specdec.runtime.serving import ServerSpec, start_server
from specdec.v1 import common_pb2, draft_pb2, draft_pb2_grpc, target_pb2, target_pb2_grpc

WIDTH, VOCAB = 2, 8
PROMPT = [3, 4, 5, 6]


def features(offset: int, num_rows: int) -> common_pb2.Features:
    """Rows whose values are their positions, so a test can tell which rows went where."""
    positions = torch.arange(offset, offset + num_rows, dtype=torch.float16)[:, None].expand(num_rows, WIDTH)
    return encode_features(FeatureRows(offset, positions))


def positions(message: common_pb2.Features) -> list[int]:
    return [int(row[0]) for row in decode_features(message).rows]


def test_the_ledger_appends_replaces_from_an_offset_and_hands_out_rows_from_any_position():
    ledger = FeatureLedger(WIDTH)
    assert ledger.end == 0 and ledger.unsent() is None and not ledger.ready(len(PROMPT))
    ledger.add(features(0, 4))  # the prompt's, at prefill
    assert ledger.end == 4 and ledger.ready(5)
    assert positions(ledger.unsent()) == [0, 1, 2, 3]
    ledger.sent()
    assert ledger.unsent() is None
    ledger.add(features(4, 3))
    assert positions(ledger.unsent()) == [4, 5, 6] and ledger.unsent().offset == 4
    assert positions(ledger.rows_from(2)) == [2, 3, 4, 5, 6]
    assert ledger.rows_from(7).num_rows == 0
    ledger.add(features(5, 1))  # from an earlier offset: replaces the rows from there
    assert ledger.end == 6 and positions(ledger.rows_from(0)) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("message, words", [
    (features(3, 1), "from position 3"),  # a gap after the 2 rows held
    (common_pb2.Features(offset=0, num_rows=1, width=3, data=b"\0" * 6), "width 3"),
    (common_pb2.Features(offset=0, num_rows=2, width=WIDTH, data=b"\0" * 6), "6 bytes for 2 rows"),
])
def test_the_ledger_refuses_rows_that_do_not_fit(message, words):
    ledger = FeatureLedger(WIDTH)
    ledger.add(features(0, 2))
    with pytest.raises(ValueError, match=words):
        ledger.add(message)
    with pytest.raises(ValueError, match="from position 3"):
        ledger.rows_from(3)


class Target(target_pb2_grpc.TargetServicer):
    """Accepts every draft, corrects with token 1, returns the features asked for (values = positions)."""

    def __init__(self) -> None:
        self.requests: list[target_pb2.ScoreRequest] = []
        self.replies: list[target_pb2.ScoreResponse] = []

    async def ScoreStream(self, requests: AsyncIterator[target_pb2.ScoreStreamRequest], context):
        async for message in requests:
            request = message.request
            self.requests.append(request)
            n, length = len(request.draft_token_ids), len(request.token_ids)
            reply = target_pb2.ScoreResponse(num_accepted=n, next_token=1)
            if request.HasField("features_from"):
                reply.features.CopyFrom(features(request.features_from, length + n - request.features_from))
            self.replies.append(reply)
            yield target_pb2.ScoreStreamResponse(response=reply)


class Draft(draft_pb2_grpc.DraftServicer):
    """A feature drafter's bookkeeping: it holds rows 0..held-1, asks from `held` when a request's rows do
    not reach the sequence's last position but one, and forgets them all at the requests in `forget_at`
    (a failover to a replica that never saw the session); with `keeps` False it never takes any."""

    def __init__(self, forget_at: frozenset[int] = frozenset(), keeps: bool = True) -> None:
        self.requests: list[draft_pb2.ProposeRequest] = []
        self._forget_at = forget_at
        self._keeps = keeps
        self._held = 0

    async def ProposeStream(self, requests: AsyncIterator[draft_pb2.ProposeStreamRequest], context):
        async for message in requests:
            request = message.request
            if len(self.requests) in self._forget_at:
                self._held = 0
            self.requests.append(request)
            if self._keeps and request.HasField("features") and request.features.offset <= self._held:
                self._held = request.features.offset + request.features.num_rows
            if self._held != len(request.token_ids) - 1:
                reply = draft_pb2.ProposeResponse(features_from=self._held)
            else:
                reply = draft_pb2.ProposeResponse(token_ids=[2] * request.num_tokens)
            yield draft_pb2.ProposeStreamResponse(response=reply)


def run_loop(draft, max_new_tokens: int = 8, params: SamplingParams = SamplingParams(),
             feature_size: int = WIDTH) -> tuple[list[list[int]], Target, LoopStats]:
    target = Target()

    async def main() -> list[list[int]]:
        servers = [
            await start_server(ServerSpec(lambda s: target_pb2_grpc.add_TargetServicer_to_server(target, s),
                                          ["specdec.v1.Target"]), host="127.0.0.1", port=0),
            await start_server(ServerSpec(lambda s: draft_pb2_grpc.add_DraftServicer_to_server(draft, s),
                                          ["specdec.v1.Draft"]), host="127.0.0.1", port=0),
        ]
        try:
            channels = [grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for server in servers]
            info = common_pb2.ModelInfo(vocab_size=VOCAB, feature_size=feature_size)
            target_client = TargetClient(channels[0], 5.0, info=info)
            draft_client = DraftClient(channels[1], 5.0, info=info)
            config = GenerationConfig(PROMPT, max_new_tokens, params, seed=0, draft="model", k=2,
                                      adaptive=False, stop=(), ignore_eos=True)
            loop = SpeculativeLoop(config, "s", draft_client, target_client, stats, CostModel(), DraftGuard(5.0))
            committed = [tokens async for tokens in loop.tokens()]
            for channel in channels:
                await channel.close()
            return committed
        finally:
            for server in servers:
                await server.stop(0)

    stats = LoopStats()
    return asyncio.run(main()), target, stats


def test_the_loop_keeps_the_features_and_resends_them_from_where_a_draft_asks():
    draft = Draft(forget_at=frozenset({1}))  # the second Propose finds a replica without the session's rows
    committed, target, stats = run_loop(draft)
    assert committed == [[1], [2, 2, 1], [2, 2, 1], [1]]  # the first iteration is plain: no features yet
    assert [r.features_from for r in target.requests] == [0, 4, 7, 10]
    sent = [(r.features.offset, r.features.num_rows) for r in draft.requests]
    # The prompt's rows; then the last Score's 3 rows, refused, and all 7 resent at once.
    assert sent == [(0, 4), (4, 3), (0, 7)]
    features_bytes = sum(len(message.features.data) for message in draft.requests + target.replies)
    assert features_bytes == 2 * WIDTH * (4 + 3 + 7 + 11) and stats.meter.wire_bytes > features_bytes


def test_a_draft_that_still_lacks_the_features_after_the_resend_costs_its_drafts_only():
    draft = Draft(keeps=False)
    committed, _, _ = run_loop(draft, max_new_tokens=5)
    assert committed == [[1]] * 5  # target-only tokens, never stuck
    # Three iterations draft (the first waits for features, the last has no budget for drafts): each
    # makes the call and its one resend, each with every row since the last Propose the draft took (none).
    assert [(r.features.offset, r.features.num_rows) for r in draft.requests] == [
        (0, 4), (0, 4), (0, 5), (0, 5), (0, 6), (0, 6)
    ]


class MalformedDraft(draft_pb2_grpc.DraftServicer):
    """A draft with a bug: its sampled replies carry one q row fewer than tokens."""

    def __init__(self) -> None:
        self.calls = 0

    async def ProposeStream(self, requests: AsyncIterator[draft_pb2.ProposeStreamRequest], context):
        async for message in requests:
            self.calls += 1
            k = message.request.num_tokens
            rows = common_pb2.ProbRows(num_rows=k - 1, vocab_size=VOCAB, sparse_row_lengths=b"\x00\x00\x00\x00" * (k - 1))
            yield draft_pb2.ProposeStreamResponse(response=draft_pb2.ProposeResponse(token_ids=[2] * k, probs=rows))


def test_a_draft_reply_with_malformed_rows_costs_that_iteration_its_drafts_not_the_request():
    draft = MalformedDraft()
    committed, target, _ = run_loop(draft, max_new_tokens=4, params=SamplingParams(temperature=1.0), feature_size=0)
    assert committed == [[1]] * 4 and draft.calls == 3  # asked every iteration with budget for drafts
    assert all(not request.draft_token_ids for request in target.requests)
