"""Tiny random-init shipped-model folders for front-end plumbing tests (real registry, save_checkpoint,
ensemble spec and InferenceService code paths; the weights are random, so the numbers mean nothing).

Imported by tests/api (on sys.path there), tests/web and tests/integration/test_console.py (by file path: test
folders are not packages). ``make_model_dir(folder)`` writes unet.pt, maskrcnn.pt, chexnet.pt (64 px),
ensemble.json and histories for the console's metrics plot.
"""

from __future__ import annotations

import contextlib

import math
from pathlib import Path

SIZE = 64

#: per-family tiny configs: small encoders, and a unet mask threshold of 0 so every image yields a box
CONFIGS: dict[str, dict] = {
    "unet": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": (32, 16), "mask_threshold": 0.0},
    "maskrcnn": {"backbone": "resnet18", "image_size": SIZE},
    "chexnet": {"backbone": "efficientnet-lite0", "pretrained": False},
}
#: operating thresholds that keep every box (random weights give low confidences)
THRESHOLDS = {"box_threshold": 0.0, "gate_threshold": 0.0, "probability_threshold": 0.5}


def make_model_dir(folder: Path, families: tuple[str, ...] = ("unet", "maskrcnn", "chexnet"),
                   ensemble: bool = True, histories: bool = True) -> Path:
    import torch

    from pneumo.models import create_model
    from pneumo.models.checkpoint import save_checkpoint
    from pneumo.models.registry import resolve_model_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for seed, family in enumerate(families):
        torch.manual_seed(seed)
        config = resolve_model_config(family, CONFIGS[family])
        model = create_model(family, config).eval()
        save_checkpoint(
            folder / f"{family}.pt", model, config=config, preprocess={"size": SIZE}, thresholds=THRESHOLDS,
            metrics={"val_map": 0.01 * (seed + 1), "val_auc": 0.5}, data_fingerprint="tiny-random-test",
            half=True,
        )
        if histories:
            write_history(folder / f"{family}.history.csv", epochs=3, offset=seed)
    if ensemble:
        from pneumo.ensemble import EnsembleMember, EnsembleSpec, FusionParams

        boxes = [f for f in families if f != "chexnet"]
        spec = EnsembleSpec(
            members=tuple(EnsembleMember(f) for f in boxes),
            classifier=EnsembleMember("chexnet") if "chexnet" in families else None,
            fusion=FusionParams(gate_threshold=0.0, box_threshold=0.0, skip_thr=0.0),
        )
        spec.save(folder / "ensemble.json")
    return folder


def tiny_service(settings):
    """``create_app`` service factory: the real InferenceService with one torch thread (the machine is shared)."""
    from pneumo.service import InferenceService

    return InferenceService(model_dir=settings.model_dir, num_threads=1)


def write_history(path: Path, epochs: int, offset: int = 0) -> None:
    from pneumo.training.history import EpochRecord, write_history_csv

    records = [
        EpochRecord(epoch=e, lr=1e-3, train_loss=1.0 / e + offset, val_loss=1.2 / e + offset + (0.3 if e == epochs else 0),
                    val_map=0.05 * e, val_auc=0.5 + 0.1 * e if offset != 1 else math.nan, seconds=1.0)
        for e in range(1, epochs + 1)
    ]
    write_history_csv(path, records)


def dicom_bytes(modality: str = "DX", rows: int = 64, columns: int = 64, patient_id: str = "TEST-0001",
                body_part: str = "CHEST", pixel_bytes: bytes | None = None) -> bytes:
    """A small 8-bit MONOCHROME2 DICOM (Explicit VR LE). ``pixel_bytes`` overrides the pixel data (e.g. a
    few bytes under a header claiming huge dimensions)."""
    import io

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixel_bytes is None:
        ramp = np.linspace(0, 255, rows * columns, dtype=np.float64).reshape(rows, columns)
        pixel_bytes = ramp.astype(np.uint8).tobytes()
    ds.PixelData = pixel_bytes
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app, start_timeout_s: float = 60.0):
    """Serve ASGI ``app`` with uvicorn on a free loopback port in a daemon thread; yields its base URL and
    stops the server on exit (browser tests need a real socket)."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
