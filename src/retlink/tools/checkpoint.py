"""LangGraph checkpointers for the linking graph (`checkpointer:` in the agent config).

A checkpointer saves the graph's state after every step under a thread id, so a long link can be
inspected while it runs and resumed after a failure without re-running the steps that finished
(`Linker.resume`). The state is plain data for this (images as numpy pixels, the search budget as
a `BudgetSpec`), stored with LangGraph's msgpack serializer restricted to the types the state
holds: nothing is pickled, so loading a checkpoint file cannot run code from it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from retlink.core.errors import ConfigError
from retlink.core.schema import CheckpointerConfig
from retlink.core.types import Candidate, Caption, Entity, Evidence, LinkResult, PoolFeatures, TraceEvent
from retlink.tools.llm.base import Choice

#: every non-builtin type the linking state holds (numpy arrays and LangGraph's own types, such
#: as `Send`, are stored natively); loading anything else from a checkpoint is refused
STATE_TYPES: tuple[type, ...] = (Entity, Candidate, Caption, Evidence, TraceEvent, PoolFeatures, LinkResult, Choice)


def state_serializer() -> JsonPlusSerializer:
    """LangGraph's msgpack serializer, allowed to rebuild only `STATE_TYPES` (no pickle)."""
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


async def open_checkpointer(
    cfg: CheckpointerConfig,
) -> tuple[BaseCheckpointSaver | None, Callable[[], Awaitable[Any]] | None]:
    """(checkpointer, async close) for the config; (None, None) when off. Runs on the loop that
    will use it (an SQLite connection belongs to the loop that opened it)."""
    if cfg.kind == "none":
        return None, None
    if cfg.kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver(serde=state_serializer()), None
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    assert cfg.path is not None  # the config requires it for sqlite
    try:
        cfg.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(cfg.path))
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"checkpointer.path {cfg.path} cannot be opened as an SQLite file: {e}") from e
    saver = AsyncSqliteSaver(conn, serde=state_serializer())
    try:
        await saver.setup()
    except sqlite3.Error as e:
        await conn.close()
        raise ConfigError(f"checkpointer.path {cfg.path} is not a usable SQLite checkpoint file: {e}") from e
    return saver, conn.close
