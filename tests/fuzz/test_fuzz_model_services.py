"""Property-based fuzzing of the draft and target services (specdec.v1.Draft, specdec.v1.Target):
every method, 1,000 hostile-and-valid cases each, against real in-process servers on loopback.

Each case must end in a response or a status a client can act on (INVALID_ARGUMENT, OUT_OF_RANGE,
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, with a message), never UNKNOWN or INTERNAL, within the
per-call timeout; afterwards every service is still SERVING. Requests travel as bytes, so cases can
carry fields no message defines (a newer client's), which servers must ignore.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specdec.v1 import draft_pb2, target_pb2
from tests.fuzz import strategies as fs
from tests.fuzz.harness import FUZZ, FuzzStack

DRAFTS = ["draft", "ngram_draft"]  # with a model, and n-gram only


def test_propose(stack: FuzzStack) -> None:
    @FUZZ
    @given(service=st.sampled_from(DRAFTS), request=fs.propose_requests(), junk=fs.unknown_fields())
    def case(service: str, request: draft_pb2.ProposeRequest, junk: bytes) -> None:
        reply, _ = stack.unary(service, "/specdec.v1.Draft/Propose", request.SerializeToString() + junk)
        if reply is not None:
            check_proposal(request, draft_pb2.ProposeResponse.FromString(reply))

    case()
    stack.assert_serving()


def test_propose_stream(stack: FuzzStack) -> None:
    @FUZZ
    @given(service=st.sampled_from(DRAFTS), requests=st.lists(fs.propose_requests(), min_size=1, max_size=2),
           junk=fs.unknown_fields(), cancel_after=st.one_of(st.none(), st.integers(1, 2)))
    def case(service: str, requests: list[draft_pb2.ProposeRequest], junk: bytes, cancel_after: int | None) -> None:
        payloads = [draft_pb2.ProposeStreamRequest(request=r).SerializeToString() + junk for r in requests]
        replies, error = stack.streaming(service, "/specdec.v1.Draft/ProposeStream", payloads,
                                         cancel_after=cancel_after)
        for request, reply in zip(requests, replies):
            check_proposal(request, draft_pb2.ProposeStreamResponse.FromString(reply).response)
        if error is None and cancel_after is None:
            assert len(replies) == len(requests)

    case()
    stack.assert_serving()


def test_score(stack: FuzzStack) -> None:
    @FUZZ
    @given(request=fs.score_requests(), junk=fs.unknown_fields())
    def case(request: target_pb2.ScoreRequest, junk: bytes) -> None:
        reply, _ = stack.unary("target", "/specdec.v1.Target/Score", request.SerializeToString() + junk)
        if reply is not None:
            check_score(request, target_pb2.ScoreResponse.FromString(reply))

    case()
    stack.assert_serving()


def test_score_stream(stack: FuzzStack) -> None:
    @FUZZ
    @given(requests=st.lists(fs.score_requests(), min_size=1, max_size=2), junk=fs.unknown_fields(),
           cancel_after=st.one_of(st.none(), st.integers(1, 2)))
    def case(requests: list[target_pb2.ScoreRequest], junk: bytes, cancel_after: int | None) -> None:
        payloads = [target_pb2.ScoreStreamRequest(request=r).SerializeToString() + junk for r in requests]
        replies, error = stack.streaming("target", "/specdec.v1.Target/ScoreStream", payloads,
                                         cancel_after=cancel_after)
        for request, reply in zip(requests, replies):
            check_score(request, target_pb2.ScoreStreamResponse.FromString(reply).response)
        if error is None and cancel_after is None:
            assert len(replies) == len(requests)

    case()
    stack.assert_serving()


@pytest.mark.parametrize("service, method, message", [
    ("draft", "/specdec.v1.Draft/EndSession", draft_pb2.DraftEndSessionRequest),
    ("ngram_draft", "/specdec.v1.Draft/EndSession", draft_pb2.DraftEndSessionRequest),
    ("target", "/specdec.v1.Target/EndSession", target_pb2.TargetEndSessionRequest),
])
def test_end_session(stack: FuzzStack, service: str, method: str, message: type) -> None:
    @FUZZ
    @given(session_id=fs.session_ids(), junk=fs.unknown_fields())
    def case(session_id: str, junk: bytes) -> None:
        reply, error = stack.unary(service, method, message(session_id=session_id).SerializeToString() + junk)
        assert error is None  # a hint: any session id, known or not, is fine

    case()
    stack.assert_serving()


@pytest.mark.parametrize("service, method, response", [
    ("draft", "/specdec.v1.Draft/GetModelInfo", draft_pb2.DraftGetModelInfoResponse),
    ("ngram_draft", "/specdec.v1.Draft/GetModelInfo", draft_pb2.DraftGetModelInfoResponse),
    ("target", "/specdec.v1.Target/GetModelInfo", target_pb2.TargetGetModelInfoResponse),
])
def test_get_model_info(stack: FuzzStack, service: str, method: str, response: type) -> None:
    expected = response.FromString(stack.unary(service, method, b"")[0])

    @FUZZ
    @given(junk=st.one_of(fs.unknown_fields(), st.lists(fs.unknown_fields(), max_size=20).map(b"".join)))
    def case(junk: bytes) -> None:
        reply, error = stack.unary(service, method, junk)  # the request has no fields: all of it is unknown
        assert error is None and response.FromString(reply) == expected

    case()
    stack.assert_serving()


@pytest.mark.parametrize("service, method", [
    ("draft", "/specdec.v1.Draft/Propose"), ("target", "/specdec.v1.Target/Score"),
    ("draft", "/specdec.v1.Draft/ProposeStream"), ("target", "/specdec.v1.Target/ScoreStream"),
])
def test_a_request_that_does_not_parse_is_invalid_argument(stack: FuzzStack, service: str, method: str) -> None:
    corrupt = b"\x0a\x02\xc3\x28"  # field 1 (session_id), a string that is not UTF-8
    if method.endswith("Stream"):
        stack.streaming(service, method, [b"\x0a\x04" + corrupt])
    else:
        stack.unary(service, method, corrupt)


def check_proposal(request: draft_pb2.ProposeRequest, reply: draft_pb2.ProposeResponse) -> None:
    assert len(reply.token_ids) <= request.num_tokens
    assert reply.compute_seconds >= 0


def check_score(request: target_pb2.ScoreRequest, reply: target_pb2.ScoreResponse) -> None:
    assert 0 <= reply.num_accepted <= len(request.draft_token_ids)
    assert reply.HasField("next_token") and 0 <= reply.next_token < fs.VOCAB
