"""Wire models of the chat endpoint: the OpenAI chat-completions protocol, the subset we serve,
and its error body (`ErrorResponse`, `error_json`, `ServerError`), which every layer of the
server answers errors with (as vLLM's `entrypoints/openai/protocol.py`).

Requests are lenient (unknown fields such as `temperature` or `stream_options` are accepted
and ignored: clients send them by default); responses follow OpenAI's shapes, with the chain of
thought in `message.reasoning` as vLLM returns it, and the full `LinkResult` under the extra
key `retlink` for clients that want the structured answer.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from retlink.core.errors import RetlinkError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ImageURL(_Lenient):
    url: str
    detail: str | None = None


class ContentPart(_Lenient):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(_Lenient):
    role: str
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(_Lenient):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning: str | None = None


class Usage(BaseModel):
    """Token counts are not measured by the agent; zeros keep clients that read them working."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage = Usage()
    retlink: dict[str, Any] | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    #: the graph node that just completed (streaming progress), or the final result
    retlink_node: dict[str, Any] | None = None
    retlink: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "retlink"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class ServerError(RetlinkError):
    """An error the endpoint itself raises, with its status and OpenAI error type."""

    def __init__(self, message: str, status: int, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.error_type = error_type
        self.code = code


def error_json(status: int, message: str, error_type: str, code: str | None = None) -> JSONResponse:
    """OpenAI's error JSON with `status`; a 5xx also says `Connection: close`, because after a
    server-side failure the connection is not reused (see `retlink.serve.middleware.ServerErrors`)."""
    body = ErrorResponse(error=ErrorBody(message=message, type=error_type, code=code))
    headers = {"Connection": "close"} if status >= 500 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)
