"""What can go wrong in a service, and the one place that turns it into a gRPC status.

Servicers raise plain exceptions; `ErrorInterceptor`, installed on every server, maps each to the
status that fits, so no method of any service can answer UNKNOWN:

- our own exceptions below (InvalidArgument, ...): their status, with their message;
- a request that does not parse: INVALID_ARGUMENT;
- a failed upstream call (grpc.aio.AioRpcError, the orchestrator's calls to draft and target):
  the upstream's status, so UNAVAILABLE stays UNAVAILABLE and DEADLINE_EXCEEDED stays
  DEADLINE_EXCEEDED (an upstream UNKNOWN becomes INTERNAL);
- anything else: INTERNAL, with the traceback in the service's log.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

log = logging.getLogger("specdec")


class InvalidArgument(ValueError):
    """Bad input from the caller; becomes INVALID_ARGUMENT with this message."""


class FailedPrecondition(RuntimeError):
    """The request is valid but this deployment cannot serve it; becomes FAILED_PRECONDITION."""


class Unavailable(RuntimeError):
    """Not ready yet (or going away): the caller should retry; becomes UNAVAILABLE."""


class Unauthenticated(PermissionError):
    """No valid credentials; becomes UNAUTHENTICATED with this message."""


class ResourceExhausted(RuntimeError):
    """At a limit (streams running and waiting): retry later; becomes RESOURCE_EXHAUSTED."""


_STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}


def status_of(error: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and message a client gets for `error`, raised by `method`."""
    for kind, code in _STATUS_OF.items():
        if isinstance(error, kind):
            return code, str(error)
    if isinstance(error, DecodeError):  # a streamed message that does not parse
        return grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message: {error}"
    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        return (grpc.StatusCode.INTERNAL if code == grpc.StatusCode.UNKNOWN else code), f"upstream: {error.details()}"
    log.error("%s failed", method, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error in {method} ({type(error).__name__}: {error}); see the service's log"


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every method's handler so that its exceptions become fitting statuses."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        method = handler_call_details.method
        wrap = _streaming if handler.response_streaming else _unary
        kind = ("stream" if handler.request_streaming else "unary") + "_" + (
            "stream" if handler.response_streaming else "unary")
        behavior = getattr(handler, kind)
        deserializer = handler.request_deserializer
        if not handler.request_streaming and deserializer is not None:
            # gRPC parses a unary request before any handler runs, and answers UNKNOWN if that fails.
            deserializer = _parse_or_mark(deserializer)
        return getattr(grpc, f"{kind}_rpc_method_handler")(
            wrap(behavior, method),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )


class _Unparsable:
    """A unary request that did not parse, handed to the method's wrapper to refuse."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _parse_or_mark(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as error:
            return _Unparsable(error)

    return parse


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method: str) -> None:
    code, details = status_of(error, method)
    await context.abort(code, details)


def _unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if isinstance(request, _Unparsable):
                raise request.error
            return await behavior(request, context)
        except grpc.aio.AbortError:  # the method aborted with a status of its own choosing
            raise
        except Exception as error:  # noqa: BLE001 - mapped to a status, never UNKNOWN
            await _abort(context, error, method)

    return handle


def _streaming(behavior: Callable[..., Any], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            if isinstance(request, _Unparsable):
                raise request.error
            responses = behavior(request, context)
            if inspect.isasyncgen(responses):
                async for response in responses:
                    yield response
            else:  # a method that writes with context.write() and returns nothing
                await responses
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await _abort(context, error, method)

    return handle
