"""The chat endpoint: the linking agent behind an OpenAI-compatible API (FastAPI + uvicorn).

    POST /v1/chat/completions   last user message: text with the mention in [brackets] + one image
    GET  /v1/models             the one served "model" (the agent)
    GET  /health                the process is up
    GET  /ready                 the linker is loaded (503 while it loads or if loading failed)

`stream: true` answers with server-sent events in OpenAI's chunk format: one chunk per graph
node as it completes (its progress line in `delta.reasoning`, the node's trace event under
`retlink_node`), then the chain of thought, then the answer, then `data: [DONE]`.

Limits (`ServerSettings`): request body bytes (413, checked on Content-Length and while
reading), image bytes and pixels (413), concurrent requests in the server (429 beyond them,
at once rather than a queue that hides overload), a per-request timeout (504), an optional
bearer API key (401). Every error is OpenAI's error JSON with the status of `retlink.errors`.

Routing, protocol models (`server_protocol`) and input parsing (`server_inputs`) are kept apart,
as in vLLM's `entrypoints/openai`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from retlink.errors import RetlinkError
from retlink.server_inputs import load_request_image, parse_request
from retlink.server_protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    CompletionChoice,
    Delta,
    ErrorBody,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
    completion_id,
)
from retlink.tools.net_guard import HostPolicy
from retlink.types import LinkResult, TraceEvent

log = logging.getLogger(__name__)


class ServerSettings(BaseModel):
    """Everything the endpoint enforces. Defaults suit one small CPU box."""

    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = "retlink"
    #: None: no authentication (bind to loopback then)
    api_key: str | None = None
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=64)
    max_concurrent_requests: int = Field(16, ge=1)
    request_timeout_s: float = Field(300.0, gt=0)
    image_fetch_timeout_s: float = Field(10.0, gt=0)
    #: hosts that image URLs may reach although they are private/loopback (tests, intranets)
    image_allow_hosts: list[str] = Field(default_factory=list)
    #: seconds an idle keep-alive connection stays open. It must outlast what clients' connection
    #: pools keep idle (httpx and the openai client: 5 s), so that the client always drops an idle
    #: connection first; with equal timers (uvicorn's own default is 5 s) a request sent on a
    #: pooled connection can cross the server's close and fail with "Server disconnected without
    #: sending a response". 75 s is also longer than a link takes on a loaded CPU box.
    keep_alive_s: float = Field(75.0, gt=0)


class ServerError(RetlinkError):
    """An error the endpoint itself raises, with its status and OpenAI error type."""

    def __init__(self, message: str, status: int, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.error_type = error_type
        self.code = code


def error_json(status: int, message: str, error_type: str, code: str | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=error_type, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, by Content-Length or while reading."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = error_json(413, self._message(int(declared)), "invalid_request_error", "body_too_large")
            return await response(scope, receive, send)
        if declared:  # the HTTP layer holds the body to its declared length
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): read the body here, within the limit, then replay it.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                response = error_json(413, self._message(len(body)), "invalid_request_error", "body_too_large")
                return await response(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self, size: int) -> str:
        return f"request body is {size:,}+ bytes, over the limit of {self.max_bytes:,}"


class _Gate:
    """Counts requests in flight; refuses beyond the limit instead of queueing (429)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise ServerError(
                f"too many concurrent requests (limit {self.limit}); retry shortly",
                429, "rate_limit_error", "too_many_requests",
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


def answer_text(result: LinkResult) -> str:
    """The assistant's reply: the entity (or NIL) on the first line, then the rationale."""
    if result.entity is None:
        head = f"NIL: no knowledge-base entity matches \"{result.mention}\"."
    else:
        head = f"{result.entity.name} ({result.entity.id})"
    return f"{head}\n\n{result.rationale}".strip()


def progress_line(event: TraceEvent) -> str:
    skipped = f" (skipped: {event.skipped})" if event.skipped else ""
    return f"[{event.node}] done in {event.seconds:.2f}s{skipped}\n"


def _sse(chunk: BaseModel | str) -> str:
    data = chunk if isinstance(chunk, str) else chunk.model_dump_json(exclude_none=True)
    return f"data: {data}\n\n"


class _LinkerHolder:
    """The linker, or the factory that loads it in the background (then /ready says when)."""

    def __init__(self, linker: Any) -> None:
        self.factory: Callable[[], Any] | None = linker if callable(linker) and not hasattr(linker, "alink") else None
        self.linker = None if self.factory else linker
        self.error: BaseException | None = None

    async def load(self) -> None:
        if self.factory is None:
            return
        try:
            self.linker = await asyncio.to_thread(self.factory)
            log.info("linker loaded; ready")
        except Exception as e:  # reported by /ready and every request, never a crash loop
            log.exception("loading the linker failed")
            self.error = e

    def get(self) -> Any:
        if self.linker is not None:
            return self.linker
        if self.error is not None:
            raise ServerError(f"the linker failed to load: {self.error}", 503, "server_error", "not_ready")
        raise ServerError("the linker is still loading; retry shortly", 503, "server_error", "not_ready")


def create_app(linker: Any, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app over a `Linker` (or a zero-argument factory that builds one at startup)."""
    settings = settings or ServerSettings()
    holder = _LinkerHolder(linker)
    gate = _Gate(settings.max_concurrent_requests)
    policy = HostPolicy.from_entries(settings.image_allow_hosts)
    loader: list[asyncio.Task] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        loader.append(asyncio.create_task(holder.load()))
        yield
        loader[0].cancel()

    app = FastAPI(title="retlink", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.state.settings = settings
    app.state.gate = gate

    @app.exception_handler(RetlinkError)
    async def _retlink_error(_req: Request, e: RetlinkError) -> JSONResponse:
        return error_json(e.http_status, str(e), e.error_type, getattr(e, "code", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_json(400, f"invalid request: {where or 'body'}: {first.get('msg')}", "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_json(e.status_code, str(e.detail), "invalid_request_error")

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_json(500, f"internal error: {type(e).__name__}", "server_error")

    async def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), settings.api_key.encode()):
            raise ServerError("invalid or missing API key (send 'Authorization: Bearer <key>')", 401,
                              "invalid_request_error", "invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        holder.get()
        return {"status": "ready"}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.model_name)])

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)], response_model=None)
    async def chat(req: ChatCompletionRequest) -> ChatCompletion | StreamingResponse:
        if req.model not in (None, "", settings.model_name):
            raise ServerError(f"model {req.model!r} does not exist; this server serves {settings.model_name!r}",
                              404, "invalid_request_error", "model_not_found")
        linker = holder.get()
        gate.enter()
        try:
            inputs = parse_request(req)
            image = await load_request_image(
                inputs.image_source, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                policy=policy, timeout_s=settings.image_fetch_timeout_s,
                search=getattr(getattr(linker, "config", None), "search", None),  # its ca_bundle, user agent
            )
        except BaseException:
            gate.leave()
            raise
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            stream = _stream(linker, image, inputs.mention, inputs.context, settings, gate, include_usage)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            async with asyncio.timeout(settings.request_timeout_s):
                result = await linker.alink(image, inputs.mention, inputs.context)
        except TimeoutError:
            raise ServerError(f"linking took longer than {settings.request_timeout_s:g}s", 504,
                              "server_error", "timeout") from None
        finally:
            gate.leave()
        message = AssistantMessage(content=answer_text(result), reasoning=result.reasoning or None)
        return ChatCompletion(
            id=completion_id(), created=int(time.time()), model=settings.model_name,
            choices=[CompletionChoice(message=message)], retlink=result.model_dump(mode="json"),
        )

    return app


async def _stream(
    linker: Any, image: Any, mention: str, context: str, settings: ServerSettings, gate: _Gate, include_usage: bool
) -> AsyncIterator[str]:
    """SSE chunks for one link; errors after the headers are sent travel in-band as `{"error": ...}`."""
    cid, created, model = completion_id(), int(time.time()), settings.model_name

    def chunk(delta: Delta, **extra: Any) -> ChatCompletionChunk:
        finish = extra.pop("finish_reason", None)
        return ChatCompletionChunk(id=cid, created=created, model=model,
                                   choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra)

    try:
        yield _sse(chunk(Delta(role="assistant", content="")))
        result: LinkResult | None = None
        async with asyncio.timeout(settings.request_timeout_s):
            async for kind, item in linker.astream(image, mention, context):
                if kind == "node":
                    yield _sse(chunk(Delta(reasoning=progress_line(item)), retlink_node=item.model_dump(mode="json")))
                else:
                    result = item
        if result is None:
            raise ServerError("the graph ended without a result", 500, "server_error")
        if result.reasoning:
            yield _sse(chunk(Delta(reasoning=result.reasoning)))
        yield _sse(chunk(Delta(content=answer_text(result))))
        yield _sse(chunk(Delta(), finish_reason="stop", retlink=result.model_dump(mode="json")))
        if include_usage:
            yield _sse(ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=Usage()))
    except TimeoutError:
        yield _sse(ErrorResponse(error=ErrorBody(message=f"linking took longer than {settings.request_timeout_s:g}s",
                                                 type="server_error", code="timeout")))
    except RetlinkError as e:
        yield _sse(ErrorResponse(error=ErrorBody(message=str(e), type=e.error_type, code=getattr(e, "code", None))))
    except Exception as e:
        log.exception("streaming failed")
        yield _sse(ErrorResponse(error=ErrorBody(message=f"internal error: {type(e).__name__}", type="server_error")))
    finally:
        gate.leave()
    yield _sse("[DONE]")


def uvicorn_config(app: Any, settings: ServerSettings, **overrides: Any) -> Any:
    """The uvicorn configuration for `app` under `settings`: the one place that maps the server
    settings onto uvicorn (`serve` and the test servers both use it). `overrides` are uvicorn
    options (e.g. a test's ephemeral port or quieter log level)."""
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "timeout_keep_alive": settings.keep_alive_s,
        "log_level": "info",
    }
    return uvicorn.Config(app, **{**options, **overrides})


def serve(config: Any = None, settings: ServerSettings | None = None) -> None:
    """Run the endpoint with uvicorn (what `retlink serve` calls); the linker loads after bind."""
    import uvicorn

    from retlink.linker import Linker

    settings = settings or ServerSettings()
    if settings.api_key is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key", settings.host)
    app = create_app(lambda: Linker.from_config(config), settings)
    uvicorn.Server(uvicorn_config(app, settings)).run()


__all__ = ["ServerSettings", "create_app", "serve", "uvicorn_config"]
