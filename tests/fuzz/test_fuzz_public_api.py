"""Property-based fuzzing of the public API: specdec.v1.Generation/Generate over gRPC, and the
OpenAI-compatible HTTP API (POST /v1/completions, /v1/chat/completions) with arbitrary JSON bodies:
1,000 cases each, against real in-process servers on loopback (the HTTP API runs beside the
orchestrator's gRPC server, in its event loop).

Each case ends in a response or an error a client can act on, within the per-call timeout: never
UNKNOWN or INTERNAL (HTTP: never a 5xx, streamed error events included); afterwards every service is
still SERVING.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specdec.v1 import generation_pb2
from tests.fuzz import strategies as fs
from tests.fuzz.harness import FUZZ, FuzzStack, assert_clean_http


def test_generate(stack: FuzzStack) -> None:
    @FUZZ
    @given(request=fs.generate_requests(), junk=fs.unknown_fields(), cancel_after=st.one_of(st.none(), st.just(1)))
    def case(request: generation_pb2.GenerateRequest, junk: bytes, cancel_after: int | None) -> None:
        replies, error = stack.server_streaming("orchestrator", "/specdec.v1.Generation/Generate",
                                                request.SerializeToString() + junk, cancel_after=cancel_after)
        chunks = [generation_pb2.GenerateResponse.FromString(r) for r in replies]
        if error is None and cancel_after is None:
            assert chunks and chunks[-1].finish_reason in ("length", "stop", "eos")
            assert not any(c.finish_reason for c in chunks[:-1])
            if request.max_new_tokens > 0:
                assert chunks[-1].stats.generated_tokens <= request.max_new_tokens

    case()
    stack.assert_serving()


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_http_post(stack: FuzzStack, path: str, fuzz_models) -> None:
    bodies = fs.http_bodies(chat=path.endswith("chat/completions"), model=str(fuzz_models[0]))
    encoded = bodies.map(lambda body: json.dumps(body).encode())  # NaN and Infinity as Python writes them
    @FUZZ
    @given(body=st.one_of(encoded, encoded, encoded, fs.RAW_BODIES))
    def case(body: bytes) -> None:
        assert_clean_http(*stack.http("POST", path, body))

    case()
    status, body = stack.http("GET", "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == str(fuzz_models[0])
    stack.assert_serving()
