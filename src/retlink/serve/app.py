"""The HTTP routes of the chat endpoint (vLLM's `api_server.py`): the linking agent behind an
OpenAI-compatible API, as a FastAPI router over one `ChatService`.

    POST /v1/chat/completions   last user message: text with the mention in [brackets] + one image
    GET  /v1/models             the one served "model" (the agent)
    GET  /v1/entities/{id}      a KB entity (name, aliases, description), /image: its first image
    POST /v1/attack             FGSM / PGD on an image, for the page's Attack panel (off by default)
    GET  /                      the web page (static files in `serve/web`, nothing from a CDN)
    GET  /health                the process is up
    GET  /ready                 the linker is loaded (503 while it loads or if loading failed)

The routes only translate HTTP: the service (`retlink.serve.service`) does the work, the
protocol models (`retlink.serve.protocol`) are the wire format, the middleware
(`retlink.serve.middleware`) the limits around every request, and the launcher
(`retlink.serve.launcher`) runs it all under uvicorn. The service and the bearer key check are
FastAPI dependencies that read the app's state, so the routes are module-level functions and
`create_app` only assembles.

Limits (`ServerSettings`): request body bytes (413), image bytes and pixels (413), concurrent
requests (429), a per-request timeout (504), an optional bearer API key (401). Every error is
OpenAI's error JSON with the status of `retlink.core.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from retlink.core.errors import RetlinkError
from retlink.serve.attack import AttackRequest, AttackResponse
from retlink.serve.middleware import BodyLimit, Drain, DrainGate, RequestLog, ServerErrors
from retlink.serve.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    ServerError,
    error_json,
)
from retlink.serve.service import ChatService, ServerSettings

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"


def get_service(request: Request) -> ChatService:
    """The app's one service (a dependency, so routes need no closure over it)."""
    return request.app.state.service


def require_api_key(request: Request) -> None:
    """401 unless the request carries the configured bearer key (nothing to check without one)."""
    key = request.app.state.service.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), key.encode()):
        raise ServerError("invalid or missing API key (send 'Authorization: Bearer <key>')", 401,
                          "invalid_request_error", "invalid_api_key")


Service = Annotated[ChatService, Depends(get_service)]
router = APIRouter()
api = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(service: Service) -> dict[str, str]:
    service.holder.get()
    return {"status": "ready"}


@api.get("/models")
async def models(service: Service) -> ModelList:
    return ModelList(data=[ModelCard(id=service.settings.model_name)])


@api.post("/chat/completions", response_model=None)
async def chat(req: ChatCompletionRequest, request: Request, service: Service) -> ChatCompletion | StreamingResponse:
    return await (service.stream(req) if req.stream else service.complete(req, request))


@api.get("/entities/{entity_id}")
async def entity(entity_id: str, service: Service) -> dict[str, Any]:
    return service.entity(entity_id)


@api.get("/entities/{entity_id}/image")
async def entity_image(entity_id: str, service: Service) -> FileResponse:
    return FileResponse(service.entity_image(entity_id))


@api.post("/attack")
async def attack(req: AttackRequest, service: Service) -> AttackResponse:
    return await service.attack(req)


@router.get("/v1/page")
async def page_config(service: Service) -> dict[str, Any]:
    """What the page needs to know before it asks anything (no secrets, no key needed)."""
    return service.page()


@router.get("/", include_in_schema=False)
async def index() -> Response:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _retlink_error(_req: Request, e: RetlinkError) -> JSONResponse:
    return error_json(e.http_status, str(e), e.error_type, getattr(e, "code", None))


async def _validation_error(_req: Request, e: RequestValidationError) -> JSONResponse:
    first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error_json(400, f"invalid request: {where or 'body'}: {first.get('msg')}", "invalid_request_error")


async def _http_error(_req: Request, e: StarletteHTTPException) -> JSONResponse:
    return error_json(e.status_code, str(e.detail), "invalid_request_error")


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Load the linker after the socket is bound (`/ready` says when it is done)."""
    loader = asyncio.create_task(app.state.service.holder.load())
    yield
    loader.cancel()


def create_app(linker: Any, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app over a `Linker` (or a zero-argument factory that builds one at startup)."""
    settings = settings or ServerSettings()
    service = ChatService(linker, settings)
    drain = Drain(settings.retry_after_s, service.in_flight)
    app = FastAPI(title="retlink", lifespan=_lifespan)
    app.state.settings = settings
    app.state.service = service
    app.state.drain = drain
    # added innermost first: a 503 while draining and a 413 are still logged, with their id
    app.add_middleware(DrainGate, drain=drain)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ServerErrors)
    app.add_middleware(RequestLog)
    app.add_exception_handler(RetlinkError, _retlink_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(router)
    app.include_router(api)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    if settings.demo_dir is not None:
        app.mount("/demo", StaticFiles(directory=settings.demo_dir), name="demo")
    return app


__all__ = ["ServerSettings", "create_app", "get_service", "require_api_key", "router"]
