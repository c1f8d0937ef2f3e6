"""The REST API end to end over ASGI, with the real InferenceService and tiny random-init checkpoints."""

from __future__ import annotations

import base64
import csv
import io
import logging
import threading
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from frontend_helpers import dicom_bytes, tiny_service
from PIL import Image

from pneumo import DISCLAIMER
from pneumo.api import ApiSettings, create_app
from pneumo.api.errors import status_for
from pneumo.data.rsna import read_rsna_labels
from pneumo.errors import (
    CheckpointError,
    ImageTooLargeError,
    InvalidImageError,
    MissingPixelDataError,
    NotChestRadiographError,
    UnknownModelError,
    UnsupportedTransferSyntaxError,
)
from pneumo.io import read_xray
from pneumo.outputs import format_prediction_string


@pytest.fixture(scope="module")
def client(model_dir: Path, rsna_cases: dict) -> TestClient:
    settings = ApiSettings(model_dir=model_dir, labels=rsna_cases["labels"], max_upload_mb=4, workers=2)
    with TestClient(create_app(settings, service_factory=tiny_service)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def positive(client: TestClient, rsna_cases: dict) -> dict:
    """One ensemble prediction on a real positive rsna-mini DICOM (kept for the follow-up GETs)."""
    path: Path = rsna_cases["positive"]
    response = client.post("/v1/predictions", files={"file": (path.name, path.read_bytes(), "application/dicom")})
    assert response.status_code == 200, response.text
    return response.json()


def post(client: TestClient, data: bytes, name: str = "x.dcm", **params: object) -> httpx.Response:
    return client.post("/v1/predictions", params=params, files={"file": (name, data, "application/octet-stream")})


def xywh_array(boxes: list[dict], confidence: bool = True) -> np.ndarray:
    """API boxes -> (N, 5) or (N, 4) xyxy[+conf] float array."""
    rows = [[b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"]] + ([b["confidence"]] if confidence else [])
            for b in boxes]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5 if confidence else 4)


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return response.status_code, body["error"]["code"]


# ----------------------------------------------------------------------------------------- health, models


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["models"]) == {"unet", "maskrcnn", "chexnet", "ensemble"}


def test_readyz_is_503_without_models(tmp_path: Path) -> None:
    with TestClient(create_app(ApiSettings(model_dir=tmp_path), service_factory=tiny_service)) as empty:
        assert empty.get("/healthz").status_code == 200
        response = empty.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "unavailable"
        assert error_of(post(empty, dicom_bytes())) == (503, "no_models")


def test_models_lists_checkpoint_metadata_without_server_paths(client: TestClient, model_dir: Path) -> None:
    body = client.get("/v1/models").json()
    assert body["default"] == "ensemble"
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {"unet", "maskrcnn", "chexnet", "ensemble"}
    assert models["unet"]["family"] == "unet" and models["ensemble"]["family"] == "ensemble"
    assert models["maskrcnn"]["metrics"]["val_map"] == pytest.approx(0.02)  # as saved by frontend_helpers
    assert models["unet"]["thresholds"]["box_threshold"] == 0.0
    assert [m["default"] for m in body["models"]].count(True) == 1 and models["ensemble"]["default"]
    assert str(model_dir) not in client.get("/v1/models").text  # no server paths leak


# ----------------------------------------------------------------------------------------- predictions


def test_prediction_matches_the_service_and_carries_ground_truth(
    client: TestClient, positive: dict, rsna_cases: dict
) -> None:
    path: Path = rsna_cases["positive"]
    service = client.app.state.pneumo.service
    direct = service.predict(read_xray(path), "ensemble")
    assert positive["probability"] == pytest.approx(direct.probability, abs=1e-6)
    assert xywh_array(positive["boxes"]) == pytest.approx(xywh_array([b.to_xywh() for b in direct.boxes]), abs=1e-4)
    assert positive["model"] == "ensemble" and positive["model_version"] == direct.model_version
    assert (positive["image_width"], positive["image_height"]) == (1024, 1024)
    assert positive["disclaimer"] == DISCLAIMER and positive["source_format"] == "dicom"
    assert positive["threshold"] == 0.5 and positive["positive"] == (positive["probability"] >= 0.5)
    assert set(positive["member_probabilities"]) == {"unet", "maskrcnn", "chexnet"}
    assert positive["boxes"], "the tiny unet (mask threshold 0) always yields a box"
    for box in positive["boxes"]:
        assert 0 <= box["x"] and 0 <= box["y"] and box["width"] > 0 and box["height"] > 0
        assert box["x"] + box["width"] <= 1024.01 and box["y"] + box["height"] <= 1024.01
        assert 0.0 <= box["confidence"] <= 1.0
    truth = read_rsna_labels(rsna_cases["labels"])[path.stem]
    assert positive["ground_truth"]["positive"] is True
    assert xywh_array(positive["ground_truth"]["boxes"], False) == pytest.approx(truth, abs=1e-4)
    assert positive["timing_ms"]["decode"] > 0 and positive["timing_ms"]["predict"] > 0
    assert isinstance(positive["warnings"], list) and positive["heatmap_available"] is True


def test_follow_up_endpoints(client: TestClient, positive: dict, rsna_cases: dict) -> None:
    rid = positive["id"]
    assert client.get(f"/v1/predictions/{rid}").json() == positive

    image = client.get(f"/v1/predictions/{rid}/image.png")
    assert image.headers["content-type"] == "image/png" and image.headers["cache-control"] == "no-store"
    decoded = np.asarray(Image.open(io.BytesIO(image.content)))
    expected = np.clip(read_xray(rsna_cases["positive"]).pixels * 255 + 0.5, 0, 255).astype(np.uint8)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, expected)

    heat = Image.open(io.BytesIO(client.get(f"/v1/predictions/{rid}/heatmap.png").content))
    assert heat.mode == "RGBA" and min(heat.size) > 1

    overlay = np.asarray(Image.open(io.BytesIO(client.get(f"/v1/predictions/{rid}/overlay.png").content)))
    assert overlay.shape == (1024, 1024, 3)
    assert (np.all(overlay == (40, 220, 60), axis=-1)).sum() > 100  # ground truth drawn in green
    assert (np.all(overlay == (255, 120, 0), axis=-1)).sum() > 100  # predictions in orange

    text = client.get(f"/v1/predictions/{rid}/submission.csv").text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["patientId", "PredictionString"] and len(rows) == 2
    boxes = np.array([[b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"], b["confidence"]]
                      for b in positive["boxes"]], dtype=np.float32)
    assert rows[1] == [rsna_cases["positive"].stem, format_prediction_string(boxes)]


def test_embedded_pngs_and_model_choice(client: TestClient, rsna_cases: dict) -> None:
    data = rsna_cases["negative"].read_bytes()
    body = post(client, data, "neg.dcm", model="chexnet", heatmap="true", overlay="true").json()
    assert body["model"] == "chexnet" and body["member_probabilities"] is None
    for key in ("heatmap_png", "overlay_png"):
        assert body[key].startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(body[key].split(",", 1)[1]))).size[0] > 0
    assert body["ground_truth"] == {"positive": False, "boxes": []}  # matched on the DICOM PatientID
    assert "heatmap_png" not in client.get(f"/v1/predictions/{body['id']}").json()


def test_png_upload_matches_labels_by_file_stem(client: TestClient, rsna_cases: dict) -> None:
    pixels = (read_xray(rsna_cases["positive"]).pixels[::8, ::8] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    name = rsna_cases["positive"].stem + ".png"
    body = client.post("/v1/predictions?model=unet", files={"file": (name, buffer.getvalue(), "image/png")}).json()
    assert body["source_format"] == "png" and (body["image_width"], body["image_height"]) == (128, 128)
    assert body["ground_truth"]["positive"] is True  # by the stem; boxes are in the labels' pixels
    row = client.get(f"/v1/predictions/{body['id']}/submission.csv").text.splitlines()[1]
    assert row.startswith(rsna_cases["positive"].stem + ",")


def test_raw_body_upload(client: TestClient) -> None:
    response = client.post("/v1/predictions?model=chexnet", content=dicom_bytes(),
                           headers={"content-type": "application/dicom"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["image_width"], body["image_height"]) == (64, 64) and body["ground_truth"] is None


# ----------------------------------------------------------------------------------------- errors


def test_unknown_model_and_ids_are_404(client: TestClient) -> None:
    assert error_of(post(client, dicom_bytes(), model="resnet152")) == (404, "unknown_model")
    assert error_of(post(client, dicom_bytes(), model="/etc/passwd")) == (404, "unknown_model")  # never a path
    for suffix in ("", "/image.png", "/overlay.png", "/heatmap.png", "/submission.csv"):
        assert error_of(client.get(f"/v1/predictions/0123456789abcdef{suffix}")) == (404, "not_found")


def test_bad_uploads_get_typed_errors_and_the_server_stays_up(client: TestClient, rsna_cases: dict) -> None:
    real = rsna_cases["negative"].read_bytes()
    huge = dicom_bytes(rows=60000, columns=60000, pixel_bytes=b"\0" * 64)
    gif = b"GIF89a" + b"\0" * 64
    cases = {
        "garbage": (b"this is not an image at all" * 10, (400, "invalid_image")),
        "empty": (b"", (400, "invalid_image")),
        "truncated DICOM": (real[: len(real) // 2], (400, None)),
        "huge dimensions": (huge, (413, "image_too_large")),
        "CT modality": (dicom_bytes(modality="CT"), (422, "not_chest_radiograph")),
        "GIF": (gif, (415, "unsupported_media_type")),
    }
    for name, (data, (status, code)) in cases.items():
        response = post(client, data, "case.bin", model="chexnet")
        got_status, got_code = error_of(response)
        assert got_status == status, (name, response.text)
        assert code is None or got_code == code, (name, response.text)
    text = client.post("/v1/predictions", content=b"hello", headers={"content-type": "text/plain"})
    assert error_of(text) == (415, "unsupported_media_type")
    no_file = client.post("/v1/predictions", data={"other": "x"}, files={"notfile": ("a", b"b")})
    assert error_of(no_file)[0] == 400
    assert error_of(client.post("/v1/predictions?heatmap=maybe", content=b"x",
                                headers={"content-type": "image/png"})) == (400, "invalid_request")
    assert post(client, dicom_bytes(), model="chexnet").status_code == 200  # still serving


def test_status_mapping_lives_in_one_table() -> None:
    assert status_for(InvalidImageError("x")) == 400
    assert status_for(MissingPixelDataError("x")) == 400
    assert status_for(UnsupportedTransferSyntaxError("x")) == 415
    assert status_for(NotChestRadiographError("x")) == 422
    assert status_for(ImageTooLargeError("x")) == 413
    assert status_for(UnknownModelError("x")) == 404
    assert status_for(CheckpointError("x")) == 503


def test_upload_limit_on_content_length_and_on_bytes_read(model_dir: Path) -> None:
    settings = ApiSettings(model_dir=model_dir, max_upload_mb=0.01)  # 10 KiB
    big = dicom_bytes(rows=128, columns=128)  # about 17 KiB
    with TestClient(create_app(settings, service_factory=tiny_service)) as small:
        declared = small.post("/v1/predictions", files={"file": ("a.dcm", big)})
        assert error_of(declared) == (413, "upload_too_large")

        def chunks():  # no Content-Length: the server must count what arrives
            for start in range(0, len(big), 1024):
                yield big[start : start + 1024]

        streamed = small.post("/v1/predictions", content=chunks(), headers={"content-type": "application/dicom"})
        assert "content-length" not in streamed.request.headers
        assert error_of(streamed) == (413, "upload_too_large")

        lying = small.post("/v1/predictions", content=chunks(),
                           headers={"content-type": "application/dicom", "content-length": "100"})
        assert error_of(lying) == (413, "upload_too_large")
        ok = small.post("/v1/predictions?model=chexnet", content=dicom_bytes(),
                        headers={"content-type": "application/dicom"})
        assert ok.status_code == 200


def test_api_key(model_dir: Path) -> None:
    settings = ApiSettings.from_env({"PNEUMO_API_KEY": "s3cret"}, model_dir=model_dir)
    assert settings.api_key == "s3cret"
    with TestClient(create_app(settings, service_factory=tiny_service)) as locked:
        assert locked.get("/healthz").status_code == 200 and locked.get("/").status_code == 200
        assert error_of(locked.get("/v1/models")) == (401, "unauthorized")
        assert error_of(locked.get("/v1/models", headers={"X-API-Key": "wrong"})) == (401, "unauthorized")
        assert error_of(post(locked, dicom_bytes())) == (401, "unauthorized")
        assert locked.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert locked.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert ApiSettings.from_env({"PNEUMO_API_KEY": "env"}, api_key="arg").api_key == "arg"


# ----------------------------------------------------------------------------------------- concurrency, logs


class CountingService:
    """The real service, counting how many predictions run at once. ``rendezvous``: a prediction waits (up to
    ``wait_s``) until that many run at once, so requests the pool lets run in parallel do overlap (decoding and
    storing happen outside ``predict`` and could otherwise keep two workers out of phase)."""

    def __init__(self, service, rendezvous: int = 1, wait_s: float = 5.0) -> None:
        self.service = service
        self.active = 0
        self.peak = 0
        self.rendezvous, self.wait_s = rendezvous, wait_s
        self.changed = threading.Condition()

    def __getattr__(self, name: str):
        return getattr(self.service, name)

    def predict(self, *args, **kwargs):
        with self.changed:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.peak >= self.rendezvous, timeout=self.wait_s)
        try:
            return self.service.predict(*args, **kwargs)
        finally:
            with self.changed:
                self.active -= 1


def test_concurrent_requests_are_bounded_by_the_worker_pool(model_dir: Path, rsna_cases: dict) -> None:
    data = rsna_cases["negative"].read_bytes()
    counting: list[CountingService] = []
    rendezvous = [2]  # the first scenario's two workers must overlap; the single-worker one waits for nobody

    def factory(settings):
        counting.append(CountingService(tiny_service(settings), rendezvous=rendezvous[0]))
        return counting[0]

    async def scenario(workers: int, max_queue: int, n: int) -> list[httpx.Response]:
        app = create_app(ApiSettings(model_dir=model_dir, workers=workers, max_queue=max_queue), factory)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pneumo.test", timeout=60) as c:
                responses: list[httpx.Response] = []

                async def one() -> None:
                    responses.append(await c.post("/v1/predictions?model=unet", files={"file": ("a.dcm", data)}))

                async with anyio.create_task_group() as group:
                    for _ in range(n):
                        group.start_soon(one)
                return responses

    responses = anyio.run(scenario, 2, 8, 5)
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.json()["id"] for r in responses}) == 5
    assert counting[0].peak == 2  # ran in parallel, never more than the pool allows

    counting.clear()
    rendezvous[0] = 1
    busy = anyio.run(scenario, 1, 1, 5)
    statuses = sorted(r.status_code for r in busy)
    assert statuses.count(200) >= 2 and 503 in statuses  # back-pressure instead of an unbounded queue
    refused = next(r for r in busy if r.status_code == 503)
    assert error_of(refused) == (503, "busy") and refused.headers["retry-after"] == "1"
    assert counting[0].peak == 1


def test_logs_have_request_ids_and_timings_but_no_patient_ids(
    client: TestClient, rsna_cases: dict, caplog: pytest.LogCaptureFixture
) -> None:
    path: Path = rsna_cases["positive"]
    with caplog.at_level(logging.INFO, logger="pneumo.api"):
        response = client.post("/v1/predictions?model=unet", files={"file": (path.name, path.read_bytes())},
                               headers={"X-Request-ID": "req-abc-123"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-abc-123"
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "req-abc-123" in text and "ms" in text
    assert path.stem not in text  # neither the PatientID nor the file name is logged
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 16 and client.get("/healthz", headers={"X-Request-ID": "bad id!"}).headers[
        "x-request-id"] != "bad id!"


def test_result_store_is_a_bounded_lru(client: TestClient) -> None:
    from pneumo.api.store import ResultStore, StoredResult
    from pneumo.types import Prediction

    def result(rid: str, side: int = 10) -> StoredResult:
        prediction = Prediction(0.5, (), "m", "v", (side, side))
        return StoredResult(rid, prediction, np.zeros((side, side), np.uint8), None, rid, {})

    store = ResultStore(max_entries=2, max_bytes=10_000)
    store.put(result("a"))
    store.put(result("b"))
    assert store.get("a") is not None  # a is now the most recent
    store.put(result("c"))
    assert store.get("b") is None and store.get("a") is not None and len(store) == 2
    store.put(result("big", side=100))  # 10000 bytes: pushes the others out by size
    assert store.get("big") is not None and len(store) == 1


# ----------------------------------------------------------------------------------------- pages


def test_web_page_static_files_and_offline_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Decision support" in page.text and "script-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert client.get("/static/app.js").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "/v1/predictions" in client.get("/openapi.json").json()["paths"]
