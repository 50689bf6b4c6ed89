"""Typed errors: every bad input maps to one class, so the CLI and the server can turn each
into one clear message (exit code 2 / an OpenAI-style error JSON) without a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class RetlinkError(Exception):
    """Base class of all errors retlink raises on purpose."""

    #: HTTP status the chat endpoint answers with for this error.
    http_status: int = 500
    #: OpenAI error `type` field.
    error_type: str = "server_error"


class InputError(RetlinkError):
    """The caller passed something unusable."""

    http_status = 400
    error_type = "invalid_request_error"


class InvalidImageError(InputError):
    """Missing, unreadable, truncated or non-image input."""


class ImageTooLargeError(InvalidImageError):
    """The image exceeds the configured pixel or byte limit (decompression-bomb guard)."""

    http_status = 413


class EmptyMentionError(InputError):
    """The mention is empty or whitespace."""


class TextTooLongError(InputError):
    """The mention or context is over `limits.max_mention_chars` / `max_context_chars` (the
    reasoner's cost grows with the text, so an unbounded one is a denial of service)."""


class ConfigError(InputError):
    """The configuration is malformed or names an unknown key or backend."""


class KBError(RetlinkError):
    """The knowledge base is missing, incomplete or inconsistent."""

    http_status = 503
    error_type = "kb_error"


class DatasetError(InputError):
    """A dataset record is malformed; the message names the file and line."""


class BackendError(RetlinkError):
    """A model, search or scraping backend failed (server down, wrong model name, bad reply)."""

    http_status = 503
    error_type = "backend_error"


class CheckpointError(InputError):
    """A thread id that cannot be used as asked: resuming a thread that has no checkpoint, or
    starting a new link on a thread that already holds one (its state would mix with the new
    link's), or any thread id while no checkpointer is configured."""


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """A CLI command that turns retlink's typed errors into one red line on stderr and exit code
    2 (no traceback). Here, beside the errors, so every layer's commands (`retlink`, `retlink
    eval`, `retlink mate`) share one handler without importing the top-level CLI; typer and rich
    load only when an error is reported, so importing the error types stays cheap."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RetlinkError as e:
            import typer
            from rich.console import Console

            from retlink.core.terminal import markup_safe

            # one line, escaped: a message may quote user text (control characters, rich markup)
            line = markup_safe(" ".join(str(e).split()))
            Console(stderr=True).print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
