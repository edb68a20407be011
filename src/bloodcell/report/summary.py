"""Formatting helpers shared by the Markdown and HTML renderers."""

from __future__ import annotations

from typing import Any


def pct(value: float | None, digits: int = 2) -> str:
    """``0.98765 -> '98.77%'``; None -> 'n/a'."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int = 4) -> str:
    """Fixed-point number or 'n/a'."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def with_ci(ci: dict[str, Any], as_pct: bool = True) -> str:
    """``estimate [low, high]`` from a bootstrap entry."""
    fmt = pct if as_pct else num
    if ci.get("low") is None:
        return fmt(ci.get("estimate"))
    exact = " (Clopper-Pearson: every call right or every one wrong)" if ci.get("method") == "clopper-pearson" else ""
    return f"{fmt(ci['estimate'])} [{fmt(ci['low'])}, {fmt(ci['high'])}]{exact}"


def headline_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows of the headline metrics with 95% CIs."""
    m = result["metrics"]
    boot = m["bootstrap"]
    cal = m["calibration"]
    rows = [
        ("Accuracy (95% CI)", with_ci(boot["accuracy"])),
        ("Macro-F1 (95% CI)", with_ci(boot["macro_f1"])),
        ("Cohen's kappa (95% CI)", with_ci(boot["kappa"], as_pct=False)),
        ("Balanced accuracy", pct(m["balanced_accuracy"])),
        ("Matthews correlation", num(m["matthews_corrcoef"])),
        ("Macro precision / recall / specificity",
         f"{pct(m['macro']['precision'])} / {pct(m['macro']['recall'])} / {pct(m['macro']['specificity'])}"),
        ("Weighted F1", pct(m["weighted"]["f1"])),
        ("Macro ROC AUC (one vs rest)", num(m["macro_auc"])),
        (f"ECE ({cal['n_bins']} bins, calibrated)", num(cal["ece"])),
        ("NLL / Brier (calibrated)", f"{num(cal['nll'])} / {num(cal['brier'])}"),
    ]
    uncal = result.get("uncalibrated")
    if uncal:
        rows.append(("ECE / NLL before temperature scaling", f"{num(uncal['ece'])} / {num(uncal['nll'])}"))
    return rows


def provenance_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows saying exactly what was evaluated."""
    p = result["provenance"]
    keys = [
        ("Result", result["label"]),
        ("Model", p.get("model_name")),
        ("Checkpoint", p.get("checkpoint")),
        ("Checkpoint SHA-256", p.get("checkpoint_sha256")),
        ("Dataset / split / taxonomy", f"{result['dataset']} / {result['split']} / {result.get('taxonomy') or '-'}"),
        ("Manifest", p.get("manifest")),
        ("Manifest SHA-256", p.get("manifest_sha256")),
        ("Label map", p.get("label_map")),
        ("Temperature", num(p.get("temperature"), 4) if p.get("temperature") is not None else None),
        ("Test-time augmentation", "yes (mean of the 8 rotations/flips)" if p.get("tta") else "no"),
        ("Image limit", str(p["limit"]) if p.get("limit") else None),
        ("Git commit", p.get("git_commit")),
        ("bloodcell version", p.get("bloodcell_version")),
        ("Evaluated at", p.get("created")),
    ]
    return [(k, str(v)) for k, v in keys if v is not None]


def count_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    c = result["counts"]
    limit = result.get("provenance", {}).get("limit")
    taken = f"Images taken from the split (a subset: --limit {limit})" if limit else "Images in split"
    rows = [(taken, str(c["images"])), ("Scored", str(c["scored"])), ("Skipped (unreadable)", str(c["skipped"]))]
    if c.get("unmapped"):
        rows.append(("Not scored (class unknown to the model)", str(c["unmapped"])))
    speed = result.get("speed")
    if speed:
        rows.append(("Inference speed", f"{speed['images_per_second']:.1f} images/s ({speed['seconds']:.1f} s)"))
    return rows


def per_class_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["class", "support", "predicted", "precision", "recall", "specificity", "F1", "AUC"]
    rows = [
        [r["name"], str(r["support"]), str(r["predicted"]), pct(r["precision"]), pct(r["recall"]),
         pct(r["specificity"]), pct(r["f1"]), num(r["auc"])]
        for r in metrics["per_class"]
    ]
    return header, rows


def selective_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["operating point", "confidence threshold", "coverage", "accuracy"]
    sel = metrics["selective"]
    rows = [
        [f"coverage {pct(r['coverage'], 0)}", num(r["threshold"]), pct(r["accepted"] / metrics["n_samples"]), pct(r["accuracy"])]
        for r in sel["accuracy_at_coverage"]
    ]
    for r in sel["threshold_for_accuracy"]:
        if r["reached"]:
            rows.append([f"target accuracy {pct(r['target'], 1)}", num(r["threshold"]), pct(r["coverage"]), pct(r["accuracy"])])
        else:
            rows.append([f"target accuracy {pct(r['target'], 1)}", "not reachable", "-", "-"])
    return header, rows


def unmapped_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, info in (result.get("unmapped") or {}).items():
        predicted = ", ".join(f"{k}: {v}" for k, v in sorted(info["predicted"].items(), key=lambda kv: -kv[1]))
        rows.append([name, str(info["count"]), predicted or "-"])
    return rows
