"""The worklist and review in headless Chromium against the real server (uvicorn on a loopback port, tiny
checkpoints, a database in a temporary folder): flagged and unreviewed first, filter, open, agree with a
comment, draw a corrected box, and the key prompt once the server has users.

chexnet is given an operating threshold of 0 (every result flagged) and unet one of 1 (none flagged), so the
order the page must show is known. Screenshot: test-artifacts/worklist.png.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def _helpers():
    spec = importlib.util.spec_from_file_location("frontend_helpers", REPO / "tests" / "api" / "frontend_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:

    from pneumo.api import ApiSettings, create_app

    helpers = _helpers()
    models = tmp_path_factory.mktemp("models")
    default = dict(helpers.THRESHOLDS)
    try:
        for family, threshold in (("chexnet", 0.0), ("unet", 1.0)):
            helpers.THRESHOLDS = {**default, "probability_threshold": threshold}
            helpers.make_model_dir(models, families=(family,), ensemble=False, histories=False)
    finally:
        helpers.THRESHOLDS = default
    data_dir = tmp_path_factory.mktemp("data")
    app = create_app(ApiSettings(model_dir=models, data_dir=data_dir, default_model="unet"),
                     service_factory=helpers.tiny_service)
    with helpers.serve_in_thread(app) as base:
        yield base, data_dir


@pytest.fixture(scope="module")
def browser_context():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI without /usr/bin/chromium: `make install` should have installed Debian's chromium")
        pytest.skip("Debian chromium is not installed (make install adds it: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, bypass_csp=True)
        yield context
        context.close()
        browser.close()


def seed(base: str) -> dict[str, str]:
    """Four stored results: two flagged (chexnet), two not (unet); 'c' already reviewed."""
    helpers = _helpers()
    ids = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for key, model in (("a", "unet"), ("b", "chexnet"), ("c", "unet"), ("d", "chexnet")):
            data = helpers.dicom_bytes(patient_id=f"WEB-{key}")
            response = client.post(f"/v1/predictions?model={model}", files={"file": (f"case-{key}.dcm", data)})
            assert response.status_code == 200, response.text
            ids[key] = response.json()["id"]
        assert client.post(f"/v1/predictions/{ids['c']}/review", json={"decision": "agree"}).status_code == 201
    return ids


def listed(page) -> list[str]:
    return page.eval_on_selector_all("#worklist button", "els => els.map(e => e.dataset.id)")


def test_worklist_review_and_correction(server, browser_context) -> None:
    base, data_dir = server
    ids = seed(base)
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base + "/")

    # default filter: unreviewed, flagged first, newest first within each group
    page.wait_for_function("document.querySelectorAll('#worklist button').length === 3")
    assert listed(page) == [ids["d"], ids["b"], ids["a"]]
    assert page.get_attribute(f"#worklist button[data-id='{ids['d']}']", "data-flagged") == "true"
    page.select_option("#wl-status", "")
    page.wait_for_function("document.querySelectorAll('#worklist button').length === 4")
    assert listed(page) == [ids["d"], ids["b"], ids["a"], ids["c"]]  # reviewed last
    page.check("#wl-flagged")
    page.wait_for_function("document.querySelectorAll('#worklist button').length === 2")
    assert listed(page) == [ids["d"], ids["b"]]
    page.uncheck("#wl-flagged")
    page.wait_for_function("document.querySelectorAll('#worklist button').length === 4")

    # open b, agree with a comment
    page.click(f"#worklist button[data-id='{ids['b']}']")
    page.wait_for_function(f"document.getElementById('result').dataset.id === '{ids['b']}'")
    page.wait_for_function("document.getElementById('canvas').dataset.rendered === 'true'")
    assert page.inner_text("#review-current") == "Not reviewed yet."
    page.fill("#rv-comment", "consolidation confirmed")
    page.click("#rv-agree")
    page.wait_for_function("document.getElementById('review-current').dataset.status === 'agree'")
    assert "consolidation confirmed" in page.inner_text("#review-current")
    stored = httpx.get(f"{base}/v1/predictions/{ids['b']}").json()
    assert stored["review_status"] == "agree" and stored["review"]["comment"] == "consolidation confirmed"
    assert stored["review"]["reviewer"] == "anonymous"

    # open a, draw one corrected box on the canvas, save it
    page.click(f"#worklist button[data-id='{ids['a']}']")
    page.wait_for_function(f"document.getElementById('result').dataset.id === '{ids['a']}'")
    page.wait_for_function("document.getElementById('canvas').dataset.rendered === 'true'")
    page.click("#rv-draw")
    box = page.locator("#canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy - 40)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + 60, cy + 40, steps=5)
    page.mouse.up()
    page.wait_for_function("document.getElementById('rv-drawn').textContent.startsWith('1 box')")
    page.click("#rv-save-correction")
    page.wait_for_function("document.getElementById('review-current').dataset.status === 'corrected'")
    review = httpx.get(f"{base}/v1/predictions/{ids['a']}").json()["review"]
    assert review["decision"] == "corrected" and len(review["boxes"]) == 1
    drawn = review["boxes"][0]
    assert 0 <= drawn["x"] < 32 < drawn["x"] + drawn["width"] <= 64  # centred on the 64 x 64 image
    assert 0 <= drawn["y"] < 32 < drawn["y"] + drawn["height"] <= 64

    page.select_option("#wl-status", "unreviewed")
    page.wait_for_function("document.querySelectorAll('#worklist button').length === 1")
    assert listed(page) == [ids["d"]]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "worklist.png"))

    # the open server's local admin adds the first user in the admin panel; from then on keys are required
    assert page.is_visible("#admin")
    key_of = {}
    for name, role in (("ada", "admin"), ("rita", "reader")):
        page.fill("#user-name", name)
        page.select_option("#user-role", role)
        page.click("#user-form button[type=submit]")
        page.wait_for_function(f"document.getElementById('new-key').textContent.includes('for {name} ')")
        key_of[name] = page.inner_text("#new-key-value")
        assert key_of[name].startswith("pn_")
        if name == "ada":  # the server now has users: the page asks for a key (and keeps the new one on screen)
            page.wait_for_selector("#key-section:not([hidden])")
            assert page.is_visible("#new-key-value")
            page.fill("#api-key", key_of["ada"])
            page.dispatch_event("#api-key", "change")
            page.wait_for_function("document.getElementById('whoami').textContent === 'Signed in as ada (admin).'")
    page.wait_for_function("document.querySelectorAll('#users li').length === 2")
    page.wait_for_selector("#audit li[data-action='user_add']")
    assert "ada: user_add rita" in page.inner_text("#audit")

    # a reader signs in: worklist yes, admin panel no (and the server refuses admin calls from that key)
    page.fill("#api-key", key_of["rita"])
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.getElementById('whoami').textContent === 'Signed in as rita (reader).'")
    page.wait_for_function("document.getElementById('admin').hidden === true")
    page.wait_for_function("document.querySelectorAll('#worklist button').length === 1")
    assert httpx.get(f"{base}/v1/users", headers={"X-API-Key": key_of["rita"]}).status_code == 403

    # the admin disables the reader: her key stops working at once
    page.fill("#api-key", key_of["ada"])
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.getElementById('admin').hidden === false")
    page.wait_for_selector("#users li[data-name='rita'] button")
    page.click("#users li[data-name='rita'] button")
    page.wait_for_selector("#users li[data-name='rita'][data-disabled='true']")
    assert httpx.get(f"{base}/v1/predictions", headers={"X-API-Key": key_of["rita"]}).status_code == 401
    assert not errors, f"JavaScript errors on the page: {errors}"
    page.close()
