"""Freeze the detector's split of TXL-PBC: its own train/val subsets, with copies kept on one side.

TXL-PBC's BCCD fields are BCCD photos, and its Kaggle-BCD fields are mostly squashed, turned and
recoloured copies of BCCD photos (:mod:`bloodcell.data.copies`). Every such field gets the BCCD
photo it shows as its ``group``. A training field is ``excluded`` when its photo is a held-out
CBC smear (the test split of the CBC manifest, so that CBC test figures stay honest) or also
appears in TXL's val subset (so that val figures stay honest). Zoomed crops among the Kaggle
fields are not matched and stay in their subset; the note of the run says how many.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bloodcell.data.copies import match_copies
from bloodcell.data.smear_manifest import (
    SmearRow,
    read_smear_manifest,
    write_smear_manifest,
)
from bloodcell.data.smears import smear_images

#: TXL sources whose fields show BCCD photos.
BCCD_SOURCES = ("bccd", "kaggle-bcd")


def txl_detector_split(out: str | Path, cbc_manifest: str | Path, data_root: str | Path | None = None) -> dict:
    """Write the TXL detector manifest to ``out``; returns counts per split and source, and unmatched fields."""
    fields = smear_images("txl", data_root)
    originals = smear_images("bccd", data_root)
    cbc_test = set(read_smear_manifest(cbc_manifest).ids("test"))
    copies = [f for f in fields if f.source in BCCD_SOURCES]
    matches = match_copies([f.path for f in copies], [o.path for o in originals])
    group = {f.image_id: originals[m.original].image_id for f, m in zip(copies, matches) if m.is_copy}
    unmatched = sorted(f.image_id for f, m in zip(copies, matches) if not m.is_copy)
    val_groups = {group[f.image_id] for f in fields if f.subset == "val" and f.image_id in group}
    rows = []
    for f in fields:
        photo = group.get(f.image_id, "")
        split, note = f.subset, ""
        if f.subset == "train" and photo in cbc_test:
            split, note = "excluded", f"shows CBC test smear {photo}"
        elif f.subset == "train" and photo in val_groups:
            split, note = "excluded", f"shows {photo}, also in TXL val"
        rows.append(SmearRow(f.image_id, split, "txl", f.source, photo, note))
    manifest = write_smear_manifest(rows, out)
    return {"manifest": str(manifest.path), "sha256": manifest.sha256,
            "counts": {f"{s}/{src}": n for (s, src), n in sorted(Counter((r.split, r.source) for r in rows).items())},
            "unmatched_copies": len(unmatched)}
