"""Turn a chat request into the linker's inputs: (image, mention, context), or a typed error.

The last user message carries everything: its text marks the mention in [brackets] and is
itself the context sentence (brackets kept, as in the demo examples); at most one `image_url` part
carries the image, as a data URI or an http(s) URL. Without an image the link is text only
(captioning and image retrieval are skipped, as the trace says), as in the eval's `text_only`
setting and `Linker.link(None, ...)`. URLs are fetched by the scraper's `Fetcher` (one safe fetcher
for the whole project: the SSRF guard checks and pins every connection's address, the byte cap is
checked while streaming and after bounded decompression, redirects are re-checked hop by hop),
asked per call for `image/*` with binary bodies allowed, which is the only difference from a page.
Its settings are the scraper's (`FetchSettings.from_config` on a `SearchConfig`: user agent,
retries and `search.ca_bundle`, so a private CA trusted for pages is trusted for image URLs too),
with the endpoint's own limits (byte cap, timeout, redirects, concurrency) in place of the page's.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image

from retlink.agent.nodes.validator import check_text, check_unicode
from retlink.core.errors import ImageTooLargeError, InputError, InvalidImageError
from retlink.core.schema import LimitsConfig, SearchConfig
from retlink.serve.protocol import ChatCompletionRequest
from retlink.tools.images import load_image
from retlink.tools.net_guard import HostPolicy
from retlink.tools.scrape.fetch import Fetcher, FetchError, FetchSettings

MENTION = re.compile(r"\[([^\[\]]+)\]")
DATA_URI = re.compile(r"^data:(?P<mime>[\w/+.-]*)(?P<params>(;[\w=.-]+)*?)(?P<b64>;base64)?,(?P<data>.*)$", re.S)
MAX_REDIRECTS = 3
IMAGE_TYPES = ("image/*",)


@dataclass(frozen=True)
class LinkInputs:
    #: the data URI or URL of the image; None for a text-only link
    image_source: str | None
    mention: str
    context: str


def parse_request(req: ChatCompletionRequest, limits: LimitsConfig | None = None) -> LinkInputs:
    """The mention, context and image reference of the last user message, the text checked
    (valid Unicode, within the linker's `limits`) before the image is fetched or a link starts."""
    users = [m for m in req.messages if m.role == "user"]
    if not users:
        raise InputError("the request has no user message")
    content = users[-1].content
    parts = [content] if isinstance(content, str) else (content or [])
    texts, images = [], []
    for p in parts:
        if isinstance(p, str):
            texts.append(p)
        elif p.type == "text" and p.text:
            texts.append(p.text)
        elif p.type == "image_url" and p.image_url is not None:
            images.append(p.image_url.url)
    if len(images) > 1:
        raise InputError(f"the last user message has {len(images)} images; send at most one")
    for url in images:
        check_unicode(url, "image_url")
    # invalid Unicode (a lone surrogate) is refused here, before a slot, a fetch or a stream
    text = check_unicode(" ".join(t.strip() for t in texts).strip(), "message text")
    found = MENTION.findall(text)
    if not found or not found[0].strip():
        if not images:
            raise InputError(
                "the last user message has neither an image nor a mention: send an image_url part, and mark "
                "the mention in [brackets] in the text (without an image the link is text only)"
            )
        raise InputError("mark the mention in [brackets] in the message text, e.g. 'The [Falcon 9] lifted off.'")
    # The context keeps its brackets, as in the demo examples: the mark tells the reasoner which
    # occurrence is meant.
    mention, context = check_text(found[0], text, limits or LimitsConfig())
    return LinkInputs(image_source=images[0] if images else None, mention=mention, context=context)


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    m = DATA_URI.match(uri)
    if not m:
        raise InvalidImageError("image_url is not a valid data URI (expected data:image/...;base64,...)")
    if m["mime"] and not m["mime"].startswith("image/"):
        raise InvalidImageError(f"data URI has media type {m['mime']!r}, not an image")
    if not m["b64"]:
        raise InvalidImageError("data URI images must be base64-encoded")
    if len(m["data"]) * 3 // 4 > max_bytes:
        raise ImageTooLargeError(f"image is about {len(m['data']) * 3 // 4:,} bytes, over the limit of {max_bytes:,}")
    try:
        return base64.b64decode(m["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError("data URI is not valid base64") from None


def image_fetch_settings(search: SearchConfig | None, max_bytes: int, timeout_s: float) -> FetchSettings:
    """The scraper's settings for `search` (the default SearchConfig when None) with the
    endpoint's image limits in place of the page limits."""
    return FetchSettings.from_config(
        search or SearchConfig(),
        connect_timeout_s=timeout_s,
        read_timeout_s=timeout_s,
        page_timeout_s=timeout_s,
        max_bytes=max_bytes,
        max_redirects=MAX_REDIRECTS,
        content_types=IMAGE_TYPES,
        max_concurrency=16,
        per_host_concurrency=8,
    )


@lru_cache(maxsize=8)
def image_fetcher(settings: FetchSettings, policy: HostPolicy) -> Fetcher:
    """The Fetcher for one server's image settings, shared by its requests so that connections are
    reused (the Fetcher keeps one client per event loop). Cached on both, which are hashable."""
    return Fetcher(settings, policy)


async def fetch_image_url(
    url: str,
    max_bytes: int,
    *,
    policy: HostPolicy,
    timeout_s: float = 10.0,
    search: SearchConfig | None = None,
) -> bytes:
    """GET an image through the project's safe fetcher, with `search`'s fetch settings (its
    `ca_bundle` included); each failure becomes the typed input error the endpoint answers with
    (413 for the byte cap, 400 for everything else)."""
    fetcher = image_fetcher(image_fetch_settings(search, max_bytes, timeout_s), policy)
    try:
        page = await fetcher.get(url, content_types=IMAGE_TYPES, allow_binary=True)
    except FetchError as e:
        if e.kind == "too_large":
            raise ImageTooLargeError(f"image at {url} is over the limit of {max_bytes:,} bytes ({e.detail})") from None
        if e.kind == "blocked":
            raise InvalidImageError(f"image URL refused by the SSRF guard: {e.detail}") from None
        if e.kind == "content_type":
            raise InvalidImageError(f"image URL did not serve an image: {e.detail}") from None
        raise InvalidImageError(f"cannot fetch image URL {url}: [{e.kind}] {e.detail}") from None
    return page.body


async def load_request_image(
    source: str,
    *,
    max_bytes: int,
    max_pixels: int,
    policy: HostPolicy,
    timeout_s: float = 10.0,
    search: SearchConfig | None = None,
) -> Image.Image:
    """The validated RGB image a request points at (data URI or http(s) URL; a URL is fetched
    with `search`'s fetch settings, see `fetch_image_url`)."""
    if source.startswith("data:"):
        data = decode_data_uri(source, max_bytes)
    elif source.startswith(("http://", "https://")):
        data = await fetch_image_url(source, max_bytes, policy=policy, timeout_s=timeout_s, search=search)
    else:
        raise InvalidImageError("image_url must be a data URI or an http(s) URL")
    return load_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
