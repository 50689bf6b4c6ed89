"""Turn a chat request into the linker's inputs: (image, mention, context), or a typed error.

The last user message carries everything: its text marks the mention in [brackets] and is
itself the context sentence (brackets kept, as in the demo examples); exactly one `image_url` part carries the image,
as a data URI or an http(s) URL. URLs are fetched through the project's SSRF guard
(`retlink.tools.net_guard`: every connection's address is checked and pinned), with a byte cap
checked while streaming, an image content-type check, and redirects re-checked hop by hop.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import httpx
from PIL import Image

from retlink.errors import ImageTooLargeError, InputError, InvalidImageError
from retlink.server_protocol import ChatCompletionRequest
from retlink.tools.images import load_image
from retlink.tools.net_guard import BlockedAddressError, GuardedTransport, HostPolicy, check_url

MENTION = re.compile(r"\[([^\[\]]+)\]")
DATA_URI = re.compile(r"^data:(?P<mime>[\w/+.-]*)(?P<params>(;[\w=.-]+)*?)(?P<b64>;base64)?,(?P<data>.*)$", re.S)
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class LinkInputs:
    image_source: str
    mention: str
    context: str


def parse_request(req: ChatCompletionRequest) -> LinkInputs:
    """The mention, context and image reference of the last user message."""
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
    if not images:
        raise InvalidImageError("the last user message has no image_url part; send one image (data URI or URL)")
    if len(images) > 1:
        raise InputError(f"the last user message has {len(images)} images; send exactly one")
    text = " ".join(t.strip() for t in texts).strip()
    found = MENTION.findall(text)
    if not found or not found[0].strip():
        raise InputError("mark the mention in [brackets] in the message text, e.g. 'The [Falcon 9] lifted off.'")
    # The context keeps its brackets, as in the demo examples: the mark tells the reasoner which
    # occurrence is meant.
    return LinkInputs(image_source=images[0], mention=found[0].strip(), context=text)


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


async def fetch_image_url(url: str, max_bytes: int, *, policy: HostPolicy, timeout_s: float = 10.0) -> bytes:
    """GET an image through the SSRF guard: byte cap while streaming, image/* only, safe redirects."""
    transport = GuardedTransport(policy)
    timeout = httpx.Timeout(timeout_s)
    try:
        async with httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False,
                                     trust_env=False) as client:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                target = check_url(current)
                async with client.stream("GET", target) as resp:
                    if resp.is_redirect:
                        current = str(target.join(resp.headers.get("location", "")))
                        continue
                    if resp.status_code >= 400:
                        raise InvalidImageError(f"image URL answered HTTP {resp.status_code}: {url}")
                    mime = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                    if not mime.startswith("image/"):
                        raise InvalidImageError(f"image URL served {mime or 'no content type'!r}, not an image")
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise ImageTooLargeError(f"image at {url} is over the limit of {max_bytes:,} bytes")
                    return bytes(body)
            raise InvalidImageError(f"image URL redirected more than {MAX_REDIRECTS} times: {url}")
    except BlockedAddressError as e:
        raise InvalidImageError(f"image URL refused: {e}") from None
    except httpx.HTTPError as e:
        raise InvalidImageError(f"cannot fetch image URL {url}: {type(e).__name__}: {e}") from None


async def load_request_image(
    source: str, *, max_bytes: int, max_pixels: int, policy: HostPolicy, timeout_s: float = 10.0
) -> Image.Image:
    """The validated RGB image a request points at (data URI or http(s) URL)."""
    if source.startswith("data:"):
        data = decode_data_uri(source, max_bytes)
    elif source.startswith(("http://", "https://")):
        data = await fetch_image_url(source, max_bytes, policy=policy, timeout_s=timeout_s)
    else:
        raise InvalidImageError("image_url must be a data URI or an http(s) URL")
    return load_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
