"""Image URLs in chat requests: fetched by the project's safe fetcher, or refused with OpenAI's error JSON.

A real loopback HTTP server (`ImageSite` routes on `tests.loopback.LoopbackHTTP`) serves a demo JPEG, an HTML page, a 10 MB "image"
(declared and undeclared length) and a redirect to the cloud metadata address. The endpoint may
reach it only when `ServerSettings.image_allow_hosts` lists it: loopback is exactly what the SSRF
guard refuses otherwise. The refused cases fail before any model runs, so they cost milliseconds;
one allowlisted request links through the real models (the conftest's fast budgets).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import openai
import pytest

from retlink.serve.app import ServerSettings, create_app
from tests.loopback import LoopbackHTTP, QuietHandler
from tests.server.conftest import API_KEY, DEMO, ServerThread, chat_client, user_message

pytestmark = pytest.mark.slow

EXAMPLE = {"image": "images/rocket.jpg", "mention": "Falcon",
           "context": "The [Falcon] climbed away from the launch pad carrying a space weather satellite."}
BIG = 10 * 1024 * 1024
MAX_IMAGE_BYTES = 1024 * 1024


class ImageSite(QuietHandler):
    """Routes of the image site (HTTP/1.0: the undeclared body ends when the connection closes)."""

    def do_GET(self) -> None:
        self.server.record(self.path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the fetcher stops at its cap
            if self.path == "/rocket.jpg":
                self.send_body(200, "image/jpeg", (DEMO / EXAMPLE["image"]).read_bytes())
            elif self.path == "/page.html":
                self.send_body(200, "text/html; charset=utf-8", b"<!DOCTYPE html><html><body><p>no image</p></body></html>")
            elif self.path == "/big.jpg":
                self.send_body(200, "image/jpeg", b"\xff\xd8\xff" + b"\x00" * BIG)
            elif self.path == "/big-undeclared.jpg":  # no Content-Length: only the streaming cap stops it
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                for _ in range(BIG // 65536):
                    self.wfile.write(b"\x00" * 65536)
            elif self.path == "/to-metadata.jpg":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_body(404, "text/plain", b"not found")


@pytest.fixture(scope="module")
def site() -> Iterator[LoopbackHTTP]:
    with LoopbackHTTP(ImageSite) as srv:
        yield srv


@pytest.fixture(scope="module")
def allowed(linker, site) -> Iterator[openai.OpenAI]:
    """A second endpoint whose image URLs may reach the loopback site (and nothing else private)."""
    settings = ServerSettings(api_key=API_KEY, max_image_bytes=MAX_IMAGE_BYTES,
                              image_allow_hosts=[f"127.0.0.1:{site.server_address[1]}"])
    with ServerThread(create_app(linker, settings)) as srv:
        yield chat_client(f"{srv.url}/v1")


def ask(client: openai.OpenAI, url: str):
    return client.chat.completions.create(model="retlink", messages=user_message(EXAMPLE["context"], url))


def refused(client: openai.OpenAI, url: str) -> tuple[int, dict]:
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, url)
    return info.value.status_code, info.value.body


def test_allowlisted_image_url_links_like_a_direct_call(allowed, site, linker):
    want = linker.link(DEMO / EXAMPLE["image"], EXAMPLE["mention"], EXAMPLE["context"]).entity_id
    resp = ask(allowed, site.url("/rocket.jpg"))
    result = resp.model_extra["retlink"]
    assert (result["entity"] or {}).get("id", "NIL") == want == "falcon_9"
    assert result["mention"] == "Falcon" and site.hits["/rocket.jpg"] == 1


def test_loopback_url_without_allowlist_is_refused(client, site):
    before = site.hits["/rocket.jpg"]
    status, body = refused(client, site.url("/rocket.jpg"))
    assert status == 400 and body["type"] == "invalid_request_error"
    assert "SSRF" in body["message"] and "loopback" in body["message"] and "allow_hosts" in body["message"]
    assert site.hits["/rocket.jpg"] == before  # refused before connecting


@pytest.mark.parametrize("via_redirect", [False, True], ids=["direct", "redirect"])
def test_cloud_metadata_address_is_refused(allowed, site, via_redirect):
    url = site.url("/to-metadata.jpg") if via_redirect else "http://169.254.169.254/latest/meta-data/"
    status, body = refused(allowed, url)
    assert status == 400 and "SSRF" in body["message"] and "metadata" in body["message"]


def test_html_instead_of_an_image_is_400(allowed, site):
    status, body = refused(allowed, site.url("/page.html"))
    assert status == 400 and "text/html" in body["message"] and body["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/big.jpg", "/big-undeclared.jpg"])
def test_ten_megabyte_body_is_413(allowed, site, path):
    status, body = refused(allowed, site.url(path))
    assert status == 413 and f"{MAX_IMAGE_BYTES:,}" in body["message"]
