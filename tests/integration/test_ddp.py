"""DistributedDataParallel on CPU: `torchrun --standalone --nproc_per_node 2 -m pneumo train ...` with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo.models.checkpoint import load_checkpoint, state_dict_sha256
from pneumo.training.history import read_history_csv

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_two_process_gloo_run_writes_one_run_dir_with_identical_weights(rsna_mini, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "pneumo", "train", "unet", "--data", str(rsna_mini), "--out", str(run),
        "--limit", "12", "--epochs", "1", "--image-size", "64", "--no-progress",
        "--set", f"cache_dir={tmp_path / 'cache'}", "batch_size=2", "ddp_find_unused_parameters=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    # only rank 0 reports and writes
    assert done.stdout.count("trained unet") == 1
    assert done.stderr.count("training unet:") == 1 and "x 2 processes" in done.stderr
    assert {"config.yaml", "best.pt", "last.pt", "history.csv", "loss_curve.png", "train_summary.json"} <= {
        p.name for p in run.iterdir()
    }
    assert not list(run.glob(".*.tmp"))
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] and summary["ranks_identical"] is True
    loaded = load_checkpoint(run / "last.pt", expected_family="unet")
    assert state_dict_sha256(loaded.model.state_dict()) == digests[0]
    # validation covered the whole validation fold (gathered from both ranks), not one rank's half
    meta_split = loaded.meta["extra"]["split"]
    assert loaded.metrics["val_images"] == meta_split["n_val"] and meta_split["n_train"] + meta_split["n_val"] == 12
    assert len(read_history_csv(run / "history.csv")) == 1
