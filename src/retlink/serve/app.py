"""The chat endpoint: the linking agent behind an OpenAI-compatible API (FastAPI + uvicorn).

    POST /v1/chat/completions   last user message: text with the mention in [brackets] + one image
    GET  /v1/models             the one served "model" (the agent)
    GET  /v1/entities/{id}      a KB entity (name, aliases, description), /image: its first image
    POST /v1/attack             FGSM / PGD on an image, for the page's Attack panel (off by default)
    GET  /                      the web page (static files in `retlink/web`, nothing from a CDN)
    GET  /health                the process is up
    GET  /ready                 the linker is loaded (503 while it loads or if loading failed)

One `ChatService` owns the linker, the settings and the concurrency gate; the routes only
translate HTTP. A request's slot in the gate is a `Slot`, released exactly once: a plain
completion holds it with `async with`, a stream hands it to its generator, which holds it with
`async with` too, and the streaming response releases it in its `finally` even when the client
left before the generator started, so an abandoned stream always gives its slot back (and its
link is cancelled). Every response carries an `X-Request-ID` (the client's, when it sends a sane
one), which the access log line of the request names.

`stream: true` answers with server-sent events in OpenAI's chunk format: one chunk per graph
node as it completes (its progress line in `delta.reasoning`, the node's trace event under
`retlink_node`), then the chain of thought, then the answer, then `data: [DONE]`.

Limits (`ServerSettings`): request body bytes (413, checked on Content-Length and while
reading), image bytes and pixels (413), concurrent requests in the server (429 beyond them,
at once rather than a queue that hides overload), a per-request timeout (504), an optional
bearer API key (401). Every error is OpenAI's error JSON with the status of `retlink.core.errors`.

Routing, protocol models (`server_protocol`) and input parsing (`server_inputs`) are kept apart,
as in vLLM's `entrypoints/openai`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from retlink.core.errors import RetlinkError
from retlink.core.types import LinkResult, TraceEvent
from retlink.serve.attack import AttackLimiter, AttackRequest, AttackResponse, AttackSettings, run_attack
from retlink.serve.cancel import unless_disconnected
from retlink.serve.drain import Drain, DrainGate, DrainingServer
from retlink.serve.inputs import LinkInputs, load_request_image, parse_request
from retlink.serve.protocol import (
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

log = logging.getLogger(__name__)
access_log = logging.getLogger("retlink.access")

WEB_DIR = Path(__file__).resolve().parent / "web"
#: the bundled demo (images and examples) the page offers, present in a source checkout
DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
#: the request being served, for log lines (see `RequestLog`)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


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
    #: on SIGTERM: requests in flight get this long to finish, while new requests are answered
    #: 503 with `Retry-After: retry_after_s` (retlink.serve.drain); then the process exits
    shutdown_grace_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(5, ge=1)
    #: the Attack panel's endpoint (off unless enabled)
    attack: AttackSettings = AttackSettings()
    #: the demo images the page offers (None: none)
    demo_dir: Path | None = DEMO_DIR if DEMO_DIR.is_dir() else None


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


class Slot:
    """One request's place in the gate. Released exactly once, whoever gets there first: the
    `async with` of the code that serves the request, or the streaming response's `finally`."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.gate.active -= 1

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Gate:
    """Counts requests in flight; refuses beyond the limit instead of queueing (429)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def reserve(self) -> Slot:
        if self.active >= self.limit:
            raise ServerError(
                f"too many concurrent requests (limit {self.limit}); retry shortly",
                429, "rate_limit_error", "too_many_requests",
            )
        self.active += 1
        return Slot(self)


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


class SlotStreamingResponse(StreamingResponse):
    """A StreamingResponse that, however it ends (finished, client gone before or during the
    body, cancelled), closes its generator and releases its request's slot."""

    def __init__(self, content: AsyncIterator[str], slot: Slot, **kw: Any) -> None:
        super().__init__(content, **kw)
        self.slot = slot

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # type: ignore[union-attr]
            finally:
                self.slot.release()


def public_result(result: LinkResult) -> dict[str, Any]:
    """A LinkResult as clients get it: without the decision layer's pool features (about 50 rows
    of floats per link, training data for `retlink train`, which reads them from eval records)."""
    return result.model_dump(mode="json", exclude={"features"})


class ChatService:
    """What the endpoint serves, apart from HTTP: the linker, the settings, the gate, the
    attack limiter and the image-URL policy, in one object the routes call."""

    def __init__(self, linker: Any, settings: ServerSettings) -> None:
        self.settings = settings
        self.holder = _LinkerHolder(linker)
        self.gate = Gate(settings.max_concurrent_requests)
        self.policy = HostPolicy.from_entries(settings.image_allow_hosts)
        self.attacks = AttackLimiter(settings.attack.per_minute)

    async def inputs(self, req: ChatCompletionRequest, linker: Any) -> tuple[LinkInputs, Any]:
        inputs = parse_request(req, getattr(getattr(linker, "config", None), "limits", None))
        if inputs.image_source is None:  # a text-only link
            return inputs, None
        image = await load_request_image(
            inputs.image_source, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels,
            policy=self.policy, timeout_s=self.settings.image_fetch_timeout_s,
            search=getattr(getattr(linker, "config", None), "search", None),  # its ca_bundle, user agent
        )
        return inputs, image

    def check_model(self, req: ChatCompletionRequest) -> None:
        if req.model not in (None, "", self.settings.model_name):
            raise ServerError(f"model {req.model!r} does not exist; this server serves {self.settings.model_name!r}",
                              404, "invalid_request_error", "model_not_found")

    async def complete(self, req: ChatCompletionRequest, request: Request | None = None) -> ChatCompletion:
        """One answer; with the HTTP `request`, a client that leaves cancels the link."""
        self.check_model(req)
        linker = self.holder.get()
        async with self.gate.reserve():
            inputs, image = await self.inputs(req, linker)
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    work = linker.alink(image, inputs.mention, inputs.context)
                    result = await (work if request is None else unless_disconnected(request, work))
            except TimeoutError:
                raise ServerError(f"linking took longer than {self.settings.request_timeout_s:g}s", 504,
                                  "server_error", "timeout") from None
        message = AssistantMessage(content=answer_text(result), reasoning=result.reasoning or None)
        return ChatCompletion(
            id=completion_id(), created=int(time.time()), model=self.settings.model_name,
            choices=[CompletionChoice(message=message)], retlink=public_result(result),
        )

    async def stream(self, req: ChatCompletionRequest) -> SlotStreamingResponse:
        """Errors before the first byte (bad input, busy) are HTTP statuses; the slot then goes
        to the generator, which holds it until it ends."""
        self.check_model(req)
        linker = self.holder.get()
        slot = self.gate.reserve()
        try:
            inputs, image = await self.inputs(req, linker)
        except BaseException:
            slot.release()
            raise
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        body = self._chunks(slot, linker, image, inputs, include_usage)
        return SlotStreamingResponse(body, slot, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _chunks(
        self, slot: Slot, linker: Any, image: Any, inputs: LinkInputs, include_usage: bool
    ) -> AsyncIterator[str]:
        """SSE chunks for one link; errors after the headers are sent travel in-band as `{"error": ...}`.
        A client that leaves cancels the link (the graph stops at its next node)."""
        settings = self.settings
        cid, created, model = completion_id(), int(time.time()), settings.model_name

        def chunk(delta: Delta, **extra: Any) -> ChatCompletionChunk:
            finish = extra.pop("finish_reason", None)
            return ChatCompletionChunk(id=cid, created=created, model=model,
                                       choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra)

        async with slot:
            try:
                yield _sse(chunk(Delta(role="assistant", content="")))
                result: LinkResult | None = None
                async with (
                    asyncio.timeout(settings.request_timeout_s),
                    aclosing(linker.astream(image, inputs.mention, inputs.context)) as events,
                ):
                    async for kind, item in events:
                        if kind == "node":
                            yield _sse(chunk(Delta(reasoning=progress_line(item)),
                                             retlink_node=item.model_dump(mode="json")))
                        else:
                            result = item
                if result is None:
                    raise ServerError("the graph ended without a result", 500, "server_error")
                if result.reasoning:
                    yield _sse(chunk(Delta(reasoning=result.reasoning)))
                yield _sse(chunk(Delta(content=answer_text(result))))
                yield _sse(chunk(Delta(), finish_reason="stop", retlink=public_result(result)))
                if include_usage:
                    yield _sse(ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=Usage()))
            except TimeoutError:
                yield _sse(ErrorResponse(error=ErrorBody(
                    message=f"linking took longer than {settings.request_timeout_s:g}s", type="server_error",
                    code="timeout")))
            except RetlinkError as e:
                yield _sse(ErrorResponse(error=ErrorBody(message=str(e), type=e.error_type,
                                                         code=getattr(e, "code", None))))
            except Exception as e:
                log.exception("streaming failed")
                yield _sse(ErrorResponse(error=ErrorBody(message=f"internal error: {type(e).__name__}",
                                                         type="server_error")))
        yield _sse("[DONE]")

    def kb(self) -> Any:
        components = getattr(self.holder.get(), "components", None)
        return getattr(components, "kb", None)

    def entity(self, entity_id: str) -> dict[str, Any]:
        kb = self.kb()
        found = kb.get([entity_id]) if kb is not None else []
        if not found:
            raise ServerError(f"no entity {entity_id!r} in the knowledge base", 404, "invalid_request_error",
                              "entity_not_found")
        e = found[0]
        return {"id": e.id, "name": e.name, "aliases": e.aliases, "description": e.description,
                "image": f"/v1/entities/{e.id}/image" if e.image_paths else None}

    def entity_image(self, entity_id: str) -> Path:
        kb = self.kb()
        found = kb.get([entity_id]) if kb is not None else []
        for rel in found[0].image_paths if found else []:
            path = kb.image_file(rel)
            if path.is_file():
                return path
        raise ServerError(f"entity {entity_id!r} has no image", 404, "invalid_request_error", "no_image")

    def demo(self) -> list[dict[str, str]]:
        """The demo examples the page offers: image URL, sentence."""
        import json

        folder = self.settings.demo_dir
        examples = folder / "examples.jsonl" if folder else None
        if examples is None or not examples.is_file():
            return []
        rows = [json.loads(line) for line in examples.read_text().splitlines() if line.strip()]
        return [{"id": r["id"], "image": f"/demo/{r['image']}", "context": r["context"]} for r in rows]

    async def attack(self, req: AttackRequest) -> AttackResponse:
        kb = self.kb() if self.settings.attack.enabled else None
        return await run_attack(req, self.settings.attack, self.attacks, kb)


class RequestLog:
    """ASGI middleware: a request id on every response (`X-Request-ID`) and one structured access
    log line per request (method, path, status, milliseconds, request id)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started, status = time.perf_counter(), [0]

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - started) * 1000
            access_log.info("%s %s %s %.0fms id=%s", scope.get("method"), scope.get("path"), status[0] or "-", ms,
                            rid, extra={"request_id": rid, "method": scope.get("method"), "path": scope.get("path"),
                                        "status": status[0], "ms": round(ms, 1)})
            request_id.reset(token)


def create_app(linker: Any, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app over a `Linker` (or a zero-argument factory that builds one at startup)."""
    settings = settings or ServerSettings()
    service = ChatService(linker, settings)
    loader: list[asyncio.Task] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        loader.append(asyncio.create_task(service.holder.load()))
        yield
        loader[0].cancel()

    app = FastAPI(title="retlink", lifespan=lifespan)
    drain = Drain(settings.retry_after_s)
    app.add_middleware(DrainGate, drain=drain)  # innermost: a 503 while draining is still logged, with its id
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLog)
    app.state.settings = settings
    app.state.drain = drain
    app.state.service = service
    app.state.gate = service.gate

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
        service.holder.get()
        return {"status": "ready"}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.model_name)])

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)], response_model=None)
    async def chat(req: ChatCompletionRequest, request: Request) -> ChatCompletion | StreamingResponse:
        return await (service.stream(req) if req.stream else service.complete(req, request))

    @app.get("/v1/entities/{entity_id}", dependencies=[Depends(authorize)])
    async def entity(entity_id: str) -> dict[str, Any]:
        return service.entity(entity_id)

    @app.get("/v1/entities/{entity_id}/image", dependencies=[Depends(authorize)])
    async def entity_image(entity_id: str) -> FileResponse:
        return FileResponse(service.entity_image(entity_id))

    @app.post("/v1/attack", dependencies=[Depends(authorize)])
    async def attack(req: AttackRequest) -> AttackResponse:
        return await service.attack(req)

    @app.get("/v1/page")
    async def page_config() -> dict[str, Any]:
        """What the page needs to know before it asks anything (no secrets)."""
        return {"model": settings.model_name, "needs_key": settings.api_key is not None,
                "attack": settings.attack.enabled, "max_steps": settings.attack.max_steps,
                "max_eps": settings.attack.max_eps, "demo": service.demo()}

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    if settings.demo_dir is not None:
        app.mount("/demo", StaticFiles(directory=settings.demo_dir), name="demo")
    return app


def uvicorn_config(app: Any, settings: ServerSettings, **overrides: Any) -> Any:
    """The uvicorn configuration for `app` under `settings`: the one place that maps the server
    settings onto uvicorn (`serve` and the test servers both use it). `overrides` are uvicorn
    options (e.g. a test's ephemeral port or quieter log level)."""
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "access_log": False,  # `RequestLog` writes one structured line per request instead
        "log_level": "info",
    }
    return uvicorn.Config(app, **{**options, **overrides})


def run_app(app: FastAPI, settings: ServerSettings) -> None:
    """Serve `app` with uvicorn until SIGTERM or SIGINT. On either, requests in flight get
    `shutdown_grace_s` to finish while new ones are answered 503 with Retry-After (the drain of
    `retlink.serve.drain`), then the listener closes; a SIGTERM then ends the process with
    status 0 (uvicorn re-raises the signal it caught: the handler installed here turns it into a
    clean exit rather than death by signal). The linker is closed last."""
    import signal

    def terminated(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        DrainingServer(uvicorn_config(app, settings), app.state.drain).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        linker = app.state.service.holder.linker
        if linker is not None and hasattr(linker, "close"):
            linker.close()


def serve(config: Any = None, settings: ServerSettings | None = None) -> None:
    """Run the endpoint with uvicorn (what `retlink serve` calls); the linker loads after bind."""
    from retlink.agent.linker import Linker

    settings = settings or ServerSettings()
    if settings.api_key is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key", settings.host)
    run_app(create_app(lambda: Linker.from_config(config), settings), settings)


__all__ = ["AttackSettings", "ChatService", "ServerSettings", "create_app", "run_app", "serve", "uvicorn_config"]
