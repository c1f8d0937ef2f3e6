"""ONNX export and backend selection: metadata round trip, stale-export refusal, the input contract, the CLI.

A tiny U-Net (resnet18, 3 stages, 64 px) keeps every export to about a second; parity on real images for every
family lives in tests/integration/test_onnx_parity.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.errors import CheckpointError, ConfigError
from pneumo.export.exporter import export_checkpoint, onnx_path_for
from pneumo.export.families import adapter
from pneumo.export.metadata import OnnxMetadata, read_metadata
from pneumo.export.predictor import OnnxPredictor
from pneumo.export.runtime import OnnxModel
from pneumo.files import file_sha256
from pneumo.inference.predictors import CheckpointPredictor
from pneumo.models import create_model
from pneumo.models.checkpoint import read_checkpoint_meta, save_checkpoint
from pneumo.models.registry import resolve_model_config
from pneumo.service import InferenceService

SIZE = 64
TINY_UNET = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16], "lung_prior": "off"}
THRESHOLDS = {"box_threshold": 0.3, "gate_threshold": 0.2, "probability_threshold": 0.5}


def save_unet(path: Path, thresholds: dict | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = resolve_model_config("unet", TINY_UNET)
    model = create_model("unet", config)
    return save_checkpoint(path, model, config=config, preprocess={"size": SIZE}, thresholds=thresholds or THRESHOLDS,
                           metrics={"auc": 0.5}, data_fingerprint="unit-test")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, its fresh export) in a module-wide folder; tests that change files copy them first."""
    folder = tmp_path_factory.mktemp("onnx-models")
    checkpoint = save_unet(folder / "unet.pt")
    export_checkpoint(checkpoint)
    return checkpoint, onnx_path_for(checkpoint)


@pytest.fixture()
def model_dir(exported, tmp_path) -> Path:
    """A private copy of the exported folder (checkpoint + export)."""
    for path in exported:
        shutil.copy2(path, tmp_path / path.name)
    return tmp_path


def images(batch: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 0.9, size=(batch, 1, SIZE, SIZE)).astype(np.float32)


# ---- metadata -------------------------------------------------------------------------------------------


def test_export_embeds_the_checkpoint_settings_and_sha(exported):
    checkpoint, onnx_file = exported
    meta = read_metadata(onnx_file)
    ckpt = read_checkpoint_meta(checkpoint)
    assert onnx_file == checkpoint.with_suffix(".onnx")
    assert meta.family == "unet"
    assert meta.preprocess == {"size": SIZE}
    assert meta.thresholds == THRESHOLDS
    assert meta.metrics == {"auc": 0.5}
    assert meta.config == ckpt["config"]
    assert meta.source_sha256 == file_sha256(checkpoint)
    assert meta.state_dict_sha256 == ckpt["state_dict_sha256"]
    assert meta.source_name == "unet.pt"  # a name, never the folder
    assert meta.graph["exporter"] == "torchscript" and meta.graph["dynamic_batch"] is True
    assert meta.graph["outputs"] == ["probability", "prob_map"]
    assert meta.size == SIZE


def test_metadata_round_trips_through_props(exported):
    meta = read_metadata(exported[1])
    props = meta.to_props()
    assert all(isinstance(k, str) and isinstance(v, str) and k.startswith("pneumo.") for k, v in props.items())
    assert OnnxMetadata.from_props(props) == meta


@pytest.mark.parametrize("broken", ["format", "missing", "json"])
def test_malformed_metadata_is_refused(exported, broken):
    props = read_metadata(exported[1]).to_props()
    if broken == "format":
        props["pneumo.format"] = "something-else"
    elif broken == "missing":
        del props["pneumo.source_sha256"]
    else:
        props["pneumo.thresholds"] = "{not json"
    with pytest.raises(CheckpointError):
        OnnxMetadata.from_props(props)


def test_onnx_file_without_pneumo_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["probability"])], "plain",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    with pytest.raises(CheckpointError, match="not a pneumo ONNX export"):
        read_metadata(plain)
    with pytest.raises(CheckpointError, match="not a pneumo ONNX export"):
        OnnxModel(plain)


# ---- staleness --------------------------------------------------------------------------------------------


def test_stale_export_is_refused(model_dir):
    checkpoint = model_dir / "unet.pt"
    onnx_file = onnx_path_for(checkpoint)
    OnnxModel(onnx_file, checkpoint=checkpoint, num_threads=1)  # fresh: accepted
    save_unet(checkpoint, thresholds={**THRESHOLDS, "box_threshold": 0.9})  # same weights, re-tuned thresholds
    with pytest.raises(CheckpointError, match="stale"):
        OnnxModel(onnx_file, checkpoint=checkpoint, num_threads=1)
    with pytest.raises(CheckpointError, match="stale"):
        InferenceService(model_dir, backend="onnx", num_threads=1).load("unet")
    # auto never uses a stale export: it runs the (new) checkpoint with torch
    predictor = InferenceService(model_dir, backend="auto", num_threads=1).predictor("unet")
    assert type(predictor) is CheckpointPredictor
    assert predictor.thresholds.box == 0.9


def test_missing_export_with_onnx_backend_says_how_to_make_it(model_dir):
    onnx_path_for(model_dir / "unet.pt").unlink()
    with pytest.raises(CheckpointError, match="pneumo export"):
        InferenceService(model_dir, backend="onnx", num_threads=1).load("unet")
    assert type(InferenceService(model_dir, num_threads=1).predictor("unet")) is CheckpointPredictor


# ---- backend selection --------------------------------------------------------------------------------------


def test_auto_prefers_an_up_to_date_onnx_export_on_the_cpu(model_dir):
    assert type(InferenceService(model_dir, num_threads=1).predictor("unet")) is OnnxPredictor
    assert type(InferenceService(model_dir, backend="torch", num_threads=1).predictor("unet")) is CheckpointPredictor
    assert type(InferenceService(model_dir, backend="onnx", num_threads=1).predictor("unet")) is OnnxPredictor


def test_unknown_backend_is_a_config_error(model_dir, monkeypatch):
    with pytest.raises(ConfigError):
        InferenceService(model_dir, backend="tensorrt")
    monkeypatch.setenv("PNEUMO_BACKEND", "tensorrt")
    with pytest.raises(ConfigError):
        InferenceService(model_dir)


def test_backend_comes_from_the_environment_when_not_given(model_dir, monkeypatch):
    monkeypatch.setenv("PNEUMO_BACKEND", "torch")
    assert type(InferenceService(model_dir, num_threads=1).predictor("unet")) is CheckpointPredictor
    assert InferenceService(model_dir, backend="onnx", num_threads=1).backend == "onnx"  # the argument wins
    monkeypatch.delenv("PNEUMO_BACKEND")
    assert InferenceService(model_dir, num_threads=1).backend == "auto"


def test_onnx_predictor_has_everything_a_checkpoint_predictor_has(model_dir):
    torch_predictor = InferenceService(model_dir, backend="torch", num_threads=1).predictor("unet")
    onnx_predictor = InferenceService(model_dir, backend="onnx", num_threads=1).predictor("unet")
    missing = [name for name in vars(torch_predictor) if not hasattr(onnx_predictor, name)]  # meta is a lazy property
    assert not missing, missing
    assert onnx_predictor.info == torch_predictor.info  # same checkpoint -> same name, version, thresholds
    assert onnx_predictor.meta["data_fingerprint"] == "unit-test"


def test_onnx_predictions_say_which_backend_ran(model_dir):
    from pneumo.types import XRay

    xray = XRay(pixels=images(1)[0, 0][:48], source_format="png")
    prediction = InferenceService(model_dir, backend="onnx", num_threads=1).predict(xray, "unet")
    assert prediction.extra["backend"] == "onnx"
    assert prediction.image_size == (48, SIZE)


# ---- the OnnxModel contract ----------------------------------------------------------------------------------


def test_onnx_model_matches_torch_and_takes_numpy_or_tensors(exported):
    from pneumo.models.checkpoint import load_checkpoint

    checkpoint, onnx_file = exported
    onnx_model = OnnxModel(onnx_file, checkpoint=checkpoint, num_threads=1)
    torch_model = load_checkpoint(checkpoint).model
    batch = images(3)
    from_numpy = onnx_model.infer(batch)
    from_tensor = onnx_model.infer(torch.from_numpy(batch))
    reference = torch_model.infer(torch.from_numpy(batch))
    assert len(from_numpy) == 3
    for a, b, ref in zip(from_numpy, from_tensor, reference):
        assert a.probability == b.probability
        assert abs(a.probability - ref.probability) < 1e-5
        assert a.heatmap.shape == (SIZE, SIZE) and np.abs(a.heatmap - ref.heatmap).max() < 1e-5
        assert a.boxes.shape == ref.boxes.shape


def test_onnx_model_enforces_the_input_contract(exported):
    onnx_model = OnnxModel(exported[1], num_threads=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        onnx_model.infer(images(1) * 255.0)
    with pytest.raises(ValueError, match="64 x 64"):
        onnx_model.infer(np.zeros((1, 1, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        onnx_model.infer(np.zeros((1, 3, SIZE, SIZE), dtype=np.float32))
    assert onnx_model.infer(np.zeros((0, 1, SIZE, SIZE), dtype=np.float32)) == []


def test_onnx_threads_are_set_as_asked(exported):
    onnx_model = OnnxModel(exported[1], num_threads=1)
    assert onnx_model.num_threads == 1
    options = onnx_model.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    import pneumo.export.exporter as exporter

    checkpoint = save_unet(tmp_path / "unet.pt")
    monkeypatch.setattr(exporter, "VERIFY_TOLERANCE", -1.0)  # every difference, even 0, now fails
    with pytest.raises(CheckpointError, match="disagrees"):
        export_checkpoint(checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.pt"]


def test_family_without_export_is_named():
    with pytest.raises(ConfigError, match="exportable: chexnet, maskrcnn, unet"):
        adapter("resnet-classifier")


# ---- the command ------------------------------------------------------------------------------------------


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
def test_export_command_writes_beside_the_checkpoint(tmp_path, capsys):
    from pneumo.cli import main

    save_unet(tmp_path / "unet.pt")
    assert main(["export", "--model", "unet", "--format", "onnx", "--model-dir", str(tmp_path)]) == 0
    assert read_metadata(tmp_path / "unet.onnx").source_sha256 == file_sha256(tmp_path / "unet.pt")
    assert "max |torch - onnx|" in capsys.readouterr().err
    out = tmp_path / "elsewhere" / "u.onnx"
    assert main(["export", "--model", str(tmp_path / "unet.pt"), "--output", str(out), "--no-verify"]) == 0
    assert read_metadata(out).family == "unet"


def test_export_command_errors(tmp_path, capsys):
    from pneumo.cli import main

    save_unet(tmp_path / "unet.pt")
    save_unet(tmp_path / "second.pt", seed=1)
    code = main(["export", "--model", "unet", str(tmp_path / "second.pt"), "--output", str(tmp_path / "x.onnx"),
                 "--model-dir", str(tmp_path)])
    assert code == 2 and "--output names one file" in capsys.readouterr().err
    assert main(["export", "--model", "chexnet", "--model-dir", str(tmp_path)]) == 2
    assert "not installed" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))
