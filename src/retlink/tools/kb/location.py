"""Where a KB lives: a folder (embedded chromadb) or a chroma server (`chroma run`).

The builder and the store speak to a location, never to a path or a client directly, so both
places hold the same things and obey the same rules:
- two chromadb collections, entity texts and entity images (`chroma.open_collections`);
- the alias table (normalised name -> entity id);
- the manifest, written last: a KB without a complete manifest is refused;
- a build writes into a partial KB beside the real one and swaps it into place at the end.

`FolderKB(path)`: `path/chroma/` (a PersistentClient), `path/aliases.sqlite`,
`path/manifest.json` and the marker `retlink.core.outdirs.MARKER`; the partial KB is the folder
`path.partial/`, swapped in by renames. Only a folder that carries the marker (or holds nothing
but a KB's files: one built before the marker) is ever replaced, and only a marked partial KB is
ever discarded: anything else at `--out` is refused, so a build never deletes the user's files.

`ServerKB(url, name)`: the collections `NAME-text` and `NAME-image` on the server, and a small
side collection `NAME-meta` that holds the alias rows (metadata `norm`, `entity_id`; a constant
one-dimensional vector, since chroma stores no record without one) and, in its collection
metadata, the manifest. The partial KB is the same three collections named `NAME.partial-*`;
the swap renames them into place, the meta collection last, so a reader sees the old KB, no KB
(a clear error) for the moment of the swap, or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from retlink.core.errors import ConfigError, KBError
from retlink.core.types import Entity
from retlink.tools.kb.chroma import alias_rows

if TYPE_CHECKING:
    from retlink.core.schema import KBConfig
    from retlink.tools.kb.embedders import TextEmbedder

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: the collection metadata key that holds a server KB's manifest (JSON)
MANIFEST_KEY = "retlink_manifest"
#: what a partial KB is a build of (source sha256, embedders): a file in a partial folder, a
#: metadata key of a server KB's partial meta collection
PARTIAL_IDENTITY = "partial.json"


class Aliases(Protocol):
    """The alias table: normalised name or alias -> entity ids."""

    def add(self, entities: Iterable[Entity]) -> None: ...

    def lookup(self, mention: str, limit: int = 50) -> list[str]: ...

    def remove(self, entity_ids: Iterable[str]) -> None: ...

    def close(self) -> None: ...


class KBLocation(Protocol):
    """A place that holds one KB (see the module docstring)."""

    def read_manifest(self) -> dict[str, Any] | None:
        """The KB's manifest, None when there is no KB (a partial one does not count)."""

    def open(self, text_embedder: TextEmbedder, *, partial: bool = False) -> tuple[Any, Any, Aliases]:
        """The text and image collections and the alias table (of the partial KB when asked)."""

    def partial_exists(self) -> bool: ...

    def partial_identity(self) -> dict[str, Any] | None:
        """What the partial KB is a build of (source sha256, embedders), None if unrecorded."""

    def set_partial_identity(self, identity: dict[str, Any]) -> None:
        """Record what the partial KB is a build of (creating it if needed)."""

    def discard_partial(self) -> None:
        """Remove the partial KB (another build's: it must not be resumed)."""

    def lock_path(self) -> Path:
        """The file whose flock serialises builds of this KB (`build.build_lock`)."""

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest into the partial KB and swap it into place."""

    def build_hint(self) -> str:
        """The command that builds a KB here (for error messages)."""

    def check_target(self) -> None:
        """A ConfigError unless a build may write here (before any work or lock file)."""


#: the marker kind of a KB folder
KB_KIND = "kb"
#: what a KB folder held before the marker existed (the sqlite side files included)
_KB_FILES = frozenset({"chroma", "aliases.sqlite", "aliases.sqlite-wal", "aliases.sqlite-shm",
                       "aliases.sqlite-journal", MANIFEST, PARTIAL_IDENTITY})


def _only_kb_files(folder: Path, required: str) -> bool:
    """`folder` holds `required` and nothing but a KB's files: how a KB (or a partial KB) built
    before the marker is recognised."""
    names = {p.name for p in folder.iterdir()}
    return required in names and names <= _KB_FILES


def legacy_kb(folder: Path) -> bool:
    """A KB folder built before the marker: its manifest and nothing but a KB's files."""
    return _only_kb_files(folder, MANIFEST)


def _legacy_partial(folder: Path) -> bool:
    """A partial KB from before the marker: its identity record and nothing but a KB's files."""
    return _only_kb_files(folder, PARTIAL_IDENTITY)


class FolderKB:
    """A KB folder on this machine (embedded chromadb)."""

    def __init__(self, path: Path | str) -> None:
        from retlink.core.outdirs import absolute

        self.path = absolute(path)  # `.` has no name to put `.partial` after
        self.work = self.path.with_name(self.path.name + ".partial")

    def __str__(self) -> str:
        return str(self.path)

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.path / MANIFEST
        return json.loads(path.read_text()) if path.exists() else None

    def open(self, text_embedder: TextEmbedder, *, partial: bool = False) -> tuple[Any, Any, Aliases]:
        """The partial KB's folder, collections and alias table are created as needed; a reader
        only opens what a build left there. A reader creates nothing: a mistyped path is a clear
        "no knowledge base" error, not an empty folder (and an empty KB) left behind."""
        from retlink.tools.kb.chroma import AliasTable, chroma_client, open_collections

        if partial:
            self.work.mkdir(parents=True, exist_ok=True)
            text, image = open_collections(chroma_client(self.work / "chroma"), text_embedder)
            return text, image, AliasTable(self.work / "aliases.sqlite")
        store, aliases = self.path / "chroma", self.path / "aliases.sqlite"
        # checked before any client or sqlite connection: both would create what they open
        if not (store.is_dir() and aliases.is_file()):
            raise KBError(f"no knowledge base at {self} (build one with `{self.build_hint()}`)")
        text, image = self._built_collections(chroma_client(store), text_embedder)
        return text, image, AliasTable(aliases)

    def _built_collections(self, client: Any, text_embedder: TextEmbedder) -> tuple[Any, Any]:
        """The built KB's text and image collections, got (never created) from its chroma store."""
        from chromadb.errors import NotFoundError

        from retlink.tools.kb.chroma import IMAGE_COLLECTION, TEXT_COLLECTION, ChromaTextEmbedding

        try:
            text = client.get_collection(TEXT_COLLECTION, embedding_function=ChromaTextEmbedding(text_embedder))
            image = client.get_collection(IMAGE_COLLECTION, embedding_function=None)
        except NotFoundError:
            raise KBError(f"no knowledge base at {self} (build one with `{self.build_hint()}`)") from None
        return text, image

    def partial_exists(self) -> bool:
        return self.work.exists()

    def partial_identity(self) -> dict[str, Any] | None:
        try:
            found = json.loads((self.work / PARTIAL_IDENTITY).read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def set_partial_identity(self, identity: dict[str, Any]) -> None:
        from retlink.core.outdirs import check_partial, write_marker

        check_partial(self.work, KB_KIND, legacy=_legacy_partial)  # never write into the user's folder
        write_marker(self.work, KB_KIND)
        (self.work / PARTIAL_IDENTITY).write_text(json.dumps(identity, indent=2))

    def discard_partial(self) -> None:
        from chromadb.api.shared_system_client import SharedSystemClient

        from retlink.core.outdirs import remove_partial

        SharedSystemClient.clear_system_cache()  # no cached client may write into a removed folder
        remove_partial(self.work, KB_KIND, legacy=_legacy_partial)

    def check_target(self) -> None:
        from retlink.core.outdirs import check_out_dir, check_replaceable

        check_out_dir(self.path)
        check_replaceable(self.path, KB_KIND, legacy=legacy_kb)

    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def finish(self, manifest: dict[str, Any]) -> None:
        from chromadb.api.shared_system_client import SharedSystemClient

        from retlink.core.outdirs import swap_into_place

        SharedSystemClient.clear_system_cache()  # let go of the partial folder's files
        (self.work / MANIFEST).write_text(json.dumps(manifest, indent=2))
        swap_into_place(self.work, self.path, KB_KIND, legacy=legacy_kb)

    def build_hint(self) -> str:
        return f"retlink kb build ENTITIES.jsonl --out {self.path}"


class ServerAliasTable:
    """The alias table as records of a server KB's meta collection."""

    #: the constant vector every alias record carries (chroma keeps no record without one)
    VECTOR = (1.0,)

    def __init__(self, collection: Any, batch: int, where: str) -> None:
        self._col = collection
        self._batch = batch
        self.where = where

    def add(self, entities: Iterable[Entity]) -> None:
        rows = sorted(alias_rows(entities))
        for i in range(0, len(rows), self._batch):
            chunk = rows[i : i + self._batch]
            self._col.upsert(
                ids=[hashlib.sha1(f"{norm}\0{eid}".encode()).hexdigest() for norm, eid in chunk],
                embeddings=[list(self.VECTOR)] * len(chunk),
                metadatas=[{"norm": norm, "entity_id": eid} for norm, eid in chunk],
            )

    def lookup(self, mention: str, limit: int = 50) -> list[str]:
        """The ids of entities named `mention`, sorted (as the sqlite table returns them)."""
        from retlink.tools.kb.chroma import kb_errors, normalise_name

        key = normalise_name(mention)
        if not key:
            return []
        with kb_errors(self.where):
            got = self._col.get(where={"norm": key}, include=["metadatas"])
        return sorted(m["entity_id"] for m in got["metadatas"])[:limit]

    def remove(self, entity_ids: Iterable[str]) -> None:
        ids = list(entity_ids)
        for i in range(0, len(ids), self._batch):
            self._col.delete(where={"entity_id": {"$in": ids[i : i + self._batch]}})

    def close(self) -> None:
        pass


class ServerKB:
    """A KB on a chroma server, reached with chromadb's HttpClient."""

    SUFFIXES = ("text", "image", "meta")  # the meta collection last: it is the KB's marker

    def __init__(self, url: str, name: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
            raise ConfigError(f"a chroma server is http://HOST:PORT, not {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.name = name
        self.headers = dict(headers or {})
        self._client: Any = None

    @classmethod
    def from_config(cls, kb: KBConfig) -> ServerKB:
        """The server KB a config names, with its auth header."""
        return cls(kb.server, kb.server_name, auth_headers(kb))

    @classmethod
    def from_address(cls, address: str, headers: dict[str, str] | None = None) -> ServerKB:
        """`http://HOST:PORT/NAME`, the CLI's way to name a server KB."""
        from retlink.core.schema import KB_NAME_PATTERN

        parts = urlsplit(address)
        name = parts.path.strip("/")
        if not re.match(KB_NAME_PATTERN, name):
            raise ConfigError(f"a KB on a chroma server is http://HOST:PORT/NAME (NAME: letters, digits, _ and -), not {address!r}")
        return cls(f"{parts.scheme}://{parts.netloc}", name, headers)

    def __str__(self) -> str:
        return f"{self.url}/{self.name}"

    def collection_name(self, suffix: str, state: str = "") -> str:
        return f"{self.name}{'.' + state if state else ''}-{suffix}"

    @property
    def client(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            parts = urlsplit(self.url)
            try:
                self._client = chromadb.HttpClient(
                    host=parts.hostname,
                    port=parts.port,
                    ssl=parts.scheme == "https",
                    headers=self.headers,
                    settings=Settings(anonymized_telemetry=False),
                )
            except Exception as e:  # chromadb raises ValueError (and httpx errors) when unreachable
                raise KBError(f"cannot reach the chroma server at {self.url}: {e}") from None
        return self._client

    def _get(self, name: str, embedding_function: Any = None) -> Any | None:
        from chromadb.errors import NotFoundError

        try:
            return self.client.get_collection(name, embedding_function=embedding_function)
        except NotFoundError:
            return None

    def read_manifest(self) -> dict[str, Any] | None:
        meta = self._get(self.collection_name("meta"))
        if meta is None:
            return None
        raw = (meta.metadata or {}).get(MANIFEST_KEY)
        return json.loads(raw) if raw else {"status": "incomplete"}

    def open(self, text_embedder: TextEmbedder, *, partial: bool = False) -> tuple[Any, Any, Aliases]:
        """The partial KB's collections are created as needed; a reader only gets the built KB's
        (a reader never leaves empty collections behind on the server)."""
        from retlink.tools.kb.chroma import ChromaTextEmbedding, open_collections

        state = "partial" if partial else ""
        names = (self.collection_name("text", state), self.collection_name("image", state))
        if partial:
            text, image = open_collections(self.client, text_embedder, names=names)
            meta = self.client.get_or_create_collection(self.collection_name("meta", state), embedding_function=None)
        else:
            text = self._get(names[0], ChromaTextEmbedding(text_embedder))
            image, meta = self._get(names[1]), self._get(self.collection_name("meta"))
            if text is None or image is None or meta is None:
                raise KBError(f"no knowledge base at {self} (build one with `{self.build_hint()}`)")
        return text, image, ServerAliasTable(meta, self.client.get_max_batch_size(), str(self))

    def partial_exists(self) -> bool:
        return self._get(self.collection_name("meta", "partial")) is not None

    def partial_identity(self) -> dict[str, Any] | None:
        meta = self._get(self.collection_name("meta", "partial"))
        raw = (meta.metadata or {}).get(PARTIAL_IDENTITY) if meta is not None else None
        try:
            found = json.loads(raw) if raw else None
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def set_partial_identity(self, identity: dict[str, Any]) -> None:
        meta = self.client.get_or_create_collection(self.collection_name("meta", "partial"), embedding_function=None)
        meta.modify(metadata={PARTIAL_IDENTITY: json.dumps(identity)})

    def discard_partial(self) -> None:
        for s in self.SUFFIXES:
            if self._get(self.collection_name(s, "partial")) is not None:
                self.client.delete_collection(self.collection_name(s, "partial"))

    def lock_path(self) -> Path:
        """Under the cache, named after server and KB: it serialises this machine's builders."""
        from retlink.core.paths import cache_dir

        host = urlsplit(self.url).netloc.replace(":", "_")
        return cache_dir() / "locks" / f"chroma-{host}-{self.name}.lock"

    def finish(self, manifest: dict[str, Any]) -> None:
        partial = {s: self._get(self.collection_name(s, "partial")) for s in self.SUFFIXES}
        partial["meta"].modify(metadata={MANIFEST_KEY: json.dumps(manifest)})
        for s in self.SUFFIXES:  # clear away any leftovers of an earlier, interrupted swap
            if self._get(self.collection_name(s, "old")) is not None:
                self.client.delete_collection(self.collection_name(s, "old"))
        for s in reversed(self.SUFFIXES):  # the meta collection first: the old KB is gone at once
            current = self._get(self.collection_name(s))
            if current is not None:
                current.modify(name=self.collection_name(s, "old"))
        for s in self.SUFFIXES:  # ... and the new one appears whole, when its meta collection does
            partial[s].modify(name=self.collection_name(s))
        for s in self.SUFFIXES:
            if self._get(self.collection_name(s, "old")) is not None:
                self.client.delete_collection(self.collection_name(s, "old"))

    def build_hint(self) -> str:
        return f"retlink kb build ENTITIES.jsonl --out {self}"

    def check_target(self) -> None:
        """Nothing to check here: a server KB's collections are named by retlink alone."""


def auth_headers(kb: KBConfig) -> dict[str, str]:
    """The header a config sends to a chroma server, its value read from `kb.server_auth_env`."""
    if not kb.server_auth_env:
        return {}
    value = os.environ.get(kb.server_auth_env)
    if not value:
        raise ConfigError(
            f"kb.server_auth_env names {kb.server_auth_env}, which is not set "
            f"(its value is sent as the {kb.server_auth_header} header)"
        )
    return {kb.server_auth_header: value}


def kb_location(where: KBConfig | KBLocation | Path | str, headers: dict[str, str] | None = None) -> KBLocation:
    """The location a config, a folder or a server address (`http://HOST:PORT/NAME`, sent
    `headers`) names."""
    from retlink.core.schema import KBConfig

    if isinstance(where, KBConfig):
        return ServerKB.from_config(where) if where.server else FolderKB(where.path)
    if isinstance(where, FolderKB | ServerKB):
        return where
    if isinstance(where, str) and where.startswith(("http://", "https://")):
        return ServerKB.from_address(where, headers)
    return FolderKB(Path(where))
