"""Review of a counted sample by a person: the cells meant for review, corrections, the recomputed differential.

One implementation for the web service and the ``bloodcell review`` command; nothing here touches
the disk. A sample is a counts.json document (``{"images": [...], "sample": {...}, "errors": [...]}``,
see :class:`bloodcell.smear.schema.SampleResult`).

*Review items* are the white cells meant for a person: those the classifier referred (typed below
the referral threshold) and the doubtful white-cell boxes (detector score below
:data:`~bloodcell.smear.referral.DOUBTFUL_WBC_SCORE`). Each box of a sample has an id ``"<photo>-<box>"``: the photo's key (its
``photo_id`` when it has one, else its number in the sample, from 1) and the box's number in that
photo (from 1).

*Corrections* decide boxes by id (any box on the smear, not only review items): ``accept`` keeps
the call, ``relabel`` gives another class, ``wrong`` says the box is not a cell of that kind; and
``missing`` adds a box the detector missed, on a photo, with its class. A class is one of the
model's classes (a typed white cell), or RBC, WBC (an untyped white cell) or Platelets.

:func:`apply_corrections` returns the corrected document (counts, white-cell types and sample
totals changed by the corrections only, so counts the boxes do not explain are kept; boxes marked
wrong stay in ``boxes`` with ``"reviewed": "wrong"`` and count for nothing; added boxes come last
with ``"reviewed": "added"``) marked reviewed, plus one :class:`Decision` per correction, which
:func:`corrections_csv`, :func:`labelstudio_tasks` and :func:`corrected_cells` turn into the saved
corrections and a ``DIR/<class>/<images>`` folder of reviewed cells for ``bloodcell adapt``.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from bloodcell.data.cell_types import SMEAR_LABELS, cell_type, reviewer_classes
from bloodcell.errors import DataError
from bloodcell.framing import crop_around
from bloodcell.smear.counting import sample_totals
from bloodcell.smear.differential import (
    ADAPT_ON_THE_PAGE,
    differential,
    differential_notes,
    differential_rows,
    trust_note,
)
from bloodcell.smear.documents import check_box, check_coordinates, csv_rows
from bloodcell.smear.referral import EVERY_CELL, box_xyxy, has_box_xyxy, referred_reasons, review_targets
from bloodcell.writing import output_name
from bloodcell.wording import counted

#: Classes shown for each review item.
TOP_K = 3
DECISIONS = ("accept", "relabel", "wrong", "missing")
#: A reviewed cell whose box is longer than this fraction of its photo's shorter side is not cut out (no white
#: cell is that large on a smear photo; its crop would be most of the photo).
MAX_CELL_SIDE = 0.5
#: Columns of corrections.csv (the CLI's template adds ``top_3`` before ``reason``).
CSV_COLUMNS = ("sample_id", "photo", "image", "item", "x1", "y1", "x2", "y2", "model_label", "confidence",
               "reason", "decision", "label")
#: Plain names of the smear classes for people.
CELL_NAMES = {"RBC": "Red cells", "WBC": "White cells", "Platelets": "Platelets"}
FLAG_WORDS = {"high": "above the reference interval", "low": "below the reference interval"}
_VERBS = {"accept": "accepted", "relabel": "relabelled", "wrong": "wrong", "missing": "added"}

#: Reviewed cells per type a bank should hold before adapting (about 10 per type: see the README's "new lab").
WANTED = 10


def still_needed(counts: dict[str, int], wanted: int = WANTED) -> dict[str, int]:
    """How many more reviewed cells each type of ``counts`` needs to reach ``wanted``."""
    return {name: wanted - n for name, n in counts.items() if n < wanted}


@dataclass
class ReviewItem:
    """A white cell meant for a person: its id, photo, box, the model's call and top classes, why, and its crop."""

    id: str
    photo: str
    photo_number: int
    image: str
    box: dict[str, Any]
    reason: str
    top_k: list[tuple[str, float]] = field(default_factory=list)
    crop: Image.Image | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return box_xyxy(self.box)


@dataclass
class Correction:
    """One decision of the reviewer: ``item`` (a box id) for accept/relabel/wrong; ``photo`` and ``box`` for missing."""

    decision: str
    item: str | None = None
    label: str | None = None
    photo: str | None = None
    box: tuple[float, float, float, float] | None = None


@dataclass
class Decision:
    """A correction as applied: where, what the model said, what the reviewer decided (a corrections.csv row)."""

    photo_number: int
    image: str
    item: str
    box: tuple[float, float, float, float]
    model_label: str | None
    confidence: float | None
    reason: str
    decision: str
    label: str | None


def photo_key(entry: dict[str, Any], index: int) -> str:
    """The key of the ``index``-th photo of a sample in box ids: its ``photo_id``, else its number from 1."""
    return str(entry.get("photo_id") or index + 1)


def item_id(photo: str, box_index: int) -> str:
    return f"{photo}-{box_index + 1}"


def _call(box: dict[str, Any]) -> str | None:
    """What the box says the cell is: its white-cell type, else its smear label."""
    return box.get("wbc_type") or box.get("label")


def review_items(doc: dict[str, Any], images: dict[str, Image.Image] | None = None, classifier=None,
                 top_k: int = TOP_K, every_cell: bool = False) -> list[ReviewItem]:
    """The review items of a sample (with ``every_cell``, every white cell not reviewed yet); with ``images``
    (decoded photos by photo key) each gets its crop, and with a ``classifier`` too its ``top_k`` classes (the
    crop classified again, as the counter typed it)."""
    items = []
    for index, entry in enumerate(doc["images"]):
        photo, image = photo_key(entry, index), (images or {}).get(photo_key(entry, index))
        for box_index, reason in review_targets(entry, every_cell):
            box = entry["boxes"][box_index]
            crop = crop_around(image, box_xyxy(box)) if image is not None else None
            items.append(ReviewItem(item_id(photo, box_index), photo, index + 1, entry.get("path", ""), box, reason,
                                    crop=crop))
    with_crops = [item for item in items if item.crop is not None]
    if classifier is not None and with_crops:
        predictions = classifier.predict([item.crop for item in with_crops], top_k=top_k, guard=False)
        for item, pred in zip(with_crops, predictions):
            item.top_k = [(name, round(float(p), 4)) for name, p in pred.top_k]
    return items


def valid_labels(classes: list[str] | tuple[str, ...]) -> list[str]:
    """Classes a reviewer may give, once each: the model's white-cell classes, then RBC, WBC (untyped) and
    Platelets (:func:`bloodcell.data.cell_types.reviewer_classes`)."""
    return reviewer_classes(classes)


def _check_label(label: str | None, classes: list[str], where: str) -> str:
    """The vocabulary's name of the reviewer's ``label`` (any case or alias: ``platelet``, ``PLT``, ``red cell``)."""
    name = cell_type(label, valid_labels(classes))
    if name is None:
        given = f"'{label}'" if label else "no class"
        raise DataError(f"{where}: {given} is not a class the reviewer can give (one of "
                        f"{', '.join(valid_labels(classes))}; any case, or PLT, red cell, white cell)")
    return name


class _Tally:
    """Counts and white-cell types of one photo, changed box by box (``count`` cells per box)."""

    def __init__(self, entry: dict[str, Any]):
        self.counts = Counter(entry.get("counts", {}))
        self.types = Counter(entry.get("wbc_types", {}))

    def change(self, box: dict[str, Any], sign: int) -> None:
        self.counts[box["label"]] += sign * int(box.get("count", 1))
        if box["label"] == "WBC" and box.get("wbc_type"):
            self.types[box["wbc_type"]] += sign

    def write(self, entry: dict[str, Any]) -> None:
        entry["counts"] = {k: max(0, v) for k, v in self.counts.items()}
        entry["wbc_types"] = {k: v for k, v in sorted(self.types.items()) if v > 0}


def _set_label(box: dict[str, Any], label: str) -> None:
    """Give ``box`` the reviewer's class: a smear label as such, any other class as a typed white cell."""
    box.pop("referred", None)
    if label in SMEAR_LABELS:
        box["label"] = label
        if label != "WBC" or box.get("wbc_type") is not None:
            box["wbc_type"], box["confidence"] = None, None
        return
    box["label"], box["wbc_type"], box["confidence"] = "WBC", label, None


def _decide(entry: dict[str, Any], tally: _Tally, box_index: int, correction: Correction, classes: list[str],
            where: str) -> tuple[dict[str, Any], str | None]:
    """Apply an accept/relabel/wrong to one box; returns the box as the model had it and the final label."""
    box = entry["boxes"][box_index]
    before = copy.deepcopy(box)
    if correction.decision == "accept":
        box.pop("referred", None)
        box["reviewed"] = "accepted"
        return before, _call(before)
    tally.change(box, -1)
    if correction.decision == "wrong":
        box.pop("referred", None)
        box["reviewed"] = "wrong"
        return before, None
    label = _check_label(correction.label, classes, where)
    _set_label(box, label)
    box["reviewed"], box["model_label"] = "relabelled", _call(before)
    tally.change(box, +1)
    return before, label


def _add_missing(entry: dict[str, Any], tally: _Tally, correction: Correction, classes: list[str],
                 where: str) -> dict[str, Any]:
    if correction.box is None:
        raise DataError(f"{where}: a missing cell needs a box x1,y1,x2,y2 with x2 > x1 and y2 > y1")
    if entry.get("width") and entry.get("height"):
        corners = check_box(correction.box, entry["width"], entry["height"], where)
    else:
        corners = check_coordinates(correction.box, where)
    label = _check_label(correction.label, classes, where)
    box = {"label": "WBC", "score": None, **dict(zip(("x1", "y1", "x2", "y2"), (round(v, 1) for v in corners)))}
    _set_label(box, label)
    box["reviewed"] = "added"
    entry["boxes"].append(box)
    tally.change(box, +1)
    return box


def _locate(doc: dict[str, Any], keys: dict[str, int], item: str | None, where: str) -> tuple[int, int]:
    photo, _, number = (item or "").rpartition("-")
    if photo not in keys or not number.isdigit():
        raise DataError(f"{where}: no box '{item}' in this sample (ids are <photo>-<box>, e.g. 1-3)")
    index, box_index = keys[photo], int(number) - 1
    if not 0 <= box_index < len(doc["images"][index]["boxes"]):
        raise DataError(f"{where}: no box '{item}' in this sample (photo {photo} has "
                        f"{len(doc['images'][index]['boxes'])} boxes)")
    return index, box_index


def _photo_index(doc: dict[str, Any], keys: dict[str, int], photo: str | None, where: str) -> int:
    if photo in keys:
        return keys[photo]
    named = [i for i, e in enumerate(doc["images"]) if photo and _basename(e.get("path", "")) == photo]
    if len(named) == 1:
        return named[0]
    raise DataError(f"{where}: no photo '{photo}' in this sample (give its number, from 1, or its file name)")


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path)[-1]


def _copy_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a sample document without decoded images (the annotated photos)."""
    images = [{k: copy.deepcopy(v) for k, v in e.items() if not isinstance(v, Image.Image)} for e in doc["images"]]
    return {**copy.deepcopy({k: v for k, v in doc.items() if k != "images"}), "images": images}


def apply_corrections(doc: dict[str, Any], corrections: list[Correction], classes: list[str] | tuple[str, ...] = (),
                      reviewed: bool = True) -> tuple[dict[str, Any], list[Decision]]:
    """The corrected sample document (see the module's description) and the decisions applied, in order.

    ``classes``: the model's classes (a relabel or missing cell must be one of them or a smear label).
    DataError (one sentence naming the correction) for an unknown box or photo, a class the reviewer
    cannot give, or a box decided twice. ``reviewed=False`` leaves the document unmarked (a sample
    combined from several counts, before anyone has reviewed it).
    """
    new, classes = _copy_doc(doc), list(classes)
    keys = {photo_key(e, i): i for i, e in enumerate(new["images"])}
    reasons = {item_id(photo_key(e, i), b): r for i, e in enumerate(new["images"])  # a cell exported with --all too
               for b, r in review_targets(e, every_cell=True)}
    targets = {item: reason for item, reason in reasons.items() if reason != EVERY_CELL}  # referred or doubtful
    tallies = [_Tally(e) for e in new["images"]]
    decisions: list[Decision] = []
    for number, correction in enumerate(corrections, start=1):
        where = f"correction {number}"
        if correction.decision not in DECISIONS:
            raise DataError(f"{where}: decision '{correction.decision}' is not one of {', '.join(DECISIONS)}")
        if correction.decision == "missing":
            index = _photo_index(new, keys, correction.photo, where)
            box = _add_missing(new["images"][index], tallies[index], correction, classes, where)
            box_index, before, label = len(new["images"][index]["boxes"]) - 1, None, _call(box)
        else:
            index, box_index = _locate(new, keys, correction.item, where)
            if any(d.item == item_id(photo_key(new["images"][index], index), box_index) for d in decisions):
                raise DataError(f"{where}: box {correction.item} is decided twice")
            before, label = _decide(new["images"][index], tallies[index], box_index, correction, classes, where)
        item = item_id(photo_key(new["images"][index], index), box_index)
        decisions.append(Decision(index + 1, new["images"][index].get("path", ""), item,
                                  box_xyxy(new["images"][index]["boxes"][box_index]),
                                  _call(before) if before else None, (before or {}).get("confidence"),
                                  reasons.get(item, ""), correction.decision, label))
    _finish(new, tallies, targets, {d.item for d in decisions}, decisions, reviewed)
    return new, decisions


def _finish(new: dict[str, Any], tallies: list[_Tally], targets: dict[str, str], decided: set[str],
            decisions: list[Decision], reviewed: bool) -> None:
    """Write the photos' tallies and the cells the classifier referred that are still undecided (each photo's
    ``referred``), the sample totals and the review summary."""
    for index, (entry, tally) in enumerate(zip(new["images"], tallies)):
        tally.write(entry)
        entry["referred"] = [{**entry["boxes"][b], "reason": reason} for b, reason in referred_reasons(entry).items()]
    sample = new.get("sample", {})
    typing_unavailable = sample.get("wbc_typing_unavailable")
    new["sample"] = {**sample, **sample_totals(new["images"], typing_unavailable)}
    if reviewed:
        undecided = sum(1 for item in targets if item not in decided)
        new["review"] = review_summary(decisions, undecided)


def review_summary(decisions: list[Decision], undecided: int) -> dict[str, Any]:
    """How the review went, with one sentence for the report and the page."""
    tally = Counter(d.decision for d in decisions)
    parts = [f"{tally[d]} {words}" for d, words in (("accept", "accepted"), ("relabel", "given another class"),
                                                  ("wrong", "marked wrong")) if tally[d]]
    decided = tally["accept"] + tally["relabel"] + tally["wrong"]
    clauses = [f"{counted(decided, 'box', 'boxes')} decided ({', '.join(parts)})"] if decided else []
    if tally["missing"]:
        clauses.append(f"{counted(tally['missing'], 'missed cell', 'missed cells')} added")
    if undecided:
        clauses.append(f"{counted(undecided, 'cell', 'cells')} for review left undecided (still referred)")
    sentence = "Reviewed by a person: " + ("; ".join(clauses) or "nothing needed correcting") + "."
    if decisions:
        sentence += " The counts and the differential include these corrections."
    return {"reviewed": True, "decisions": {_VERBS[d]: tally[d] for d in DECISIONS}, "undecided": undecided,
            "summary": sentence}


def plain(text: str) -> str:
    """Markdown-free text for people (code spans become plain words)."""
    return text.replace("`", "")


def sample_report(doc: dict[str, Any], sample_id: str) -> dict[str, Any]:
    """The sample's differential for people: counts, percentages with reference intervals and flags in words,
    remarks, the trust paragraph of report.md, and whether a person reviewed it. No file paths, no raw keys."""
    sample = doc.get("sample", {})
    types = sample.get("wbc_types", {})
    diff = differential(types)
    typing_unavailable = sample.get("wbc_typing_unavailable")
    rows = [] if typing_unavailable else [
        {**row, "percent": round(row["percent"], 1), "flag": FLAG_WORDS.get(row["flag"], "")}
        for row in differential_rows(types, diff)]
    notes = differential_notes(diff) if not typing_unavailable else [f"Warning: {w}." for w in diff["warnings"]]
    review = doc.get("review") or {}
    typing = sample.get("wbc_typing")
    return {
        "sample_id": sample_id,
        "photos": sample.get("images", len(doc.get("images", []))),
        "skipped": len(doc.get("errors", [])),
        "counts": [{"cell": CELL_NAMES.get(k, k), "count": v} for k, v in sample.get("counts", {}).items()],
        "white_cells_typed": diff["classified"],
        "differential": rows,
        "notes": notes,
        "typing_unavailable": f"White-cell types are unavailable: {typing_unavailable}." if typing_unavailable else None,
        "trust": plain(trust_note(typing if isinstance(typing, dict) else {}, ADAPT_ON_THE_PAGE))
        if diff["classified"] else None,
        "lab_check": plain(check["message"]) if isinstance(check := sample.get("lab_check"), dict)
        and check.get("unfamiliar_lab") and isinstance(check.get("message"), str) else None,
        "referred": sum(len(review_targets(entry)) for entry in doc.get("images", [])),
        "reviewed": bool(review.get("reviewed")),
        "review_summary": review.get("summary"),
    }


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def decision_row(decision: Decision, sample_id: str) -> dict[str, Any]:
    x1, y1, x2, y2 = decision.box
    return {"sample_id": sample_id, "photo": decision.photo_number, "image": _basename(decision.image),
            "item": decision.item, "x1": _fmt(x1), "y1": _fmt(y1), "x2": _fmt(x2), "y2": _fmt(y2),
            "model_label": decision.model_label or "", "confidence": _fmt(decision.confidence),
            "reason": decision.reason, "decision": decision.decision, "label": decision.label or ""}


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str] = CSV_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def corrections_csv(decisions: list[Decision], sample_id: str) -> str:
    """corrections.csv: one row per decision (``label`` is the final class; empty for a box marked wrong)."""
    return to_csv([decision_row(d, sample_id) for d in decisions])


def template_rows(items: list[ReviewItem], sample_id: str) -> list[dict[str, Any]]:
    """The CLI's review template: one row per review item with ``decision`` and ``label`` left empty."""
    rows = []
    for item in items:
        x1, y1, x2, y2 = item.xyxy
        rows.append({"sample_id": sample_id, "photo": item.photo_number, "image": _basename(item.image),
                     "item": item.id, "x1": _fmt(x1), "y1": _fmt(y1), "x2": _fmt(x2), "y2": _fmt(y2),
                     "model_label": _call(item.box) or "", "confidence": _fmt(item.box.get("confidence")),
                     "top_3": "; ".join(f"{name} {p:.2f}" for name, p in item.top_k),
                     "reason": item.reason, "decision": "", "label": ""})
    return rows


def _number(row: dict[str, str], key: str, where: str) -> float:
    try:
        value = float(row.get(key) or "")
    except ValueError:
        raise DataError(f"{where}: {key} must be a number, got '{row.get(key) or ''}'") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {key} must be a finite number")
    return value


def read_corrections(text: str) -> list[Correction]:
    """Corrections from a corrections CSV (the template filled in, or a saved corrections.csv).

    Rows without a decision are undecided, unless they give a label: then the label decides (accept when it is
    the model's call, relabel otherwise). A ``missing`` row needs photo (number or file name), x1..y2 and label.
    """
    fields, rows = csv_rows(text, "the corrections CSV")
    if not {"decision", "label"} <= set(fields):
        raise DataError("the corrections CSV needs the columns item, decision and label (and photo, x1, y1, x2, y2 "
                        "for missing cells)")
    corrections = []
    for line, row in enumerate(rows, start=2):
        where = f"corrections CSV line {line}"
        decision, label = (row.get("decision") or "").strip().lower(), (row.get("label") or "").strip() or None
        if not decision and label:
            model_label = (row.get("model_label") or "").strip()
            same = cell_type(label, [model_label]) not in (None, "") and \
                cell_type(label, [model_label]) == cell_type(model_label, [model_label])
            decision = "accept" if same else "relabel"
        if not decision:
            continue
        if decision == "missing":
            box = tuple(_number(row, k, where) for k in ("x1", "y1", "x2", "y2"))
            corrections.append(Correction("missing", label=label, photo=(row.get("photo") or "").strip(), box=box))
        else:
            corrections.append(Correction(decision, item=(row.get("item") or "").strip(), label=label))
    return corrections


def _ls_region(box: dict[str, Any], region_id: str, width: int, height: int) -> dict[str, Any]:
    x1, y1, x2, y2 = box_xyxy(box)
    return {"id": region_id, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width,
                      "height": 100 * (y2 - y1) / height, "rotation": 0, "rectanglelabels": [_call(box)]}}


def labelstudio_tasks(reviewed: dict[str, Any], original: dict[str, Any], sample_id: str) -> list[dict[str, Any]]:
    """Label Studio tasks (JSON import), one per photo with its size known: the reviewed boxes as the
    annotation (boxes marked wrong left out), the counter's boxes as the prediction. ``data.image`` is the
    photo's file name: point Label Studio's storage at the photos. Labels as in :func:`labelstudio_config`."""
    tasks = []
    for index, (entry, before) in enumerate(zip(reviewed["images"], original["images"])):
        width, height = entry.get("width"), entry.get("height")
        if not width or not height:
            continue
        photo = photo_key(entry, index)
        kept = [(b, box) for b, box in enumerate(entry["boxes"]) if box.get("reviewed") != "wrong" and has_box_xyxy(box)]
        counted = [(b, box) for b, box in enumerate(before["boxes"]) if has_box_xyxy(box)]
        tasks.append({
            "data": {"image": _basename(entry.get("path", "")), "sample_id": sample_id, "photo": index + 1},
            "annotations": [{"result": [_ls_region(box, item_id(photo, b), width, height) for b, box in kept]}],
            "predictions": [{"model_version": "bloodcell count",
                             "result": [_ls_region(box, item_id(photo, b), width, height) for b, box in counted]}],
        })
    return tasks


def labelstudio_config(classes: list[str] | tuple[str, ...]) -> str:
    """The Label Studio labelling config that fits :func:`labelstudio_tasks`."""
    labels = "\n".join(f'    <Label value="{name}"/>' for name in valid_labels(list(classes)))
    return (f'<View>\n  <Image name="image" value="$image"/>\n  <RectangleLabels name="label" toName="image">\n'
            f"{labels}\n  </RectangleLabels>\n</View>\n")


def sample_stem(sample_id: str) -> str:
    """A sample id as a file-name part (NFC): letters, digits and combining marks of any script, dot, dash and
    underscore kept, path separators and other punctuation as ``_`` (bytes that are not UTF-8 become ``\\xNN`` where
    it is written)."""
    kept = "".join(c if c.isalnum() or c in "._-" or "\udc80" <= c <= "\udcff" or unicodedata.category(c)[0] == "M"
                   else "\0" for c in unicodedata.normalize("NFC", sample_id))
    return re.sub("\0+", "_", kept).strip("._") or "sample"


def sample_folder_name(sample_id: str) -> str:
    """A sample's output folder name: :func:`sample_stem`, with a hash instead of the end when it would be too long
    (:func:`bloodcell.writing.output_name`)."""
    return output_name(sample_stem(sample_id), "")


def cell_file_name(sample_id: str, photo_number: int, box_number: str) -> str:
    """A reviewed cell's file name, as other outputs name files: :func:`sample_stem`, its photo and box, and a
    hash instead of the end when it would be too long (:func:`bloodcell.writing.output_name`)."""
    return output_name(f"{sample_stem(sample_id)}_photo{photo_number}_box{box_number}", ".png")


def corrected_cells(reviewed: dict[str, Any], decisions: list[Decision], images: dict[str, Image.Image],
                    sample_id: str, classes: list[str] | tuple[str, ...]) -> list[tuple[str, Image.Image]]:
    """The reviewed white cells as (``<class>/<name>.png``, crop): accepted, relabelled and added cells whose
    class is one of the model's ``classes``, cut from their photo (``images`` by photo key) as the counter cuts them.
    Names are unique across samples (sample id, photo and box: :func:`cell_file_name`), so several reviews can
    share one folder.
    Boxes longer than :data:`MAX_CELL_SIDE` of the photo's shorter side are left out."""
    cells = []
    for decision in decisions:
        if decision.decision == "wrong" or decision.label not in classes:
            continue
        photo = photo_key(reviewed["images"][decision.photo_number - 1], decision.photo_number - 1)
        image = images.get(photo)
        x1, y1, x2, y2 = decision.box
        if image is None or max(x2 - x1, y2 - y1) > MAX_CELL_SIDE * min(image.size):
            continue
        box_number = decision.item.rpartition("-")[2]
        name = cell_file_name(sample_id, decision.photo_number, box_number)
        cells.append((f"{decision.label}/{name}", crop_around(image, decision.box)))
    return cells
