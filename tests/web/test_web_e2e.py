"""The web page in headless Chromium against the real server (uvicorn on a loopback port, tiny checkpoints).

Uses Debian's /usr/bin/chromium through Playwright for Python (never `playwright install`). Saves a
screenshot to test-artifacts/web.png.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def _helpers():
    path = REPO / "tests" / "api" / "frontend_helpers.py"
    spec = importlib.util.spec_from_file_location("frontend_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, rsna_mini: Path) -> Iterator[str]:

    from pneumo.api import ApiSettings, create_app

    helpers = _helpers()
    model_dir = helpers.make_model_dir(tmp_path_factory.mktemp("models"), histories=False)
    settings = ApiSettings(model_dir=model_dir, labels=rsna_mini / "stage_2_train_labels.csv")
    app = create_app(settings, service_factory=helpers.tiny_service)
    with helpers.serve_in_thread(app) as base:
        yield base


@pytest.fixture(scope="module")
def web_page(server: str):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):  # CI must run the browser test, never skip it silently
            pytest.fail("CI without /usr/bin/chromium: `make install` should have installed Debian's chromium")
        pytest.skip("Debian chromium is not installed (make install adds it: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True,
                                      bypass_csp=True)  # lets Playwright evaluate its probes; the page keeps its CSP
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server + "/")
        yield page
        assert not errors, f"JavaScript errors on the page: {errors}"
        context.close()
        browser.close()


def _positive_case(rsna_mini: Path) -> tuple[Path, int]:
    counts: dict[str, int] = {}
    with open(rsna_mini / "stage_2_train_labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Target"] == "1":
                counts[row["patientId"]] = counts.get(row["patientId"], 0) + 1
    patient = sorted(p for p, n in counts.items() if n >= 2)[0]
    return rsna_mini / "stage_2_train_images" / f"{patient}.dcm", counts[patient]


def _upload_and_wait(page, path: Path, previous_id: str | None = None) -> str:
    page.set_input_files("#file", str(path))
    page.wait_for_function(
        "prev => { const r = document.getElementById('result'); const c = document.getElementById('canvas');"
        " return !r.hidden && r.dataset.id && r.dataset.id !== prev && c.dataset.rendered === 'true'; }",
        arg=previous_id or "", timeout=60_000,
    )
    return page.get_attribute("#result", "data-id")


COUNT_COLOUR = """([r, g, b]) => {
  const c = document.getElementById('canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - r) < 8 && Math.abs(d[i+1] - g) < 8 && Math.abs(d[i+2] - b) < 8) n++;
  return n;
}"""
CANVAS_SUM = """() => {
  const c = document.getElementById('canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0; for (let i = 0; i < d.length; i += 16) s += d[i] + d[i+1] + d[i+2];
  return s;
}"""


def test_upload_view_and_download(web_page, server: str, rsna_mini: Path) -> None:
    page = web_page
    # the model selector is filled from /v1/models, ensemble first choice
    page.wait_for_function("document.querySelectorAll('#model option').length === 4")
    assert page.input_value("#model") == "ensemble"

    positive, n_truth = _positive_case(rsna_mini)
    result_id = _upload_and_wait(page, positive)
    api = httpx.get(f"{server}/v1/predictions/{result_id}").json()

    assert page.inner_text("#probability") == f"{100 * api['probability']:.1f}%"
    assert "not a diagnosis" in page.inner_text("#result").lower()
    assert page.inner_text("#model-name") == f"ensemble · version {api['model_version']}"
    box_items = page.locator("#boxes li.box")
    assert box_items.count() == len(api["boxes"]) > 0
    assert box_items.first.inner_text().startswith(f"{100 * api['boxes'][0]['confidence']:.1f}%")
    assert page.locator("#truth li").count() == n_truth and page.is_visible("#truth-section")

    # boxes are drawn on the canvas: prediction orange and ground truth green
    assert page.evaluate(COUNT_COLOUR, [255, 120, 0]) > 50
    assert page.evaluate(COUNT_COLOUR, [40, 220, 60]) > 50

    # heatmap toggle and window/level change what is drawn
    plain = page.evaluate(CANVAS_SUM)
    page.check("#show-heatmap")
    assert page.evaluate(CANVAS_SUM) != plain
    page.uncheck("#show-heatmap")
    page.fill("#window", "60")
    page.wait_for_function("document.getElementById('window-value').textContent === '60'")
    page.wait_for_timeout(100)
    assert page.evaluate(CANVAS_SUM) != plain

    # wheel zoom changes the view, double-click resets it (including window/level)
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(100)
    zoomed = page.evaluate(CANVAS_SUM)
    page.dblclick("#canvas")
    page.wait_for_timeout(100)
    assert page.evaluate(CANVAS_SUM) == plain != zoomed

    # downloads: JSON, Kaggle CSV row, overlay PNG
    with page.expect_download() as info:
        page.click("#dl-json")
    assert json.loads(Path(info.value.path()).read_text())["id"] == result_id
    with page.expect_download() as info:
        page.click("#dl-csv")
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows[0] == ["patientId", "PredictionString"] and rows[1][0] == positive.stem
    with page.expect_download() as info:
        page.click("#dl-overlay")
    assert Path(info.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second image with another model, then revisit the first from the session list
    page.select_option("#model", "chexnet")
    negative = rsna_mini / "stage_2_train_images" / "0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm"
    if not negative.exists():
        negative = next(p for p in sorted((rsna_mini / "stage_2_train_images").glob("*.dcm")) if p != positive)
    second_id = _upload_and_wait(page, negative, result_id)
    assert page.inner_text("#model-name").startswith("chexnet")
    assert page.locator("#history li").count() == 2
    page.click(f"#history button[data-id='{result_id}']")
    page.wait_for_function(f"document.getElementById('result').dataset.id === '{result_id}'")
    assert page.inner_text("#probability") == f"{100 * api['probability']:.1f}%"
    assert second_id != result_id

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web.png"))


def test_bad_upload_shows_an_error_and_the_page_keeps_working(web_page, tmp_path: Path) -> None:
    page = web_page
    bad = tmp_path / "notes.dcm"
    bad.write_bytes(b"definitely not a radiograph" * 20)
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "notes.dcm" in page.inner_text("#status")
    assert page.is_hidden("#busy")
