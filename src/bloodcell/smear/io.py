"""Write a counting run to a folder: counts.json, one annotated PNG per image, report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bloodcell.smear.differential import write_report


def serialisable(doc: dict[str, Any]) -> dict[str, Any]:
    """The counts.json document: ``annotated`` images dropped."""
    images = [{k: v for k, v in e.items() if k != "annotated"} for e in doc["images"]]
    return {**doc, "images": images}


def write_outputs(doc: dict[str, Any], out_dir: str | Path, sample_id: str = "sample") -> Path:
    """Write counts.json, annotated/<stem>.png and report.md into ``out_dir``; returns counts.json."""
    out = Path(out_dir)
    (out / "annotated").mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for entry in doc["images"]:
        stem, n = Path(entry["path"]).stem, 1
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}_{n}.png"
        used.add(name)
        entry["annotated"].save(out / "annotated" / name)
        entry["annotated_png"] = f"annotated/{name}"
    counts = out / "counts.json"
    counts.write_text(json.dumps(serialisable(doc), indent=2))
    write_report(doc, out / "report.md", sample_id)
    return counts

