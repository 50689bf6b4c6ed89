"""The web page in a real headless Chromium (Debian's, driven by selenium; nothing downloaded).

One real server (the session's linker, an API key, the attack endpoint on) and one browser:
the key is asked once and kept in session storage; a demo image is linked with the nodes
streaming in, the entity, its KB image and the candidate table; the Attack panel perturbs the
image and links both; a bad image gives a clear message; the layout holds on a phone-sized
window. Screenshots of each state go to `.cache/screenshots/` in the repository (or
$RETLINK_SCREENSHOTS) for people to look at.

Skipped only when chromium is absent and RETLINK_REQUIRE_DEPS is unset (`make test` installs it
with `make browser` and sets it, so there a missing browser fails).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from retlink.serve.app import ServerSettings, create_app
from retlink.serve.attack import AttackSettings
from tests.conftest import REPO, skip_or_fail
from tests.server.conftest import API_KEY, DEMO, ServerThread

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: headless, and no background connections (this machine's closed network refuses them)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,2000"]
EXAMPLES = {json.loads(x)["id"]: json.loads(x) for x in (DEMO / "examples.jsonl").read_text().splitlines() if x.strip()}
EXAMPLE_ID = "falcon_rocket" if "falcon_rocket" in EXAMPLES else next(iter(EXAMPLES))


def browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    if missing:
        skip_or_fail(f"{', '.join(missing)} missing: run `make browser` (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def shots() -> Path:
    out = Path(os.environ.get("RETLINK_SCREENSHOTS", REPO / ".cache" / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def page_server(linker):
    settings = ServerSettings(api_key=API_KEY, attack=AttackSettings(enabled=True, max_steps=5, per_minute=20))
    with ServerThread(create_app(linker, settings)) as srv:
        yield srv


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look anything up online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service(DRIVER))
    drv.set_script_timeout(30)
    yield drv
    drv.quit()


def wait_for(drv, script: str, timeout_s: float = 400):
    """Wait until a JS expression is truthy (a link on 2 loaded cores takes up to a minute)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout_s, poll_frequency=0.2).until(lambda d: d.execute_script(f"return {script}"))


def text(drv, selector: str) -> str:
    return drv.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
                              selector)


@pytest.fixture
def page(driver, page_server):
    """The page freshly opened; the API key is given in its dialog the first time (the tab's
    session storage keeps it for the later loads)."""
    from selenium.webdriver.common.by import By

    driver.set_window_size(1280, 2000)
    driver.get(page_server.url + "/")
    wait_for(driver, "document.body.dataset.ready === 'true' || document.querySelector('#key-dialog').open", 60)
    if driver.execute_script("return document.querySelector('#key-dialog').open"):
        driver.find_element(By.ID, "key-input").send_keys(API_KEY)
        driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_for(driver, "document.body.dataset.ready === 'true'", 60)
    return driver


def pick_demo(drv) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(drv.find_element(By.ID, "demo")).select_by_value(EXAMPLE_ID)
    wait_for(drv, "document.querySelector('#sentence').value.length > 0 && !document.querySelector('#preview-box').hidden", 60)
    return EXAMPLES[EXAMPLE_ID]


def test_key_is_asked_once_and_kept_in_session_storage_only(page):
    assert page.execute_script("return sessionStorage.getItem('retlink.apiKey')") == API_KEY
    assert page.execute_script("return localStorage.length") == 0
    assert "retlink" not in page.execute_script("return document.cookie")


def test_link_a_demo_image_streams_nodes_and_shows_the_answer(page, linker, shots):
    from selenium.webdriver.common.by import By

    ex = pick_demo(page)
    expected = linker.link(DEMO / ex["image"], ex["mention"], ex["context"]).entity_id
    page.save_screenshot(str(shots / "1-ready.png"))
    page.find_element(By.ID, "link-button").click()
    wait_for(page, "document.querySelectorAll('[data-run=main] .nodes li').length > 0", 120)
    page.save_screenshot(str(shots / "2-streaming.png"))
    wait_for(page, "document.querySelector('[data-run=main]').dataset.state === 'done'")
    items = page.execute_script("return [...document.querySelectorAll('[data-run=main] .nodes li')]"
                                ".map(l => [l.dataset.node, l.textContent])")
    nodes = [n for n, _ in items]
    assert nodes[0] == "validate" and nodes[-1] == "finalize" and {"caption", "retrieve"} <= set(nodes)
    assert all(label.startswith(node) and " s" in label for node, label in items)  # each with its time
    assert text(page, "[data-run=main] .entity-name").endswith(f"({expected})")
    rows = page.execute_script("return [...document.querySelectorAll('[data-run=main] .candidates tbody tr')]"
                               ".map(r => [...r.children].map(c => c.textContent))")
    assert len(rows) >= 2 and all(len(r) == 6 for r in rows)
    assert any(r[0].endswith(f"({expected})") for r in rows)
    assert any(r[5] != "–" for r in rows)  # the final probabilities of the decision
    if expected:
        wait_for(page, "document.querySelector('[data-run=main] .entity-image').naturalWidth > 0", 30)
        assert text(page, "[data-run=main] .entity-description")
    assert text(page, "[data-run=main] .caption").startswith("Caption:")
    assert text(page, "[data-run=main] .rationale")
    page.save_screenshot(str(shots / "3-linked.png"))
    full_page(page, shots / "3-linked-full.png")


def test_attack_panel_shows_both_images_the_difference_and_both_links(page, shots):
    from selenium.webdriver.common.by import By

    opened = page
    pick_demo(opened)
    assert opened.execute_script("return !document.querySelector('#attack').hidden")
    steps = opened.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("3")
    opened.find_element(By.ID, "attack-button").click()
    wait_for(opened, "!document.querySelector('#attack-images').hidden", 300)
    for img in ("img-clean", "img-adv", "img-diff"):
        assert opened.execute_script(f"return document.getElementById('{img}').src").startswith("data:image/png")
    wait_for(opened, "document.querySelector('#img-diff').naturalWidth > 0", 30)
    diff_energy = opened.execute_script("""
        const img = document.getElementById('img-diff'), c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0;
        for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
        return s;""")
    assert diff_energy > 0  # the perturbation is there, magnified
    assert "L-inf" in text(opened, "#diff-caption")
    wait_for(opened, "['clean', 'adv'].every(r => document.querySelector(`[data-run=${r}]`).dataset.state === 'done')")
    for run in ("clean", "adv"):
        assert text(opened, f"[data-run={run}] .entity-name")
        assert opened.execute_script(f"return document.querySelectorAll('[data-run={run}] .candidates tbody tr').length") >= 1
    full_page(opened, shots / "4-attack.png")


def test_a_bad_image_shows_a_clear_message(page, tmp_path, shots):
    from selenium.webdriver.common.by import By

    opened = page
    opened.find_element(By.ID, "sentence").send_keys("The [Falcon] lifted off.")
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    opened.find_element(By.ID, "file").send_keys(str(bad))
    wait_for(opened, "document.querySelector('#preview-caption').textContent.startsWith('notes.jpg')", 30)
    opened.find_element(By.ID, "link-button").click()
    wait_for(opened, "!document.querySelector('#error').hidden", 120)
    message = text(opened, "#error")
    assert "not an image" in message and "Traceback" not in message
    assert opened.execute_script("return document.querySelector('#run').hidden")
    opened.save_screenshot(str(shots / "5-bad-image.png"))


def test_the_page_fits_a_phone(page, shots):
    pick_demo(page)
    page.set_window_size(390, 844)
    overflow = page.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    page.save_screenshot(str(shots / "6-phone.png"))


def test_everything_is_reachable_by_keyboard_and_labelled(page):
    opened = page
    unlabelled = opened.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')].filter(e => !e.closest('[hidden]'))
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !e.getAttribute('aria-labelledby')).map(e => e.id || e.name);""")
    assert unlabelled == []
    from selenium.webdriver.common.keys import Keys

    body = opened.find_element("tag name", "body")
    seen = set()
    for _ in range(25):
        body.send_keys(Keys.TAB)
        seen.add(opened.execute_script("return document.activeElement.id"))
    assert {"demo", "file", "sentence", "link-button"} <= seen


def full_page(drv, path: Path) -> None:
    """A screenshot of the whole page (the window stretched to its height, then restored)."""
    size = drv.get_window_size()
    height = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(size["width"], min(max(height, 800), 6000))
    try:
        drv.save_screenshot(str(path))
    finally:
        drv.set_window_size(size["width"], size["height"])
