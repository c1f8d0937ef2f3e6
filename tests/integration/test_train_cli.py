"""`pneumo train` end to end on real RSNA images (rsna-mini): one short run per registered family, and a
Ctrl-C of a running training process followed by --resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pneumo.cli import main
from pneumo.models import list_models
from pneumo.models.checkpoint import load_checkpoint
from pneumo.training.history import read_history_csv

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = {"config.yaml", "best.pt", "last.pt", "last.state.pt", "history.csv", "loss_curve.png", "train_summary.json"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """One decoded-image cache for the module (never inside the shared data folder)."""
    return str(tmp_path_factory.mktemp("pneumo-cache"))


@pytest.fixture(autouse=True)
def few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", list_models())
def test_one_epoch_cli_run_per_family(family, rsna_mini, cache_dir, tmp_path, capsys):
    from pneumo.io import read_xray
    from pneumo.preprocess import Preprocessor

    run = tmp_path / family
    code = main([
        "train", family, "--data", str(rsna_mini), "--out", str(run), "--limit", "24", "--epochs", "1",
        "--image-size", "128", "--no-progress", "--set", f"cache_dir={cache_dir}", "batch_size=8", "seed=3",
    ])
    assert code == 0
    assert f"trained {family}" in capsys.readouterr().out
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["family"], saved["image_size"], saved["limit"], saved["epochs"], saved["seed"]) == (family, 128, 24, 1, 3)
    history = read_history_csv(run / "history.csv")
    assert len(history) == 1 and math.isfinite(history[0].train_loss) and math.isfinite(history[0].val_loss)

    loaded = load_checkpoint(run / "best.pt", expected_family=family)
    assert loaded.family == family and loaded.preprocess == {"size": 128}
    assert {"box_threshold", "gate_threshold", "probability_threshold"} <= set(loaded.thresholds)
    assert loaded.metrics["val_images"] == 5  # 24 patients, 5 folds -> 5 validation patients
    image = read_xray(next((rsna_mini / "stage_2_train_images").glob("*.dcm")))
    canvas, _ = Preprocessor.from_dict(loaded.preprocess)(image.pixels)
    [output] = loaded.model.infer(torch.from_numpy(canvas)[None, None])
    assert 0.0 <= output.probability <= 1.0
    assert output.boxes.ndim == 2 and output.boxes.shape[1] == 5 and np.isfinite(output.boxes).all()


def test_ctrl_c_saves_a_resumable_state_and_resume_completes(rsna_mini, cache_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "unet", "--data", str(rsna_mini), "--out", str(run), "--limit", "24", "--epochs", "2",
            "--image-size", "64", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pneumo", *args, "--set", f"cache_dir={cache_dir}", "batch_size=4"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        seen = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until the training loop has started (signal handlers set)
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("training unet:"):
                break
        assert any(line.startswith("training unet:") for line in seen), "".join(seen)
        time.sleep(1.0)  # let a step or two run
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "--resume" in err and "resumable state saved" in err
    assert (run / "last.state.pt").is_file()
    done_before = len(read_history_csv(run / "history.csv")) if (run / "history.csv").exists() else 0
    assert done_before < 2

    assert main(["train", "unet", "--data", str(rsna_mini), "--out", str(run), "--resume", "--no-progress"]) == 0
    history = read_history_csv(run / "history.csv")
    assert [r.epoch for r in history] == [1, 2]
    assert load_checkpoint(run / "last.pt", expected_family="unet").metrics["epoch"] == 2
    # settings cannot change on resume, and another family cannot take the run over
    assert main(["train", "unet", "--data", str(rsna_mini), "--out", str(run), "--resume", "--epochs", "5"]) == 2
    assert main(["train", "chexnet", "--data", str(rsna_mini), "--out", str(run), "--resume"]) == 2
    assert "holds a 'unet' run" in capsys.readouterr().err
