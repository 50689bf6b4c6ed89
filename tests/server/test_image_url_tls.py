"""https image URLs trust what the scraper trusts: `search.ca_bundle`.

A real TLS server on 127.0.0.1 (`tests.loopback.TLSLoopbackHTTP`) serves a demo JPEG with a
certificate from a CA made for the session (`make_test_pki`, skipped without the openssl
command). The image loader reaches it when the SearchConfig it is given trusts that CA, and
refuses the certificate, as a 400-type input error of kind tls, when it does not. No model runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from retlink.core.errors import InvalidImageError
from retlink.core.schema import SearchConfig
from retlink.serve.inputs import IMAGE_TYPES, MAX_REDIRECTS, image_fetch_settings, load_request_image
from retlink.tools.net_guard import HostPolicy
from retlink.tools.scrape.fetch import FetchSettings
from tests.loopback import QuietHandler, TlsCerts, TLSLoopbackHTTP, make_test_pki
from tests.server.conftest import DEMO

ROCKET = (DEMO / "images" / "rocket.jpg").read_bytes()
MAX_BYTES = 1024 * 1024


class ImageOverTLS(QuietHandler):
    def do_GET(self) -> None:
        self.server.record(self.path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_body(200, "image/jpeg", ROCKET)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TlsCerts:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def site(pki) -> Iterator[TLSLoopbackHTTP]:
    with TLSLoopbackHTTP(ImageOverTLS, pki.cert, pki.key) as srv:
        yield srv


def policy(site: TLSLoopbackHTTP) -> HostPolicy:
    return HostPolicy.from_entries([f"127.0.0.1:{site.server_address[1]}"])


async def load(site: TLSLoopbackHTTP, search: SearchConfig | None):
    return await load_request_image(
        site.url("/rocket.jpg"), max_bytes=MAX_BYTES, max_pixels=40_000_000, policy=policy(site),
        timeout_s=5.0, search=search,
    )  # fmt: skip


async def test_https_image_url_is_fetched_when_search_ca_bundle_trusts_its_ca(site, pki) -> None:
    image = await load(site, SearchConfig(ca_bundle=pki.ca))
    assert image.mode == "RGB" and min(image.size) > 8
    assert site.hits["/rocket.jpg"] >= 1


async def test_https_image_url_is_refused_without_the_ca(site) -> None:
    connections = site.connections
    with pytest.raises(InvalidImageError, match=r"\[tls\]"):
        await load(site, None)  # the default SearchConfig: certifi only
    assert site.connections == connections + 1  # a certificate problem is not retried


def test_image_fetch_settings_are_the_scrapers_with_the_endpoints_limits(tmp_path) -> None:
    search = SearchConfig(ca_bundle=tmp_path / "ca.pem", user_agent="ua/1", retries=2, connect_timeout_s=1.0)
    settings = image_fetch_settings(search, 4096, 7.0)
    assert settings == FetchSettings.from_config(
        search, connect_timeout_s=7.0, read_timeout_s=7.0, page_timeout_s=7.0, max_bytes=4096,
        max_redirects=MAX_REDIRECTS, content_types=IMAGE_TYPES, max_concurrency=16, per_host_concurrency=8,
    )  # fmt: skip
    assert (settings.ca_bundle, settings.user_agent, settings.retries) == (tmp_path / "ca.pem", "ua/1", 2)
    assert image_fetch_settings(None, 4096, 7.0) == image_fetch_settings(SearchConfig(), 4096, 7.0)


@pytest.mark.slow
def test_endpoint_fetches_https_images_with_the_linkers_ca_bundle(site, pki, demo_kb_path) -> None:
    """End to end: the chat endpoint passes its linker's `search` config to the image fetcher."""
    import openai

    from retlink import Linker
    from retlink.serve.app import ServerSettings, create_app
    from tests.conftest import fast_config
    from tests.server.conftest import API_KEY, ServerThread, chat_client, user_message

    context = "The [Falcon] climbed away from the launch pad carrying a space weather satellite."
    settings = ServerSettings(api_key=API_KEY, image_allow_hosts=[f"127.0.0.1:{site.server_address[1]}"])
    for ca_bundle, linked in ((str(pki.ca), True), (None, False)):
        linker = Linker.from_config(fast_config(demo_kb_path, search={"ca_bundle": ca_bundle}))
        with ServerThread(create_app(linker, settings)) as srv:
            client = chat_client(f"{srv.url}/v1")
            messages = user_message(context, site.url("/rocket.jpg"))
            if linked:
                resp = client.chat.completions.create(model="retlink", messages=messages)
                assert resp.model_extra["retlink"]["entity"]["id"] == "falcon_9"
            else:
                with pytest.raises(openai.APIStatusError) as info:
                    client.chat.completions.create(model="retlink", messages=messages)
                assert info.value.status_code == 400 and "[tls]" in info.value.body["message"]
