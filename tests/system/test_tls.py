"""TLS on every hop and mutual TLS between the services, through real processes on loopback, with a
throwaway CA made with the `cryptography` package."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys

import grpc
import openai
import pytest

from specdec.cli.health import check_health
from specdec.cli.launcher import free_port
from specdec.runtime.tls import TlsFiles, aio_channel, write_stack_certificates
from specdec.v1 import generation_pb2, generation_pb2_grpc, target_pb2, target_pb2_grpc
from tests.stack import Stack

REQUEST = generation_pb2.GenerateRequest(prompt="abc", max_new_tokens=6, ignore_eos=True, draft="model")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> TlsFiles:
    return write_stack_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def stack(tiny_target, tiny_draft, certificates):
    port = free_port()
    stack = Stack(str(tiny_target), str(tiny_draft), "--http-port", str(port), threads=1, tls=certificates)
    stack.http_url = f"https://localhost:{port}"
    yield stack
    stack.close()


def call(address: str, tls: TlsFiles | None, make_call) -> object:
    async def run():
        async with aio_channel(address, tls, server_name="localhost" if tls else None) as channel:
            return await make_call(channel)

    return asyncio.run(run())


async def generate(channel) -> list[int]:
    return [t async for c in generation_pb2_grpc.GenerationStub(channel).Generate(REQUEST, timeout=30)
            for t in c.token_ids]


async def target_info(channel):
    return await target_pb2_grpc.TargetStub(channel).GetModelInfo(target_pb2.TargetGetModelInfoRequest(), timeout=5)


def test_the_public_api_over_tls_checked_against_the_ca(stack, certificates):
    only_the_ca = TlsFiles(None, None, certificates.ca)  # a public client shows no certificate
    assert len(call(stack.address, only_the_ca, generate)) == 6
    with pytest.raises(grpc.aio.AioRpcError) as plaintext:
        call(stack.address, None, generate)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_trusts_another_ca_is_refused(stack, tmp_path):
    stranger = write_stack_certificates(tmp_path / "other")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        call(stack.address, TlsFiles(None, None, stranger.ca), generate)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_draft_and_target_admit_only_clients_with_a_certificate_from_the_ca(stack, certificates, tmp_path):
    assert call(stack.target_address, certificates, target_info).info.vocab_size > 0  # the orchestrator's way in
    for name, files in {"no certificate": TlsFiles(None, None, certificates.ca),
                        "another CA's certificate": _signed_elsewhere(tmp_path, certificates)}.items():
        with pytest.raises(grpc.aio.AioRpcError) as error:
            call(stack.target_address, files, target_info)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE, name


def test_probes_and_the_http_api_speak_tls_too(stack, certificates):
    for address in (stack.address, stack.draft_address, stack.target_address):
        assert asyncio.run(check_health(address, tls=certificates))
        assert not asyncio.run(check_health(address))  # plaintext gets no answer
    cli = subprocess.run([sys.executable, "-m", "specdec", "health", stack.target_address, "--tls-cert",
                          str(certificates.cert), "--tls-key", str(certificates.key), "--tls-ca", str(certificates.ca)],
                         timeout=60)
    assert cli.returncode == 0
    with openai.OpenAI(base_url=stack.http_url + "/v1", api_key="-", max_retries=0,
                       http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=certificates.ca))) as client:
        reply = client.completions.create(model=stack.target_model, prompt="abc", max_tokens=4, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 4


def test_half_a_configuration_is_refused_with_what_is_missing(certificates):
    with pytest.raises(ValueError, match="--tls-cert and --tls-key together"):
        TlsFiles.from_paths(str(certificates.cert), "", str(certificates.ca))
    with pytest.raises(ValueError, match="not found"):
        TlsFiles.from_paths(str(certificates.cert), "/nowhere/key.pem", "")
    assert TlsFiles.from_paths("", "", str(certificates.ca), server=False).ca == certificates.ca


def _signed_elsewhere(tmp_path, certificates: TlsFiles) -> TlsFiles:
    """A valid certificate, but from another CA, with our CA to check the server."""
    other = write_stack_certificates(tmp_path / "elsewhere")
    return TlsFiles(other.cert, other.key, certificates.ca)

