"""`POST /v1/attack`, the web page's Attack panel: off unless configured, bounded in image size,
steps, budget and rate, and a real FGSM/PGD from the eval module when it runs."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from retlink.serve.app import ServerSettings, create_app
from retlink.serve.attack import AttackLimiter, AttackRefused, AttackSettings
from tests.server.conftest import DEMO, ServerThread, data_uri
from tests.server.stalling import StallingLinker

ROCKET = data_uri(DEMO / "images" / "rocket.jpg")


def serve(**attack):
    return ServerThread(create_app(StallingLinker(), ServerSettings(attack=AttackSettings(**attack))))


def post(srv, **body) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/attack", json={"image": ROCKET, **body}, timeout=600)


def png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_off_unless_configured():
    with serve() as srv:
        r = post(srv)
    assert r.status_code == 404 and r.json()["error"]["code"] == "attack_disabled"


def test_refuses_too_many_steps_a_large_budget_and_oversized_images():
    big = io.BytesIO()
    Image.new("RGB", (3000, 2000), "white").save(big, format="PNG")  # 6 Mpx in 22 KB
    big_uri = "data:image/png;base64," + base64.b64encode(big.getvalue()).decode()
    with serve(enabled=True, max_steps=5, max_eps=8, max_image_bytes=12 * 1024) as srv:
        steps = post(srv, steps=6)
        eps = post(srv, eps=12, steps=2)
        heavy = post(srv, steps=2)  # the rocket photo is 14 KB
    with serve(enabled=True, max_steps=5) as srv:
        pixels = post(srv, image=big_uri, steps=2)
        not_uri = post(srv, image="http://example.com/x.png", steps=2)
        bad_kind = post(srv, attack="cw", steps=2)
    assert steps.status_code == 400 and steps.json()["error"]["code"] == "too_many_steps"
    assert eps.status_code == 400 and eps.json()["error"]["code"] == "eps_too_large"
    assert heavy.status_code == 413 and "over the limit" in heavy.json()["error"]["message"]
    assert pixels.status_code == 413 and "pixels" in pixels.json()["error"]["message"]
    assert not_uri.status_code == 400 and "data URI" in not_uri.json()["error"]["message"]
    assert bad_kind.status_code == 400


def test_limiter_allows_one_at_a_time_and_a_number_per_minute():
    now = [0.0]
    limiter = AttackLimiter(per_minute=2, clock=lambda: now[0])
    limiter.admit()
    with pytest.raises(AttackRefused, match="already running"):
        limiter.admit()
    limiter.done()
    limiter.admit()
    limiter.done()
    with pytest.raises(AttackRefused, match="at most 2 attacks a minute") as info:
        limiter.admit()
    assert info.value.http_status == 429
    now[0] = 60.0  # a minute after the first: room again
    limiter.admit()


@pytest.mark.slow
def test_a_real_attack_then_the_rate_limit():
    with serve(enabled=True, per_minute=1) as srv:
        r = post(srv, attack="fgsm", eps=8, steps=7)
        again = post(srv, attack="fgsm")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["steps"] == 1 and out["target"] == "embedding_away"  # FGSM is one step; no KB here
    clean, adv, diff = png(out["clean"]), png(out["adversarial"]), png(out["difference"])
    assert clean.size == adv.size == diff.size == (224, 224)
    assert 0 < out["linf_255"] <= 8.5  # the budget held, measured on the 8-bit image
    assert diff.getextrema() != ((0, 0), (0, 0), (0, 0))
    assert again.status_code == 429 and again.json()["error"]["code"] == "attack_rate_limited"


@pytest.mark.slow
def test_pgd_toward_the_nearest_wrong_entity_of_the_kb(linker):
    settings = ServerSettings(attack=AttackSettings(enabled=True, max_steps=5))
    with ServerThread(create_app(linker, settings)) as srv:
        r = post(srv, attack="pgd", eps=8, steps=3, entity_id="falcon_9")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["target"] == "embedding_toward_distractor"
    assert out["distractor"] and out["distractor"] != "falcon_9"
    assert 0 < out["linf_255"] <= 8.5
