"""`pneumo dicomweb --url URL [--poll 10s] [--state-file F]`: poll a DICOMweb PACS for CR/DX images (QIDO-RS,
WADO-RS), analyse them and store the SR, secondary capture and presentation state back (STOW-RS); the state
file remembers what is done across restarts (see pneumo.node.dicomweb). Decision support, not a diagnosis."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from pneumo.commands.backendopts import add_backend_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dicomweb", help="DICOMweb client: poll a PACS for CR/DX images, store SR + secondary capture + GSPS back",
        description="Poll a DICOMweb server (e.g. http://pacs:8042/dicom-web) for CR/DX instances, analyse each "
        "one not yet in --state-file, and STOW-RS its results into the same study. Stops on SIGINT / SIGTERM.",
    )
    parser.add_argument("--url", required=True, help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    parser.add_argument("--poll", default="10s", help="time between polls: 10s, 2m, 500ms (default: 10s)")
    parser.add_argument("--once", action="store_true", help="one pass, then exit (exit 3 if some must be retried)")
    parser.add_argument("--state-file", type=Path, default=None, metavar="FILE",
                        help="what is done (default: $PNEUMO_NODE_DIR/dicomweb/state.json, else "
                        "~/.cache/pneumo/dicomweb/state.json)")
    parser.add_argument("--model", default="ensemble", help="shipped model name or checkpoint (default: ensemble)")
    parser.add_argument("--model-dir", default=None, metavar="DIR", help="folder of shipped models")
    add_backend_arguments(parser)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.node.dicomweb import DicomWebPoller, StateFile, parse_interval
    from pneumo.node.runtime import configure_logging, default_queue_dir, wait_for_stop_signal
    from pneumo.service import InferenceService

    configure_logging(args.log_level)
    interval = parse_interval(args.poll)
    state = StateFile(args.state_file or default_queue_dir("dicomweb") / "state.json")
    service = InferenceService(args.model_dir, backend=args.backend)
    info = service.load(args.model)
    poller = DicomWebPoller(args.url, service, args.model, state)
    if args.once:
        report = poller.poll()
        print(f"pneumo dicomweb: {len(report.stored)} stored, {len(report.refused)} refused, "
              f"{len(report.failed)} to retry, {report.skipped} already done ({info.name} {info.version})",
              file=sys.stderr)
        return 3 if report.failed else 0
    print(f"pneumo dicomweb: polling {args.url} every {interval:g} s with {info.name} {info.version}; "
          "Ctrl-C to stop", file=sys.stderr, flush=True)
    stop = threading.Event()
    worker = threading.Thread(target=poller.run, args=(interval, stop), name="pneumo-dicomweb", daemon=True)
    worker.start()
    try:
        wait_for_stop_signal(stop)
    finally:
        stop.set()
        worker.join(60)
    return 0
