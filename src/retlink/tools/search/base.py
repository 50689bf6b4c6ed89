"""The search-backend role: a query in, ranked hits out.

Backends are async (they do network I/O) and must never raise for an ordinary failure of the
service: they raise BackendError with a message, and the chain that calls them records it and
tries the next backend.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from retlink.core.types import SearchHit


@runtime_checkable
class SearchBackend(Protocol):
    name: str

    async def search(self, query: str, k: int) -> list[SearchHit]: ...
