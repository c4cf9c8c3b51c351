"""The OpenAI-compatible HTTP API: the second front door of the orchestrator.

`POST /v1/completions` and `POST /v1/chat/completions` (streamed as server-sent events or not),
`GET /v1/models`, `GET /health` and `GET /metrics`, served by Starlette on uvicorn in the
orchestrator's own process and event loop. A request body becomes the same GenerateRequest a gRPC
client sends and takes the same path (GenerationServicer.generate): the same validation and
messages, the same loop, the same tokens. OpenAI's defaults apply where the two APIs differ:
temperature 1 unless set (gRPC: greedy). Our own fields ride as extra body fields: top_k,
num_speculative_tokens, draft, lenience, ignore_eos. Each response carries the request's
speculative statistics under `spec_decode` (the final chunk, when streaming).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import uvicorn
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from orchestrator.read_ahead import read_ahead
from orchestrator.servicer import GenerationServicer
from specdec.runtime.errors import InvalidArgument, Unavailable, status_of
from specdec.runtime.tls import TlsFiles
from specdec.v1 import generation_pb2

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}
_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
# Body fields OpenAI defines that we cannot honour, and the value that means "not used".
_UNSUPPORTED = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "frequency_penalty": (None, 0),
                "presence_penalty": (None, 0), "logit_bias": (None, {}), "tools": (None, []), "functions": (None, []),
                "echo": (None, False), "best_of": (None, 1), "suffix": (None, "")}
_DISCONNECT_POLL_S = 0.25


class NotFound(LookupError):
    """Becomes 404 with this message."""


def build_app(servicer: GenerationServicer) -> Starlette:
    @_openai_errors
    async def completions(request: Request) -> Response:
        return await _respond(servicer, request, chat=False)

    @_openai_errors
    async def chat_completions(request: Request) -> Response:
        return await _respond(servicer, request, chat=True)

    @_openai_errors
    async def models(request: Request) -> Response:
        servicer.check_token(request.headers.get("authorization"))
        if not servicer.ready:
            raise Unavailable("the orchestrator is still connecting to its upstreams; retry shortly")
        return JSONResponse({"object": "list", "data": [
            {"id": servicer.model, "object": "model", "created": 0, "owned_by": "specdec"}]})

    async def health(request: Request) -> Response:
        return Response(status_code=200 if servicer.ready else 503)

    return Starlette(routes=[
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Mount("/metrics", make_asgi_app()),
    ])


class _Uvicorn(uvicorn.Server):
    """uvicorn leaving signals to the gRPC server it runs beside, which stops it on SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpServer:
    """uvicorn serving `app` inside the running event loop, started and stopped with the gRPC server."""

    def __init__(self, app: Starlette, host: str, port: int, tls: TlsFiles | None = None) -> None:
        """With `tls`, HTTPS with the gRPC server's certificate (clients are not asked for one)."""
        certificate = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)} if tls else {}
        self._server = _Uvicorn(uvicorn.Config(app, host=host, port=port, lifespan="off", log_config=None,
                                               access_log=False, **certificate))
        self._serving: asyncio.Task | None = None

    async def start(self) -> None:
        self._serving = asyncio.create_task(self._server.serve())
        while not self._server.started:  # bound; a port that is taken ends the task (and the process)
            if self._serving.done():
                self._serving.result()
                raise RuntimeError("the HTTP API stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self, grace_s: float) -> None:
        self._server.config.timeout_graceful_shutdown = max(int(grace_s), 1)
        self._server.should_exit = True
        if self._serving is not None:
            await self._serving


def _openai_errors(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every error an endpoint raises becomes an OpenAI-style body with a fitting status."""

    async def handle(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as error:  # noqa: BLE001 - mapped, as gRPC's interceptor maps it
            return _error_response(*_http_error(error))

    return handle


async def _respond(servicer: GenerationServicer, http: Request, *, chat: bool) -> Response:
    servicer.check_token(http.headers.get("authorization"))
    body = await _json_body(http)
    request, stream, include_usage = _to_request(body, chat)
    if body.get("model") not in (None, servicer.model):
        raise NotFound(f"model {body['model']!r} is not served here; GET /v1/models lists {servicer.model!r}")
    # Generated in a task of its own (read_ahead), so that the first chunk, read here, and the rest,
    # read by the response's task, come from one context (the request's trace span lives there).
    chunks = read_ahead(servicer.generate(request, deadline=None))
    kind = _Kind(chat, servicer.model)
    if stream:
        first = await anext(chunks)  # errors before the first token still get a status code
        return StreamingResponse(_events(first, chunks, kind, include_usage), media_type="text/event-stream")
    return JSONResponse(await _unless_disconnected(http, _whole(chunks, kind)))


class _Kind:
    """The shape of one endpoint's responses."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        self.created = int(time.time())
        self.model = model

    def envelope(self, object_: str, choices: list[dict], **extra: Any) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def choice(self, text: str, finish_reason: str | None, first: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            return {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}


async def _whole(chunks: AsyncIterator[generation_pb2.GenerateResponse], kind: _Kind) -> dict:
    text, last = [], generation_pb2.GenerateResponse()
    async with contextlib.aclosing(chunks):  # cancelled (the client left): the generation stops too
        async for chunk in chunks:
            text.append(chunk.text)
            last = chunk
    finish_reason = _FINISH_REASONS[last.finish_reason]
    content = "".join(text)
    choice = ({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
              if kind.chat else {"index": 0, "text": content, "finish_reason": finish_reason, "logprobs": None})
    return kind.envelope(kind.object, [choice], usage=_usage(last.stats), spec_decode=_spec_decode(last.stats))


async def _events(
    first: generation_pb2.GenerateResponse,
    chunks: AsyncIterator[generation_pb2.GenerateResponse],
    kind: _Kind,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events; closing this generator (the client went away) cancels the generation."""
    usage_field = {"usage": None} if include_usage else {}
    try:
        chunk, is_first = first, True
        while True:
            done = bool(chunk.finish_reason)
            extra = {**usage_field, "spec_decode": _spec_decode(chunk.stats)} if done else usage_field
            choice = kind.choice(chunk.text, _FINISH_REASONS[chunk.finish_reason] if done else None, is_first)
            yield _event(kind.envelope(kind.chunk_object, [choice], **extra))
            if done:
                break
            chunk, is_first = await anext(chunks), False
        if include_usage:
            yield _event(kind.envelope(kind.chunk_object, [], usage=_usage(chunk.stats)))
    except Exception as error:  # noqa: BLE001 - mid-stream, the status line is gone: an error event
        status, kind_name, message = _http_error(error)
        yield _event({"error": {"message": message, "type": kind_name, "param": None, "code": status}})
    finally:
        await chunks.aclose()
    yield "data: [DONE]\n\n"


async def _unless_disconnected(http: Request, work: Any) -> Any:
    """Awaits `work`, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await http.is_disconnected():
                task.cancel()
                raise asyncio.CancelledError("the client disconnected")
    finally:
        task.cancel()


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _usage(stats: generation_pb2.GenerationStats) -> dict:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generated_tokens,
            "total_tokens": stats.prompt_tokens + stats.generated_tokens}


def _spec_decode(stats: generation_pb2.GenerationStats) -> dict:
    """The request's speculative statistics, named as vLLM's spec-decode metrics are."""
    return {"draft": stats.draft, "num_draft_tokens": stats.drafted_tokens,
            "num_accepted_tokens": stats.accepted_tokens, "acceptance_rate": stats.acceptance_rate,
            "target_calls": stats.target_calls, "mean_accepted_tokens": stats.mean_accepted_tokens,
            "num_lookup_draft_tokens": stats.lookup_drafted_tokens}


async def _json_body(http: Request) -> dict:
    try:
        body = await http.json()
    except ValueError as error:
        raise InvalidArgument(f"the body is not valid JSON: {error}") from None
    except RecursionError:  # json.loads recurses once per level of nesting
        raise InvalidArgument("the body is JSON nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object")
    return body


def _to_request(body: dict, chat: bool) -> tuple[generation_pb2.GenerateRequest, bool, bool]:
    """(the GenerateRequest, stream?, include usage?) for an OpenAI request body."""
    for name, unused in _UNSUPPORTED.items():
        if body.get(name) not in unused:
            raise InvalidArgument(f"`{name}` is not supported by this server")
    if _get(body, "n", int, 1) != 1:
        raise InvalidArgument("`n` must be 1: this server returns one choice per request")
    request = generation_pb2.GenerateRequest(
        max_new_tokens=_get(body, "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens",
                            int, 0),
        temperature=_get(body, "temperature", float, 1.0),  # OpenAI's default, not gRPC's greedy one
        top_p=_get(body, "top_p", float, 1.0),
        top_k=_get(body, "top_k", int, 0),
        num_speculative_tokens=_get(body, "num_speculative_tokens", int, 0),
        draft=_get(body, "draft", str, ""),
        lenience=_get(body, "lenience", float, 0.0),
        ignore_eos=_get(body, "ignore_eos", bool, False),
        stop=_stop_strings(body.get("stop")),
    )
    if body.get("seed") is not None:
        request.seed = _get(body, "seed", int, 0, _UINT64)
    if chat:
        request.messages.extend(_messages(body.get("messages")))
    else:
        _set_prompt(request, body.get("prompt"))
    stream = _get(body, "stream", bool, False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidArgument("`stream_options` must be an object")
    return request, stream, stream and _get(options, "include_usage", bool, False)


_INT32, _UINT64 = (-(2**31), 2**31 - 1), (0, 2**64 - 1)  # what the GenerateRequest fields hold


def _get(body: dict, name: str, kind: type, default: Any, bounds: tuple[int, int] = _INT32) -> Any:
    """body[name] as `kind` (JSON null = the default), or InvalidArgument naming the field.
    Integers must lie in `bounds`; strings must be encodable as UTF-8."""
    value = body.get(name)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = _as_float(value, name)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidArgument(f"`{name}` must be {_KIND_NAMES[kind]}, got {_excerpt(value)}")
    if kind is int and not bounds[0] <= value <= bounds[1]:
        raise InvalidArgument(f"`{name}` must be an integer in [{bounds[0]}, {bounds[1]}], got {_excerpt(value)}")
    return _text(value, f"`{name}`") if kind is str else value


_KIND_NAMES: dict[type, str] = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _as_float(value: int, name: str) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        raise InvalidArgument(f"`{name}` is out of range: got {_excerpt(value)}") from None


def _excerpt(value: Any) -> str:
    """The start of `value` as JSON, for a message (huge integers included)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {len(str(value))} digits"
    return json.dumps(value)[:80]


def _text(value: str, what: str) -> str:
    """`value`, or InvalidArgument if it holds lone surrogates (JSON's unpaired "\\ud800"), which no
    UTF-8 string, so no protobuf string, can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgument(
            f"{what} holds an unpaired UTF-16 surrogate ({value[error.start]!r} at index {error.start}); "
            "send valid Unicode text"
        ) from None
    return value


def _stop_strings(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidArgument("`stop` must be a string or a list of strings")
    return [_text(s, "a `stop` string") for s in stops]


def _messages(messages: Any) -> list[generation_pb2.Message]:
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument("`messages` must be a non-empty list of {role, content} objects")
    converted = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidArgument("every message needs a `role` string and a `content`")
        content = _text(_content(message.get("content")), "a message's `content`")
        converted.append(generation_pb2.Message(role=_text(message["role"], "a message's `role`"), content=content))
    return converted


def _content(content: Any) -> str:
    """A message's text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text", ""), str) for p in content
    ):
        return "".join(p.get("text", "") for p in content)
    raise InvalidArgument('a message\'s `content` must be a string or a list of {"type": "text", "text": string} parts')


def _set_prompt(request: generation_pb2.GenerateRequest, prompt: Any) -> None:
    """A string, a list of one string, token ids, or a list of one list of token ids."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        request.prompt = _text(prompt, "`prompt`")
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        if not all(_INT32[0] <= t <= _INT32[1] for t in prompt):
            raise InvalidArgument("`prompt` token ids must be 32-bit integers (ids of the model's vocabulary)")
        request.prompt_token_ids.extend(prompt)
    else:
        raise InvalidArgument("`prompt` must be a string or a list of token ids (one prompt per request)")


def _http_error(error: Exception) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, message) for an error, with the message gRPC would give."""
    if isinstance(error, NotFound):
        return 404, "not_found_error", str(error)
    code, message = status_of(error, "the HTTP API")
    status, kind = _HTTP_STATUS.get(code, (500, "internal_error"))
    return status, kind, message


def _error_response(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                        status_code=status)

