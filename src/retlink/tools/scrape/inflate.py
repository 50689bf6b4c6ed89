"""Bounded decompression of response bodies (gzip, deflate): the defence against zip bombs.

httpx decompresses each network chunk in one call, so 64 KB of gzip can become 64 MB in memory
before any byte cap is checked. Here the raw bytes are inflated with an output limit, so the
cap holds for decompressed bytes too. Only the encodings the fetcher advertises are accepted.
"""

from __future__ import annotations

import zlib

ACCEPT_ENCODING = "gzip, deflate"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class InflateError(ValueError):
    """Unsupported or corrupt content encoding."""


class BoundedInflater:
    """`feed(raw, limit)` returns at most `limit` decompressed bytes of the stream so far.

    A caller that receives exactly `limit` bytes must treat the body as over its cap: the
    rest is never inflated.
    """

    def __init__(self, encoding: str) -> None:
        if encoding not in _WBITS:
            raise InflateError(f"content encoding {encoding!r} is not supported")
        self._raw_deflate_ok = encoding == "deflate"  # some servers send raw deflate, no zlib header
        self._d = zlib.decompressobj(_WBITS[encoding])
        self._fed = False

    def feed(self, data: bytes, limit: int) -> bytes:
        out = bytearray()
        while data and len(out) < limit:
            try:
                out += self._d.decompress(data, limit - len(out))
            except zlib.error as e:
                if self._raw_deflate_ok and not self._fed:
                    self._d, self._raw_deflate_ok = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise InflateError(f"corrupt compressed body: {e}") from None
            self._fed = True
            data = self._d.unconsumed_tail
        return bytes(out)
