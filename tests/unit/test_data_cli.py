"""`pneumo data summary|cache`."""

from __future__ import annotations

import json

from pneumo.cli import main
from pneumo.data.replica import replicate
from pneumo.data.rsna import read_rsna


def test_summary_json_counts(rsna_mini, capsys):
    assert main(["data", "summary", "--data", str(rsna_mini), "--json", "--folds", "5", "--seed", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layout"] == "rsna"
    assert (result["images"], result["patients"], result["positive_images"], result["boxes"]) == (210, 210, 79, 128)
    assert result["views"] == {"AP": 105, "PA": 105}
    assert sum(result["classes"].values()) == 210 and result["classes"]["Lung Opacity"] == 79
    assert [row["patients"] for row in result["folds"]] == [42] * 5
    assert sum(row["positives"] for row in result["folds"]) == 79


def test_summary_text_on_nih_with_limit(nih_weak, capsys):
    assert main(["data", "summary", "--data", str(nih_weak), "--limit", "50", "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "layout: nih" in out and "images: 50" in out and "fold 1:" in out


def test_cache_builds_then_reuses(rsna_mini, tmp_path, capsys):
    root = replicate(read_rsna(rsna_mini, limit=3), tmp_path / "rsna", n=3)
    args = ["data", "cache", "--data", str(root), "--image-size", "32", "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "3 images at 32px" in first
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[0] == first.splitlines()[0]  # same cache folder


def test_bad_folder_is_a_clean_error(tmp_path, capsys):
    assert main(["data", "summary", "--data", str(tmp_path)]) == 2
    assert "neither a Kaggle RSNA layout" in capsys.readouterr().err
