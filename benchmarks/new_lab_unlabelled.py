"""A new lab adapted without labels, leave-one-lab-out: does ``bloodcell adapt --unlabelled`` help, and does its
label-free rule keep the unadapted model where adapting would hurt?

Each lab's cells (``benchmarks/new_lab_sets.py``) are split at random into two halves. The unlabelled adaptation of
``workflows.adapt_unlabelled`` runs on one half exactly as the command does (batch-norm statistics blended at each
candidate weight, the rule deciding from those cells' predictions alone) and is scored on the other half; then the
halves swap, and the two scored halves are pooled. Per lab: unadapted accuracy, accuracy of what the rule chose
(adapted or kept; with and without the calibrated refinement of the chosen blend, ``TENT``), of each blend forced (what the rule saved or missed), 95 % bootstrap CIs (the gain's paired),
and the rule's decision with its label-free statistics per half. Also, label-free: the share of the white cells
called a type that is not a white cell (platelet, erythroblast: certainly wrong), where the model has those types.

Labs, each under a model that never saw it: BCCD's typed cells and Raabin's white cells (untyped: no accuracy)
under pbc11 (PBC only); PBC under ``--pbc-model`` (a model trained without PBC, e.g. on BCCD's cells), if given.
Constructed cases where adapting may hurt: PBC under pbc11 (its own lab: nothing to gain), and BCCD adapted from
its neutrophils only (a lab whose unlabelled cells are of one type) and scored on all its types. The result is written after every case
(``complete`` false and ``cases_pending`` until the last), labelled labs first.

    python benchmarks/new_lab_unlabelled.py [--pbc-model RUN/best.safetensors] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from new_lab import bootstrap_ci, right  # noqa: E402
from new_lab_sets import load_set  # noqa: E402

NOT_WHITE = ("platelet", "erythroblast")


def halves(n: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[: n // 2]), np.sort(order[n // 2:])]


def not_white_share(names: list[str], predicted: np.ndarray) -> float | None:
    """Share of white cells called a type that is not a white cell (None when the model has no such type)."""
    wrong = [names.index(n) for n in NOT_WHITE if n in names]
    return round(float(np.isin(predicted, wrong).mean()), 4) if wrong else None


def run_case(classifier, data: dict, seed: int, adapt_from=None) -> dict:
    """The two-halves protocol on one lab's cells; ``adapt_from`` (a mask) restricts the cells adapted from."""
    from bloodcell.workflows.adapt_unlabelled import candidates, decide, probabilities, refine

    names = classifier.class_names
    pixels, labels = data["pixels"], data["labels"]
    labelled = bool(len(labels)) and labels[0] != ""
    n = len(pixels)
    scored: dict[str, np.ndarray] = {}
    decisions = []
    for fold, (source, target) in enumerate(zip(halves(n, seed), halves(n, seed)[::-1])):
        if adapt_from is not None:
            source = source[adapt_from[source]]
        before, models = candidates(classifier, pixels[source])
        decision = decide(before, {w: probabilities(classifier, m, pixels[source]) for w, m in models.items()})
        chosen = refine(classifier, pixels[source], decision, before, models)
        decisions.append({"half": fold, "adapted_from": int(len(source)), "scored": int(len(target)),
                          **decision.to_dict()})
        predicted = {"unadapted": probabilities(classifier, classifier.model, pixels[target]).argmax(1)}
        for weight, model in models.items():
            predicted[f"forced {weight}"] = probabilities(classifier, model, pixels[target]).argmax(1)
        predicted["rule without tent"] = predicted["unadapted" if decision.weight is None else f"forced {decision.weight}"]
        predicted["rule"] = probabilities(classifier, chosen, pixels[target]).argmax(1)
        for key, value in predicted.items():
            scored[key] = np.concatenate([scored.get(key, np.zeros(0, int)), value])
        scored["index"] = np.concatenate([scored.get("index", np.zeros(0, int)), target])
    order = scored.pop("index")
    row: dict = {"cells": n, "kept_unadapted_halves": sum(not d["adapted"] for d in decisions),
                 "tent_refined_halves": sum(d["tent_refined"] for d in decisions), "decisions": decisions,
                 "not_white_share": {k: not_white_share(names, v) for k, v in scored.items()}}
    if labelled:
        correct = {k: right(names, v, labels[order]) for k, v in scored.items()}
        row["accuracy"] = {k: round(float(v.mean()), 4) for k, v in correct.items()}
        row["accuracy_ci95"] = {k: bootstrap_ci(v) for k, v in correct.items()}
        gain = correct["rule"].astype(float) - correct["unadapted"]
        row["gain_points"] = round(100 * float(gain.mean()), 2)
        row["gain_ci95_points"] = [round(100 * g, 2) for g in bootstrap_ci(gain)]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pbc11", help="the model that never saw BCCD and Raabin")
    parser.add_argument("--pbc-model", default=None, help="a model that never saw PBC (.safetensors)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "new_lab-unlabelled.json"))
    args = parser.parse_args(argv)
    import torch

    from bloodcell.inference.predictor import load
    from bloodcell.provenance import file_sha256, git_commit, machine, now
    from bloodcell.weights import resolve

    torch.set_num_threads(args.threads)
    models = {"model": args.model, **({"pbc_model": args.pbc_model} if args.pbc_model else {})}
    loaded = {key: (load(spec), file_sha256(resolve(spec))) for key, spec in models.items()}
    classifier, sha = loaded["model"]
    sets = {name: load_set(classifier, sha, name, args.data_root, args.limit) for name in ("bccd", "raabin", "pbc")}
    cases = {("labs", "bccd"): lambda: run_case(classifier, sets["bccd"], args.seed)}
    if args.pbc_model:
        other, other_sha = loaded["pbc_model"]
        pbc = load_set(other, other_sha, "pbc", args.data_root, args.limit)
        known = np.isin(pbc["labels"], other.class_names)
        cases["labs", "pbc"] = lambda: {"model": Path(args.pbc_model).name,
                                        "types": sorted(set(pbc["labels"][known].tolist())),
                                        **run_case(other, {k: pbc[k][known] for k in ("pixels", "labels")}, args.seed)}
    cases["constructed", "bccd adapted from its neutrophils only"] = lambda: run_case(
        classifier, sets["bccd"], args.seed, adapt_from=sets["bccd"]["labels"] == "neutrophil")
    cases["constructed", "pbc under its own model"] = lambda: run_case(classifier, sets["pbc"], args.seed)
    cases["labs", "raabin"] = lambda: run_case(classifier, sets["raabin"], args.seed)
    commit = git_commit()  # the code this run imports, before its own result file makes the tree dirty
    labs: dict = {}
    constructed: dict = {}
    for done, ((group, name), run) in enumerate(cases.items(), 1):
        (labs if group == "labs" else constructed)[name] = run()
        measured = [row["gain_points"] for row in labs.values() if "gain_points" in row]
        result = {"command": shlex.join(["python", "benchmarks/new_lab_unlabelled.py",
                                         *(sys.argv[1:] if argv is None else argv)]),
                  "commit": commit, "date": now(), "machine": machine(),
                  "complete": done == len(cases), "cases_pending": [n for _, n in list(cases)[done:]],
                  "models": {key: {"name": Path(str(spec)).name, "sha256": loaded[key][1]}
                             for key, spec in models.items()},
                  "labs": labs, "constructed": constructed,
                  "summary": {"mean_gain_points_labelled_labs": round(float(np.mean(measured)), 2) if measured else None,
                              "worst_gain_points": min([*measured, *(r["gain_points"] for r in constructed.values())])}}
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # after every case: a stop keeps what is done
        print(f"{name} done", file=sys.stderr)
    print(json.dumps({name: {k: row.get(k) for k in ("accuracy", "gain_points", "gain_ci95_points",
                                                     "kept_unadapted_halves", "tent_refined_halves", "not_white_share")}
                      for name, row in {**labs, **constructed}.items()}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
