"""Training throughput per model family: images/s of forward + backward + optimiser step on this CPU.

For each family and input size: a batch of ``--batch`` random images in [0, 1] (half positives with two
RSNA-sized boxes, half negatives: Mask R-CNN's cost depends on the number of positives), Adam, ``--warmup``
steps discarded, then the median of ``--steps`` timed steps. Models use their default configs (Mask R-CNN's
``image_size`` = the input size). Writes/replaces a ``## Training throughput`` section in ``--write`` (other
sections are kept).

    .venv/bin/python bench/train_throughput.py --sizes 256 512 --batch 4 --steps 3 --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

SECTION = "## Training throughput"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_batch(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, list]:
    from pneumo.models.base import Target

    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((batch, 1, size, size), generator=gen)
    s = size / 1024.0
    # median RSNA boxes are ~220 x 330 px at 1024; one in each lung
    two_boxes = torch.tensor([[250.0, 300.0, 470.0, 630.0], [560.0, 320.0, 780.0, 650.0]]) * s
    targets = [Target(two_boxes.clone(), 1) if i % 2 == 0 else Target(torch.zeros((0, 4)), 0) for i in range(batch)]
    return images, targets


def measure(family: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    from pneumo.models import config_class, create_model

    torch.manual_seed(0)
    fields = {f for f in config_class(family).__dataclass_fields__}
    model = create_model(family, {"image_size": size} if "image_size" in fields else None).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    images, targets = make_batch(batch, size)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss = model.compute_loss(images, targets)["loss"]
        loss.backward()
        optimiser.step()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    median = statistics.median(times)
    return {
        "family": family,
        "size": size,
        "batch": batch,
        "step_s_median": median,
        "step_s_all": times,
        "images_per_s": batch / median,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def render(results: list[dict], args: argparse.Namespace, seconds: float) -> str:
    load = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"Training images/s per family (default config; forward + backward + Adam step, batch {args.batch}, random "
        f"images, half of them positives with two RSNA-sized boxes): median of {args.steps} steps after "
        f"{args.warmup} warm-up step(s), float32, CPU.",
        "",
        "| family | input px | params (M) | median s / step | images / s |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['family']} | {r['size']} | {r['parameters_m']:.1f} | {r['step_s_median']:.2f} | {r['images_per_s']:.2f} |"
        )
    lines += [
        "",
        "Machine:",
        f"- CPU: {cpu_name()}; usable cores: {len(os.sched_getaffinity(0))}; torch threads: {torch.get_num_threads()}; "
        f"{platform.system()} {platform.machine()}",
        f"- load average (1/5/15 min) at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        "(shared machine: the numbers include contention from other processes)",
        f"- Python {platform.python_version()}, torch {torch.__version__}; whole run {seconds:.0f} s",
        "",
        "Reproduce: `.venv/bin/python bench/train_throughput.py "
        + " ".join(
            [f"--sizes {' '.join(map(str, args.sizes))}", f"--batch {args.batch}", f"--steps {args.steps}",
             f"--warmup {args.warmup}", f"--families {' '.join(args.families)}", "--write bench/RESULTS.md"]
        )
        + "`",
        "",
    ]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """Replace the ``## Training throughput`` section of ``text`` (up to the next ``## `` heading) or append it."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        body = text.rstrip("\n")
        prefix = (body + "\n\n") if body else "# Benchmark results\n\n"
        return prefix + section
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    before = "".join(lines[:start])
    after = "".join(lines[end:])
    return before + section + ("\n" + after if after else "")


def write_results(path: Path, section: str) -> None:
    old = path.read_text() if path.exists() else ""
    new = replace_section(old, section)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=None, help="default: every registered family")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--write", type=Path, default=None, help="Markdown file to update (e.g. bench/RESULTS.md)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    from pneumo.models import list_models

    if args.threads:
        torch.set_num_threads(args.threads)
    args.families = args.families or list_models()
    started = time.perf_counter()
    results = []
    for size in args.sizes:
        for family in args.families:
            r = measure(family, size, args.batch, args.steps, args.warmup)
            results.append(r)
            print(f"{family:10s} {size:4d} px  {r['step_s_median']:.2f} s/step  {r['images_per_s']:.2f} img/s", flush=True)
    seconds = time.perf_counter() - started
    section = render(results, args, seconds)
    print(section)
    if args.write:
        write_results(args.write, section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
