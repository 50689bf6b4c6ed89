"""The linker service: what the endpoint serves, apart from HTTP (vLLM's `serving_chat.py`).

One `ChatService` owns the linker, the settings, the requests in flight and the attack limiter;
the routes (`retlink.serve.app`) only translate HTTP. A request's place among those in flight
is a `Slot`, released exactly once: a plain completion holds it with `async with`, a stream
hands it to its generator, which holds it with `async with` too, and the streaming response
releases it in its `finally` even when the client left before the generator started, so an
abandoned stream always gives its slot back (and its link is cancelled).

`InFlight` is the one count of requests in flight: it refuses beyond the limit (429, at once
rather than a queue that hides overload) and it is what the graceful shutdown waits for
(`retlink.serve.middleware.Drain`). Every request that runs for long holds a slot (links and
attacks); the quick ones (health, entities, the page) are left to uvicorn's own shutdown.

`stream: true` answers with server-sent events in OpenAI's chunk format: one chunk per graph
node as it completes (its progress line in `delta.reasoning`, the node's trace event under
`retlink_node`), then the chain of thought, then the answer, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request

from retlink.core.errors import RetlinkError
from retlink.core.types import LinkResult, TraceEvent
from retlink.serve.attack import AttackLimiter, AttackRequest, AttackResponse, AttackSettings, run_attack
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
    ServerError,
    Usage,
    completion_id,
)
from retlink.tools.net_guard import HostPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

#: the bundled demo (images and examples) the page offers, present in a source checkout
DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"


class ServerSettings(BaseModel):
    """Everything the endpoint enforces. Defaults suit one small CPU box. Strict: an unknown key
    is an error, not a setting silently ignored."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    #: a TCP port; 0 (any free port) is refused, since the log would name port 0
    port: int = 8000
    model_name: str = "retlink"
    #: None: no authentication (bind to loopback then; `serve` warns otherwise). Never empty:
    #: an empty key would let `Authorization: Bearer ` in
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
    #: 503 with `Retry-After: retry_after_s` (retlink.serve.launcher); then the process exits
    shutdown_grace_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(5, ge=1)
    #: the Attack panel's endpoint (off unless enabled)
    attack: AttackSettings = AttackSettings()
    #: the demo images the page offers (None: none)
    demo_dir: Path | None = DEMO_DIR if DEMO_DIR.is_dir() else None

    @field_validator("port")
    @classmethod
    def _tcp_port(cls, port: int) -> int:
        if not 1 <= port <= 65535:
            raise ValueError(f"must be a TCP port from 1 to 65535, not {port}")
        return port

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, key: str | None) -> str | None:
        if key is None:
            return None
        if not key:
            raise ValueError("must not be empty (an empty key would let 'Authorization: Bearer ' in); "
                             "leave the key out to serve without one")
        if not all("!" <= c <= "~" for c in key):
            raise ValueError("must be printable ASCII without spaces (an HTTP header carries it)")
        return key


class Slot:
    """One request's place among those in flight. Released exactly once, whoever gets there
    first: the `async with` of the code that serves the request, or the streaming response's
    `finally`."""

    def __init__(self, in_flight: InFlight) -> None:
        self.in_flight = in_flight
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.in_flight.active -= 1

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class InFlight:
    """The requests in flight: the concurrency limit (429 beyond it) and what the drain waits
    for. One event loop updates it, so no lock."""

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


class ClientDisconnected(RetlinkError):
    """The client closed the connection before the answer was ready (nginx's 499)."""

    http_status = 499
    error_type = "client_closed_request"


async def _disconnected(request: Request) -> None:
    # the body has been read by now, so the next ASGI message is the disconnect (uvicorn sends
    # it when the socket closes, and only then)
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, cancelled (then ClientDisconnected) if the client disconnects first.

    Starlette keeps running a handler whose client has gone; for a link that is tens of seconds
    of CPU holding a slot for an answer nobody reads. (A stream needs none of this: Starlette
    stops its generator on disconnect.)"""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        log.info("client disconnected: cancelling its request")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected("the client disconnected before the answer was ready")
    finally:
        task.cancel()
        watch.cancel()


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


def public_result(result: LinkResult) -> dict[str, Any]:
    """A LinkResult as clients get it: without the decision layer's pool features (about 50 rows
    of floats per link, training data for `retlink train`, which reads them from eval records)."""
    return result.model_dump(mode="json", exclude={"features"})


class LinkerHolder:
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


class ChatService:
    """What the endpoint serves, apart from HTTP: the linker, the settings, the requests in
    flight, the attack limiter and the image-URL policy, in one object the routes call."""

    def __init__(self, linker: Any, settings: ServerSettings) -> None:
        self.settings = settings
        self.holder = LinkerHolder(linker)
        self.in_flight = InFlight(settings.max_concurrent_requests)
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
        async with self.in_flight.reserve():
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
        slot = self.in_flight.reserve()
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
        folder = self.settings.demo_dir
        examples = folder / "examples.jsonl" if folder else None
        if examples is None or not examples.is_file():
            return []
        rows = [json.loads(line) for line in examples.read_text().splitlines() if line.strip()]
        return [{"id": r["id"], "image": f"/demo/{r['image']}", "context": r["context"]} for r in rows]

    def page(self) -> dict[str, Any]:
        """What the page needs to know before it asks anything (no secrets)."""
        s = self.settings
        return {"model": s.model_name, "needs_key": s.api_key is not None, "attack": s.attack.enabled,
                "max_steps": s.attack.max_steps, "max_eps": s.attack.max_eps, "demo": self.demo()}

    async def attack(self, req: AttackRequest) -> AttackResponse:
        """An attack holds a slot like a link: seconds of CPU the drain must wait for."""
        kb = self.kb() if self.settings.attack.enabled else None
        async with self.in_flight.reserve():
            return await run_attack(req, self.settings.attack, self.attacks, kb)
