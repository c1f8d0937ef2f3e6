"""The same classification work done by torchxrayvision's own pipeline, for the ">= 2x" comparison.

    .venv/bin/python bench/xrv_baseline.py [--limit N] [--batch-size 1] [--threads T]

Per rsna-mini DICOM: ``xrv.utils.read_xray_dcm`` (pydicom decode, scaled to [-1024, 1024]) ->
``XRayCenterCrop`` -> ``XRayResizer(224)`` (skimage) -> ``xrv.models.DenseNet(weights=None)`` (DenseNet-121,
random init: no weights can be downloaded here) -> sigmoid. One process, decoding inline as its README does,
same torch threads as pneumo. A socket guard makes any download attempt fail loudly instead of hanging.
Reports images/s over the folder (model built before the clock starts) and peak RSS.
"""

from __future__ import annotations

import argparse
import socket
import time
import warnings
from pathlib import Path

import numpy as np

from benchlib import peak_rss_mib, rsna_dicoms, summary, write_json


def forbid_network() -> None:
    """Any non-loopback connection raises: proves the pipeline downloads nothing."""
    original = socket.socket.connect

    def connect(sock, address):  # noqa: ANN001
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            raise RuntimeError(f"network access attempted to {address!r} during the torchxrayvision benchmark")
        return original(sock, address)

    socket.socket.connect = connect  # only in this benchmark process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    forbid_network()
    import torch
    import torchvision
    import torchxrayvision as xrv

    if args.threads:
        torch.set_num_threads(args.threads)
    files = rsna_dicoms()[: args.limit] if args.limit else rsna_dicoms()
    transform = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(224)])
    model = xrv.models.DenseNet(weights=None).eval()

    def load(path: Path) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # xrv warns per image about its resizer and MONOCHROME handling
            image = xrv.utils.read_xray_dcm(str(path))
            return transform(image[None, ...]).astype(np.float32)

    with torch.inference_mode():  # warm-up: first calls allocate
        model(torch.from_numpy(load(files[0]))[None])
    per_image: list[float] = []
    outputs = 0
    start = time.perf_counter()
    for i in range(0, len(files), args.batch_size):
        t = time.perf_counter()
        batch = np.stack([load(path) for path in files[i : i + args.batch_size]])
        with torch.inference_mode():
            probs = model(torch.from_numpy(batch))
        outputs += int(probs.shape[0])
        per_image.append((time.perf_counter() - t) * 1000 / batch.shape[0])
    elapsed = time.perf_counter() - start
    write_json(args.json, {
        "pipeline": "torchxrayvision read_xray_dcm + XRayCenterCrop + XRayResizer(224) + DenseNet(weights=None)",
        "torchxrayvision": xrv.__version__ if hasattr(xrv, "__version__") else None,
        "images": outputs, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "elapsed_s": round(elapsed, 2), "images_per_s": round(outputs / elapsed, 2),
        "per_image_ms": summary(per_image), "peak_rss_mib": peak_rss_mib(),
    })


if __name__ == "__main__":
    main()
