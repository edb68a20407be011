"""A new lab, leave-one-lab-out: does the guard give an unseen lab's cells the right reason, and what does adapting give?

Labs and non-cells: ``benchmarks/new_lab_sets.py`` (PBC, BCCD's typed cells, Raabin-WBC's white cells cut from
TXL-PBC's boxes; pictures, blanks, noise, smear crops without a white cell or platelet, whole smear photos), each image
scored once by the model and cached.

1. **Reasons** (issue 26 item 1): for each lab held out, the model's guard is fitted again on the other labs'
   cells only (the guard never saw the held-out lab) and applied to the held-out lab's cells and to every
   non-cell: of the held-out lab's referred cells, the share referred as an unfamiliar lab's (95 % bootstrap
   CI); of the non-cells, the share referred as not a single blood cell; for a lab with labels, the accuracy of
   the cells the guard lets through. Also what the model's own guard (as shipped) says of every set. Crops a
   person saw a platelet or white cell in (``--crop-audit``) are not counted as non-cells but reported apart.
2. **Adapting** (item 3) on each labelled lab the model did not learn from (``--seen``: the labs it did): the
   last layer refitted from at most ``--cells`` cells per class (``bloodcell adapt``'s engine, which chooses its
   recipe by cross-validation over those cells only) with one class given fewer than the minimum, over
   ``--draws`` seeded draws; scored on the lab's other cells: accuracy (95 % bootstrap CI over every draw's
   scored cells), the left-out class's recall against unadapted (and whether it was gated, or at risk: neither
   gated nor given cells, which ``bloodcell adapt`` warns of; each draw records the share of the given cells the
   model called each type given none), and ECE (with a CI),
   all from the adapted layer as the checkpoint holds it (its gate included). BCCD also on the cells
   whose label the review confirms (``--review``), for adapting and scoring alike. Raabin's cells carry no
   types: not measured. PBC is measured under a model that never saw it (``--model`` a BCCD-only checkpoint,
   ``--seen bccd``), on the cells of the types that model has.

The model's weights are not retrained: BCCD's figures with the bundled pbc8 are not leave-one-lab-out for the
features (it was fine-tuned with the white cells of 199 BCCD training smears; its held-out smears are reported
apart), Raabin's are (no Raabin image trained it).

    python benchmarks/new_lab.py [--model pbc8] [--cells 10] [--draws 5] [--adapting-only] [--seen pbc]
        [--review REVIEW.csv] [--crop-audit AUDIT.csv] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from new_lab_sets import (CROP_AUDIT, LAB_SETS, NON_CELL_SETS, load_set, read_crop_audit,  # noqa: E402
                          split_crop_audit, subset)


#: A finer model's classes scored as the labs' coarser labels (pbc11 on BCCD's), and the class a coarse label adapts.
COARSE = {"band_neutrophil": "neutrophil", "segmented_neutrophil": "neutrophil", "promyelocyte": "ig",
          "myelocyte": "ig", "metamyelocyte": "ig"}
FINE = {"neutrophil": "segmented_neutrophil", "ig": "metamyelocyte"}


def class_index(names: list[str], label: str) -> int:
    """The model class a lab's label is adapted as (-1 when the model has none)."""
    label = label if label in names else FINE.get(label, label)
    return names.index(label) if label in names else -1


def right(names: list[str], predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cell: the prediction names the label (a finer class counts as its coarse label)."""
    return np.array([COARSE.get(names[p], names[p]) == label for p, label in zip(predicted, labels)])


def coarse_ece(names: list[str], probs: np.ndarray, labels: np.ndarray) -> float:
    """ECE of the probabilities summed into the labs' coarse classes."""
    from bloodcell.metrics.calibration import expected_calibration_error

    coarse = sorted({COARSE.get(n, n) for n in names})
    merged = np.zeros((len(probs), len(coarse)))
    for i, name in enumerate(names):
        merged[:, coarse.index(COARSE.get(name, name))] += probs[:, i]
    return float(expected_calibration_error(np.array([coarse.index(label) for label in labels]), merged))


def bootstrap_ci(values: np.ndarray, seed: int = 0, rounds: int = 2000) -> list[float] | None:
    """95 % percentile bootstrap interval of the mean of 0/1 ``values`` (None when empty)."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return None
    means = np.random.default_rng(seed).choice(values, (rounds, len(values))).mean(axis=1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def single_cell(geometry: np.ndarray) -> np.ndarray:
    """Per cached image, :meth:`CellSearch.single_cell` from its cached search (box as fractions, count, size)."""
    from bloodcell.framing import CellSearch

    out = []
    for x1, y1, x2, y2, count, width, height in geometry:
        box = None if np.isnan(x1) else (x1 * width, y1 * height, x2 * width, y2 * height)
        out.append(CellSearch(box, int(count)).single_cell((int(width), int(height))))
    return np.array(out, bool)


def kind(reason: str | None) -> str:
    from bloodcell.inference.ood import UNFAMILIAR

    if not reason:
        return "passed"
    return "unfamiliar lab" if reason.startswith(UNFAMILIAR) else "not a cell"


def reasons(classifier, labs: dict[str, dict], non_cells: dict[str, dict], pass_rate: float,
            audited: dict[str, dict] | None = None) -> dict:
    """Item 1: each lab held out under a guard fitted on the other labs' cells; ``audited``: sets a review took out
    of the non-cells (crops showing a cell no box marks), what the guard says of them reported apart."""
    from bloodcell.inference.ood import fit_guard

    names = classifier.class_names
    result = {}
    for held in labs:
        others = [n for n in labs if n != held]
        guard = fit_guard(np.concatenate([labs[n]["pixels"] for n in others]),
                          np.concatenate([labs[n]["features"][0] for n in others]), pass_rate,
                          sources=[n for n in others for _ in labs[n]["ids"]],
                          layout_free=[n for n in others if n == "pbc"])  # every type; the others: white cells
        entry: dict = {"guard_sources": others}
        for name, data in [(held, labs[held]), *non_cells.items(), *(audited or {}).items()]:
            said = np.array([kind(r) for r, _ in guard.assess(data["pixels"], data["features"][0],
                                                                single=single_cell(data["geometry"]))])
            row = {"images": len(said), **{k: int(v) for k, v in Counter(said).items()}}
            if name == held:
                referred = said != "passed"
                unfamiliar = said[referred] == "unfamiliar lab"
                row["referred_unfamiliar_share"] = round(float(unfamiliar.mean()), 4) if referred.any() else None
                row["referred_unfamiliar_ci95"] = bootstrap_ci(unfamiliar)
                labels = data["labels"]
                if labels.any():
                    row["by_type"] = {t: dict(Counter(said[labels == t])) for t in sorted(set(labels.tolist()))}
                    known = np.array([class_index(names, label) >= 0 for label in labels])
                    correct = right(names, classifier.probabilities(data["logits"][:1]).argmax(1), labels)
                    kept = known & ~referred
                    row["unreferred_accuracy"] = round(float(correct[kept].mean()), 4) if kept.any() else None
                    row["unreferred_accuracy_ci95"] = bootstrap_ci(correct[kept])
                    row["unreferred"] = int(kept.sum())
                    if data["held_out"].any():
                        h = data["held_out"] & referred
                        row["held_out_smears"] = {"images": int(data["held_out"].sum()), "referred": int(h.sum()),
                                                  "unfamiliar": int((said[h] == "unfamiliar lab").sum())}
                entry["held_out_lab"] = {"name": held, **row}
            elif name in non_cells:
                row["not_a_cell_share"] = round(float(np.mean(said == "not a cell")), 4)
                entry.setdefault("non_cells", {})[name] = row
            else:
                entry.setdefault("audited_apart", {})[name] = row
        result[held] = entry
    return result


def _logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return features @ weight.T + bias


def adapted_logits(features: np.ndarray, fit, weight0: np.ndarray, bias0: np.ndarray, temperature0: float) -> np.ndarray:
    """What the adapted checkpoint's last layer returns for ``features`` (N, D): the refitted layer, behind the
    gate of its gated classes (:class:`bloodcell.models.heads.GatedHead`, as ``bloodcell adapt`` writes it)."""
    import torch

    from bloodcell.models.heads import GatedHead

    def layer(weight, bias):
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.asarray(weight, np.float64)))
            linear.bias.copy_(torch.from_numpy(np.asarray(bias, np.float64)))
        return linear

    head = GatedHead(layer(fit.weight, fit.bias), layer(weight0, bias0), fit.gated, len(bias0),
                     fit.temperature / temperature0, {c: f for c, f in fit.floors.items() if f is not None})
    with torch.no_grad():
        return head(torch.from_numpy(np.asarray(features, np.float64))).numpy()


def adapting(classifier, data: dict, per_class: int, draws: int, few: int) -> dict:
    """Item 3 on a labelled lab: adapted from at most ``per_class`` cells of each type (types with more cells than
    that), scored on the lab's other cells; each type in turn left out (as it is, and kept on the user's word:
    ``adapt --keep``) and given only ``few`` cells, its recall on the other cells against the unadapted model's; ECE
    of the adapted model's confidences there."""
    from bloodcell.metrics.calibration import apply_temperature
    from bloodcell.train.head import adapt_head

    names = classifier.class_names
    labels = data["labels"]
    truth = np.array([class_index(names, label) for label in labels])
    features = data["features"].astype(np.float64)
    w0, b0 = classifier_head(classifier)
    before = _logits(features[0], w0, b0).argmax(1)
    types = [c for c in np.unique(truth) if (truth == c).sum() > per_class]
    result: dict = {"per_class": per_class, "types": [names[c] for c in types], "draws": []}
    pooled, pooled_probs = [], []
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        chosen = {c: rng.choice(np.flatnonzero(truth == c), per_class, replace=False) for c in types}
        row: dict = {"draw": draw}
        for left_out in [None, *types]:
            for mode in (("left out", "kept", "given few") if left_out is not None else ("all types",)):
                picked = np.concatenate([chosen[c][:few] if c == left_out else chosen[c] for c in types
                                         if c != left_out or mode == "given few"])
                rest = np.setdiff1d(np.arange(len(truth)), np.concatenate(list(chosen.values())))
                fit = adapt_head(features[:, picked], truth[picked], w0, b0, seed=draw,
                                 temperature0=classifier.temperature, keep=[left_out] if mode == "kept" else [])
                logits = adapted_logits(features[0, rest], fit, w0, b0, classifier.temperature)
                predicted = logits.argmax(1)
                probs = apply_temperature(logits[None], fit.temperature)[0]
                correct = right(names, predicted, labels[rest])
                entry = {"accuracy": float(correct.mean()), "anchor": fit.anchor, "strength": fit.strength,
                         "unshown_restored": {names[c]: share for c, share in fit.restored.items()},
                         "gated": [names[c] for c in fit.gated], "at_risk": [names[c] for c in fit.at_risk],
                         "own_share": {names[c]: round(share, 4) for c, share in fit.own_share.items()},
                         "accuracy_before": float(right(names, before[rest], labels[rest]).mean()),
                         "ece": coarse_ece(names, probs, labels[rest]),
                         "ece_before": coarse_ece(names, apply_temperature(_logits(features[0, rest], w0, b0)[None],
                                                                           classifier.temperature)[0], labels[rest]),
                         "temperature": fit.temperature, "n_rest": int(len(rest))}
                if left_out is not None:
                    mask = truth[rest] == left_out
                    entry["recall"] = float(correct[mask].mean())
                    entry["recall_before"] = float(right(names, before[rest][mask], labels[rest][mask]).mean())
                    key = {"left out": f"{names[left_out]} left out", "kept": f"{names[left_out]} left out, kept",
                           "given few": f"{names[left_out]} given {few}"}[mode]
                    if mode == "left out":
                        entry["left_out_restored"] = fit.restored[left_out]
                        entry["left_out_gated"] = bool(left_out in fit.gated)
                        entry["left_out_at_risk"] = bool(left_out in fit.at_risk)
                    if mode == "kept":
                        entry["floor"] = fit.floors[left_out]
                else:
                    key = "all types"
                    pooled.append(correct)
                    pooled_probs.append((probs, labels[rest]))
                row[key] = entry
        result["draws"].append(row)
    keys = [k for k in result["draws"][0] if k != "draw"]
    result["summary"] = {}
    for key in keys:
        runs = [d[key] for d in result["draws"]]
        summary = {m: round(float(np.mean([r[m] for r in runs])), 4) for m in runs[0]
                   if m not in ("n_rest", "anchor", "strength", "unshown_restored", "gated", "at_risk", "own_share",
                                "left_out_restored", "left_out_gated", "left_out_at_risk", "floor")}
        summary["recipes"] = dict(Counter(f"{r['anchor']} {r['strength']}" for r in runs))
        if "left_out_restored" in runs[0]:
            summary["left_out_restored"] = dict(Counter(str(r["left_out_restored"]) for r in runs))
            summary["left_out_gated"] = sum(r["left_out_gated"] for r in runs)
            summary["left_out_at_risk"] = sum(r["left_out_at_risk"] for r in runs)
        if "floor" in runs[0]:
            summary["floors"] = [None if r["floor"] is None else round(r["floor"], 4) for r in runs]
        if "recall" in runs[0]:
            summary["recall_kept"] = (round(summary["recall"] / summary["recall_before"], 4)
                                      if summary["recall_before"] > 0 else None)  # none to keep
        result["summary"][key] = summary
    result["accuracy_ci95"] = bootstrap_ci(np.concatenate(pooled))  # every draw's scored cells, pooled
    result["ece_ci95"] = ece_ci(names, pooled_probs)
    return result


def ece_ci(names: list[str], draws: list[tuple[np.ndarray, np.ndarray]], seed: int = 0,
           rounds: int = 500) -> list[float]:
    """95 % bootstrap interval of the mean over draws of the coarse ECE, cells resampled within each draw."""
    rng = np.random.default_rng(seed)
    values = [np.mean([coarse_ece(names, probs[i], labels[i]) for probs, labels in draws
                       for i in [rng.integers(0, len(labels), len(labels))]]) for _ in range(rounds)]
    return [round(float(np.quantile(values, 0.025)), 4), round(float(np.quantile(values, 0.975)), 4)]


def confirmed(data: dict, review_path: str) -> dict:
    """BCCD's cells whose label the review confirms (``benchmarks/audits/``)."""
    from bloodcell.data.bccd import read_type_review

    review = read_type_review(review_path)
    keep = np.array([review.get(str(i), (None, None))[1] == label for i, label in zip(data["ids"], data["labels"])])
    return subset(data, keep)


def adapting_per_lab(classifier, labs: dict[str, dict], seen: list[str], review: str | None, per_class: int,
                     draws: int, few: int) -> dict:
    """Item 3 on every lab the model never saw: on the lab's labels, and for BCCD also on its confirmed labels;
    a lab without types, or one the model learned from, says why it is not measured."""
    result: dict = {}
    for name in LAB_SETS:
        data = labs.get(name)
        if name in seen or data is None:
            result[name] = {"not_measured": "the model learned from this lab"}
        elif not data["labels"].any():
            result[name] = {"not_measured": "its cells carry no white-cell types"}
        else:
            typed = np.array([class_index(classifier.class_names, label) >= 0 for label in data["labels"]])
            result[name] = {"labels": adapting(classifier, subset(data, typed), per_class, draws, few)}
            if not typed.all():
                result[name]["not_scored"] = {"cells": int((~typed).sum()), "types": sorted(
                    {str(label) for label in data["labels"][~typed]}), "why": "the model has no such type"}
            if name == "bccd" and review:
                result[name]["confirmed"] = adapting(classifier, confirmed(subset(data, typed), review), per_class,
                                                     draws, few)
    return result


def classifier_head(classifier) -> tuple[np.ndarray, np.ndarray]:
    from bloodcell.models.heads import classifier_layer

    layer = classifier_layer(classifier.model)
    return (layer.weight.detach().numpy().reshape(layer.weight.shape[0], -1).astype(np.float64),
            layer.bias.detach().numpy().astype(np.float64))


def bundled_guard(classifier, sets: dict[str, dict]) -> dict | None:
    """What the model's own guard (as shipped) says of every set."""
    if classifier.guard is None:
        return None
    out = {"sources": classifier.guard.sources}
    for name, data in sets.items():
        said = [kind(r) for r, _ in classifier.guard.assess(data["pixels"], data["features"][0],
                                                            single=single_cell(data["geometry"]))]
        out[name] = {"images": len(said), **dict(Counter(said))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pbc8", help="bundled name or .safetensors")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--limit", type=int, default=400, help="cells per lab set (BCCD: all typed cells)")
    parser.add_argument("--pass-rate", type=float, default=0.99)
    parser.add_argument("--cells", type=int, default=10, help="at most this many cells per class to adapt from")
    parser.add_argument("--few", type=int, default=3, help="cells of a type given fewer than the minimum")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--adapting-only", action="store_true",
                        help="only item 3, on the labelled labs (scores only their cells)")
    parser.add_argument("--seen", default="pbc", help="comma-separated labs the model learned from (not adapted to)")
    parser.add_argument("--review", default=str(ROOT / "benchmarks" / "audits" / "bccd_wbc_types.csv"),
                        help="BCCD type review: adapting is also measured on the cells whose label it confirms")
    parser.add_argument("--crop-audit", default=str(CROP_AUDIT),
                        help="review of the smear crops without a cell: crops it saw a cell in are reported apart")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "new_lab.json"))
    args = parser.parse_args(argv)
    from bloodcell.errors import DataError

    try:
        crop_audit = read_crop_audit(args.crop_audit)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 1
    import torch

    from bloodcell.inference.predictor import load
    from bloodcell.provenance import file_sha256, git_commit, machine, now
    from bloodcell.weights import resolve

    torch.set_num_threads(args.threads)
    classifier = load(args.model)
    sha = file_sha256(resolve(args.model))
    seen = args.seen.split(",")
    labs = {n: load_set(classifier, sha, n, args.data_root, args.limit)
            for n in LAB_SETS if not (args.adapting_only and n in seen)}
    non_cells = {} if args.adapting_only else {n: load_set(classifier, sha, n, args.data_root, args.limit)
                                                for n in NON_CELL_SETS}
    audited = {}
    if non_cells:
        non_cells["smear_crop_without_cell"], audited["smear_crop_showing_a_cell"] = split_crop_audit(
            non_cells["smear_crop_without_cell"], crop_audit)
    result = {"command": shlex.join(["python", "benchmarks/new_lab.py", *(sys.argv[1:] if argv is None else argv)]),
              "commit": git_commit(), "date": now(), "machine": machine(), "model": Path(str(args.model)).name,
              "model_sha256": sha, "sets": {n: int(len(d["ids"])) for n, d in {**labs, **non_cells, **audited}.items()}}
    if not args.adapting_only:
        result["reasons"] = reasons(classifier, labs, non_cells, args.pass_rate, audited)
        result["model_guard"] = bundled_guard(classifier, {**labs, **non_cells, **audited})
    result["adapting"] = adapting_per_lab(classifier, labs, seen, args.review, args.cells, args.draws,
                                          args.few)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({**{lab: {"referred_unfamiliar_share": e["held_out_lab"]["referred_unfamiliar_share"],
                               "non_cells_not_a_cell": {k: v["not_a_cell_share"] for k, v in e["non_cells"].items()}}
                         for lab, e in result.get("reasons", {}).items()},
                      "adapting": {lab: {k: v["summary"]["all types"] for k, v in e.items() if isinstance(v, dict) and "summary" in v}
                                   for lab, e in result["adapting"].items()}}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
