"""Cancel a non-streaming request's work when its client goes away.

Starlette keeps running a handler whose client has disconnected; for the chat endpoint that
means a link running to the end (tens of seconds of CPU) while holding a concurrency slot, for
an answer nobody will read. `unless_disconnected` races the work against the ASGI
`http.disconnect` message and cancels the work when the client wins. (Streaming responses need
none of this: Starlette already stops their generator on disconnect.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from retlink.core.errors import RetlinkError

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    """`await work`, cancelled (then ClientDisconnected) if the client disconnects first."""
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
