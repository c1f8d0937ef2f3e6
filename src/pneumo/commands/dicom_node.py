"""`pneumo dicom-node --ae-title PNEUMO --port 11112 --destination AET@HOST:PORT`: a DICOM Storage SCP that
analyses received chest radiographs and C-STOREs the SR, secondary capture and presentation state to the
destination (see pneumo.node.scp and docs/integration.md). Stops cleanly on SIGINT / SIGTERM (exit 0).
Decision support, not a diagnosis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo.commands.backendopts import add_backend_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dicom-node", help="DICOM node: receive CR/DX images, send back SR + secondary capture + GSPS",
        description="A DICOM Storage SCP (C-ECHO, C-STORE of CR / DX / secondary-capture chest images). Each "
        "image is analysed and its results (TID 1500 SR, secondary capture, presentation state) are C-STOREd to "
        "--destination; unsent results wait in --queue-dir and are retried with backoff, also after a restart.",
    )
    parser.add_argument("--ae-title", default="PNEUMO", help="this node's AE title (default: PNEUMO)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: loopback only; 0.0.0.0 = all)")
    parser.add_argument("--port", type=int, default=11112, help="DICOM port to listen on (default: 11112)")
    parser.add_argument("--destination", required=True, metavar="AET@HOST:PORT",
                        help="where results are C-STOREd, e.g. ORTHANC@pacs.local:4242")
    parser.add_argument("--model", default="ensemble", help="shipped model name or checkpoint (default: ensemble)")
    parser.add_argument("--model-dir", default=None, metavar="DIR", help="folder of shipped models")
    add_backend_arguments(parser)
    parser.add_argument("--queue-dir", type=Path, default=None, metavar="DIR",
                        help="received images and unsent results (default: $PNEUMO_NODE_DIR/dicom-node, "
                        "else ~/.cache/pneumo/dicom-node)")
    parser.add_argument("--workers", type=int, default=1, help="images analysed at once (default: 1)")
    parser.add_argument("--max-pending", type=int, default=16,
                        help="images waiting for analysis before C-STOREs get 'out of resources' (default: 16)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.node.peer import Peer
    from pneumo.node.runtime import configure_logging, default_queue_dir, wait_for_stop_signal
    from pneumo.node.scp import DicomNode, NodeConfig
    from pneumo.service import InferenceService

    configure_logging(args.log_level)
    config = NodeConfig(destination=Peer.parse(args.destination),
                        queue_dir=args.queue_dir or default_queue_dir("dicom-node"), ae_title=args.ae_title,
                        host=args.host, port=args.port, model=args.model, workers=args.workers,
                        max_pending=args.max_pending)
    service = InferenceService(args.model_dir, backend=args.backend)
    info = service.load(args.model)  # model errors surface before listening
    node = DicomNode(config, service)
    try:
        node.start()
    except OSError as error:
        from pneumo.errors import DicomNetworkError

        raise DicomNetworkError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    print(f"pneumo dicom-node: AE {config.ae_title} on {args.host}:{node.port}, model {info.name} {info.version}, "
          f"results to {config.destination}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        wait_for_stop_signal()
    finally:
        node.stop()
    return 0
