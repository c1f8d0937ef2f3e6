"""Serving ONNX exports never imports torch (issue 15), and gives the torch backend's answers.

A fresh Python process (no test fixture has imported torch there) serves real rsna-mini radiographs from
ONNX exports of tiny random-init checkpoints of every family: ``InferenceService`` for chexnet, maskrcnn, unet
and the ensemble (flip TTA, the ensemble's default), one request through the REST API app, and the ``pneumo
predict`` CLI with the default ``auto`` backend. It then reports ``torch``/``torchvision`` in ``sys.modules``
and its predictions; this process compares them with the torch backend's within the ONNX parity tolerances
(``tests/integration/test_onnx_parity.py``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pneumo.export.exporter import export_checkpoint
from pneumo.io import read_xray
from pneumo.postprocess import iou_matrix
from pneumo.service import InferenceService

REPO = Path(__file__).resolve().parents[2]
MODELS = ("chexnet", "maskrcnn", "unet", "ensemble")
#: the ONNX parity tolerances (test_onnx_parity.py)
PROB_TOL, HEAT_TOL, MIN_IOU = 1e-3, 1e-3, 0.99

#: run in the fresh process: argv = model folder, output folder, image paths
SERVE = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import numpy as np

    model_dir, out, images = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    from pneumo.io import read_xray
    from pneumo.service import InferenceService

    service = InferenceService(model_dir, backend="onnx", num_threads=1)
    results, arrays = {}, {}
    for i, image in enumerate(images):
        xray = read_xray(image)
        for model in ("chexnet", "maskrcnn", "unet", "ensemble"):
            p = service.predict(xray, model)
            results[f"{model}/{i}"] = {"probability": p.probability, "version": p.model_version,
                                       "boxes": [[b.x1, b.y1, b.x2, b.y2, b.confidence] for b in p.boxes]}
            if p.heatmap is not None:
                arrays[f"{model}/{i}"] = p.heatmap
    after_service = sorted(m for m in ("torch", "torchvision") if m in sys.modules)

    from fastapi.testclient import TestClient
    from pneumo.api.app import create_app
    from pneumo.api.settings import ApiSettings

    with TestClient(create_app(ApiSettings(model_dir=model_dir, backend="onnx", workers=1))) as client:
        response = client.post("/v1/predictions", params={"model": "chexnet"},
                               files={"file": ("a.dcm", Path(images[0]).read_bytes(), "application/dicom")})
    api = {"status": response.status_code, "probability": response.json().get("probability")}

    from pneumo.cli import main
    code = main(["predict", "--model", "chexnet", "--model-dir", str(model_dir), "--no-progress",
                 "--output", str(out / "cli.jsonl"), *images])
    np.savez(out / "heatmaps.npz", **{k.replace("/", "__"): v for k, v in arrays.items()})
    (out / "served.json").write_text(json.dumps({
        "predictions": results, "api": api, "cli_exit": code, "after_service": after_service,
        "modules": sorted(m for m in ("torch", "torchvision") if m in sys.modules)}))
''')


def _frontend_helpers():
    spec = importlib.util.spec_from_file_location("frontend_helpers", REPO / "tests" / "api" / "frontend_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Tiny chexnet, unet, maskrcnn checkpoints (64 px), their ONNX exports, and an ensemble over them."""
    folder = _frontend_helpers().make_model_dir(tmp_path_factory.mktemp("torch-free"), histories=False)
    for family in ("chexnet", "unet", "maskrcnn"):
        export_checkpoint(folder / f"{family}.pt")
    return folder


@pytest.fixture(scope="module")
def images(rsna_mini: Path) -> list[Path]:
    """Two real radiographs: one with opacity boxes, one without."""
    targets: dict[str, str] = {}
    with (rsna_mini / "stage_2_train_labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            targets.setdefault(row["patientId"], row["Target"])
    chosen = [sorted(p for p, t in targets.items() if t == label)[0] for label in ("1", "0")]
    return [rsna_mini / "stage_2_train_images" / f"{pid}.dcm" for pid in chosen]


@pytest.fixture(scope="module")
def served(model_dir: Path, images: list[Path], tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("served")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "PNEUMO_BACKEND": "", "PNEUMO_TORCH_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", SERVE, str(model_dir), str(out), *map(str, images)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "served.json").read_text())
    with np.load(out / "heatmaps.npz") as heatmaps:
        result["heatmaps"] = {k.replace("__", "/"): heatmaps[k] for k in heatmaps.files}
    result["cli"] = [json.loads(line) for line in (out / "cli.jsonl").read_text().splitlines()]
    return result


@pytest.mark.slow
def test_serving_onnx_never_imports_torch(served):
    assert served["after_service"] == [], "InferenceService imported torch serving ONNX exports"
    assert served["modules"] == [], "the API app or the predict CLI imported torch"


@pytest.mark.slow
def test_torch_free_predictions_equal_the_torch_backend(served, model_dir, images):
    torch_service = InferenceService(model_dir, backend="torch", num_threads=1)
    boxes_compared = 0
    for i, image in enumerate(images):
        xray = read_xray(image)
        for model in MODELS:
            where = f"{model} image {i}"
            want, got = torch_service.predict(xray, model), served["predictions"][f"{model}/{i}"]
            assert got["version"] == want.model_version, where
            assert abs(got["probability"] - want.probability) < PROB_TOL, where
            assert (want.heatmap is None) == (f"{model}/{i}" not in served["heatmaps"]), where
            if want.heatmap is not None:
                heat = served["heatmaps"][f"{model}/{i}"]
                assert heat.shape == want.heatmap.shape and np.abs(heat - want.heatmap).max() < HEAT_TOL, where
            a = np.array([[b.x1, b.y1, b.x2, b.y2, b.confidence] for b in want.boxes], dtype=np.float64).reshape(-1, 5)
            b = np.array(got["boxes"], dtype=np.float64).reshape(-1, 5)
            assert a.shape == b.shape, f"{where}: {len(a)} torch boxes vs {len(b)} served"
            if len(a):
                iou = iou_matrix(a[:, :4], b[:, :4])
                assert iou.max(axis=1).min() > MIN_IOU, where
                assert np.abs(np.sort(a[:, 4]) - np.sort(b[:, 4])).max() < PROB_TOL, where
            boxes_compared += len(a)
    assert boxes_compared > 0, "the comparison must include boxes to mean anything"


@pytest.mark.slow
def test_api_and_cli_serve_the_same_answers_without_torch(served, model_dir, images):
    want = InferenceService(model_dir, backend="torch", num_threads=1).predict(read_xray(images[0]), "chexnet")
    assert served["api"]["status"] == 200
    assert abs(served["api"]["probability"] - want.probability) < PROB_TOL
    assert served["cli_exit"] == 0 and len(served["cli"]) == len(images)
    assert abs(served["cli"][0]["probability"] - want.probability) < PROB_TOL
    assert served["cli"][0]["model_version"] == want.model_version


#: a serving-only install, simulated: importing torch & co. fails as if they were not installed
NO_TORCH = textwrap.dedent('''
    import importlib.abc, sys

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "efficientnet_lite_pytorch"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from pneumo.cli import main
    raise SystemExit(main(sys.argv[1:]))
''')


def _cli_without_torch(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "PNEUMO_BACKEND": "", "PNEUMO_TORCH_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_without_torch_onnx_serves_and_torch_commands_name_the_extra(model_dir, images, tmp_path):
    served = _cli_without_torch("predict", "--model", "unet", "--model-dir", str(model_dir), "--no-progress",
                                "--output", str(tmp_path / "p.jsonl"), str(images[0]), cwd=tmp_path)
    assert served.returncode == 0, served.stderr[-2000:]
    assert json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])["model"] == "unet"

    for argv in (("predict", "--model", "unet", "--model-dir", str(model_dir), "--backend", "torch", "--no-progress",
                  "--output", str(tmp_path / "t.jsonl"), str(images[0])),
                 ("train", "chexnet", "--data", str(images[0].parents[1]), "--out", str(tmp_path / "run"))):
        refused = _cli_without_torch(*argv, cwd=tmp_path)
        assert refused.returncode == 2, (argv[0], refused.stderr[-2000:])
        assert "'train' extra" in refused.stderr and "pip install 'pneumo[train]'" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
