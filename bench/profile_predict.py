"""Where the time of one prediction goes: pyinstrument over DICOM bytes -> Prediction calls.

    .venv/bin/python bench/profile_predict.py --model-dir DIR --model maskrcnn [--backend auto] [--n 10]
        [--output bench/profiles/maskrcnn.txt]

The model is loaded and warmed up before profiling starts. Writes pyinstrument's text report (call tree,
frames under 2 % of the time hidden) to ``--output`` (or stdout).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchlib import rsna_dicoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--model", default="chexnet")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    from pyinstrument import Profiler

    from pneumo.service import InferenceService

    blobs = [p.read_bytes() for p in rsna_dicoms()[: args.n + 2]]
    service = InferenceService(args.model_dir, backend=args.backend, num_threads=args.threads)
    for blob in blobs[:2]:
        service.predict_source(blob, args.model)
    profiler = Profiler(interval=0.002)
    profiler.start()
    for blob in blobs[2:]:
        service.predict_source(blob, args.model)
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False, timeline=False,
                                processor_options={"filter_threshold": 0.02})
    if args.output is None:
        print(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
