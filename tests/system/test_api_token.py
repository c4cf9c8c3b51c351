"""Bearer tokens on the public API, through real processes: gRPC metadata, the HTTP header through
the `openai` client, and `specdec generate`; health checking stays open."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import openai
import pytest

from orchestrator.auth import ApiTokens
from specdec.cli.health import check_health
from specdec.cli.launcher import free_port
from specdec.v1 import generation_pb2, generation_pb2_grpc
from tests.stack import Stack

TOKENS = ("old-token-being-rotated-out", "s3cret-token")


def test_only_a_valid_bearer_token_gets_through(tiny_target, tiny_draft, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("\n".join(TOKENS) + "\n")
    http_port = free_port()
    stack = Stack(str(tiny_target), str(tiny_draft), "--api-token-file", str(token_file), "--http-port",
                  str(http_port), threads=1)
    request = generation_pb2.GenerateRequest(prompt="abc", max_new_tokens=4, ignore_eos=True)

    async def grpc_call(metadata):
        async with grpc.aio.insecure_channel(stack.address) as channel:
            chunks = generation_pb2_grpc.GenerationStub(channel).Generate(request, timeout=30, metadata=metadata)
            return [t async for c in chunks for t in c.token_ids]

    try:
        refusals = {}
        for name, metadata in {"none": None, "wrong": [("authorization", "Bearer guess")],
                               "not bearer": [("authorization", f"Basic {TOKENS[1]}")]}.items():
            with pytest.raises(grpc.aio.AioRpcError) as error:
                asyncio.run(grpc_call(metadata))
            refusals[name] = error.value
        for token in TOKENS:  # either token of the file works
            assert len(asyncio.run(grpc_call([("authorization", f"Bearer {token}")]))) == 4
        assert asyncio.run(check_health(stack.address))  # probes need no token

        url = f"http://127.0.0.1:{http_port}/v1"
        with openai.OpenAI(base_url=url, api_key="guess", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as http_refusal:
                client.completions.create(model=stack.target_model, prompt="abc", max_tokens=2)
        with openai.OpenAI(base_url=url, api_key=TOKENS[1], max_retries=0) as client:
            assert client.completions.create(model=stack.target_model, prompt="abc", max_tokens=2).usage
        cli = subprocess.run([sys.executable, "-m", "specdec", "generate", "abc", "--raw", "--max-new-tokens", "3",
                              "--address", stack.address, "--api-token-file", str(token_file), "--json"],
                             capture_output=True, text=True, timeout=60)
    finally:
        stack.close()
    assert all(error.code() == grpc.StatusCode.UNAUTHENTICATED for error in refusals.values())
    assert "authorization: Bearer <token>" in refusals["none"].details()
    assert http_refusal.value.status_code == 401
    assert cli.returncode == 0 and '"finish_reason"' in cli.stdout


def test_an_empty_token_file_is_refused_and_tokens_must_match_whole(tmp_path):
    (tmp_path / "empty").write_text("\n  \n")
    with pytest.raises(ValueError, match="at least one token"):
        ApiTokens.load(tmp_path / "empty")
    assert not ApiTokens(["a"]).authorized("Bearer ab") and ApiTokens(["a"]).authorized("bearer a")
