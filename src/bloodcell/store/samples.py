"""Samples in the store: record a counted sample, review its cells, finish, sign off and reopen, all audited.

Every change goes through one function here, in the caller's transaction (``Store.session()``): it
checks the user's role, refuses a change to a signed sample, refuses a stale write (the sample's
``version`` differs from the one the writer read), appends the audit entry and bumps the version.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bloodcell.data.cell_types import SMEAR_LABELS, cell_type, white_cell_types
from bloodcell.data.images import oriented_size
from bloodcell.errors import ConfigError, DataError
from bloodcell.smear.referral import review_targets
from bloodcell.smear.differential import differential
from bloodcell.smear.lab_check import lab_check
from bloodcell.smear.lab_name import check_lab
from bloodcell.smear.sample_id import check_sample_id
from bloodcell.smear.schema import SampleResult
from bloodcell.store.audit import record
from bloodcell.store.errors import ConflictError, NotFoundError, ReadOnlyError, StoreError
from bloodcell.store.models import AuditEntry, Cell, Decision, Photo, Sample, Timing, utcnow
from bloodcell.store.photos import PhotoFolder
from bloodcell.store.users import Person

#: A reviewer's decisions on one cell: agree; give it a white-cell class (also back from a bin); call it a platelet;
#: not a cell (smudge, debris: removed from the counts); move or resize its box.
ACTIONS = ("confirm", "relabel", "platelet", "remove", "move")
_AUDITED_AS = {"confirm": "decision", "relabel": "relabel", "platelet": "relabel", "remove": "remove_box",
               "move": "move_box"}
#: Decisions that answer a cell's referral (a moved box does not).
RESOLVING = ("confirm", "relabel", "platelet", "remove")


def find(session: Session, sample_id: str) -> Sample:
    sample = session.scalar(select(Sample).where(Sample.sample_id == sample_id))
    if sample is None:
        raise NotFoundError(f"no sample {sample_id!r} in the store")
    return sample


def kept_already(session: Session, sample_ids: list[str]) -> set[str]:
    """Those of ``sample_ids`` the store holds."""
    return set(session.scalars(select(Sample.sample_id).where(Sample.sample_id.in_(sample_ids)))) if sample_ids else set()


def check_new(session: Session, sample_ids: list[str]) -> None:
    """ConfigError when one of ``sample_ids`` cannot be kept or is in the store already (checked before counting)."""
    for sample_id in sample_ids:
        check_sample_id(sample_id)
    taken = sorted(kept_already(session, sample_ids))
    if taken:
        raise ConfigError(f"the store already holds sample {taken[0]!r}" + (f" (and {len(taken) - 1} more)" if
                          len(taken) > 1 else "") + ": give new counts new sample ids")


def record_count(session: Session, photos: PhotoFolder, result: SampleResult, actor: str, *, lab: str = "",
                 classifier: tuple[str | None, str | None] = (None, None),
                 detector: tuple[str | None, str | None] = (None, None), seconds: float | None = None,
                 photo_bytes: Sequence[bytes] | None = None) -> Sample:
    """Keep a counted sample (the counting loop's result): its photos, every box with its call and, for the cells
    meant for a person, why (the sample's ``wbc_referred``), and the models used. ``photo_bytes``: each counted
    photo's bytes, in ``result.images``' order (default: read from each photo's path)."""
    check_new(session, [result.sample_id])
    sample = Sample(sample_id=result.sample_id, lab=check_lab(lab), status="counted", note="",
                    classifier_name=classifier[0], classifier_sha256=classifier[1],
                    detector_name=detector[0], detector_sha256=detector[1],
                    typing_unavailable=result.sample.wbc_typing_unavailable)
    session.add(sample)
    _keep_photos(session, photos, sample, result, photo_bytes, first=0)
    if seconds is not None:
        session.add(Timing(sample=sample, stage="count", seconds=round(seconds, 3)))
    session.flush()
    record(session, actor, "count", f"sample:{sample.sample_id}", None,
           {"photos": len(result.images), "counts": result.sample.counts, "wbc_types": result.sample.wbc_types,
            "skipped": [e.path for e in result.errors]}, sample)
    return sample


def add_photos(session: Session, photos: PhotoFolder, result: SampleResult, by: Person, *,
               classifier: tuple[str | None, str | None], detector: tuple[str | None, str | None],
               photo_bytes: Sequence[bytes] | None = None) -> Sample:
    """Add more photos, counted with ``classifier`` and ``detector`` (:func:`check_same_models`), to a kept sample
    that is not signed; audited. A reviewed sample goes back in review: its new cells have not been reviewed."""
    by.require("count")
    sample = writable(session, result.sample_id, None)
    check_same_models(sample, classifier, detector)
    known = {photo.sha256 for photo in sample.photos}
    status = sample.status
    _keep_photos(session, photos, sample, result, photo_bytes, first=len(sample.photos), known=known)
    _touch(sample, "in_review" if status == "reviewed" else None)
    record(session, by.name, "add_photos", f"sample:{sample.sample_id}", {"photos": len(known), "status": status},
           {"photos": len(sample.photos), "status": sample.status, "added": [Path(c.path).name for c in result.images],
            "counts": result.sample.counts, "skipped": [e.path for e in result.errors]}, sample)
    return sample


def check_same_models(sample: Sample, classifier: tuple[str | None, str | None],
                      detector: tuple[str | None, str | None]) -> None:
    """ConflictError when the models (name, SHA-256) counting more photos differ from those the sample was counted
    with: one sample's cells are all called by the same models (by file content; by name for a model without a
    file)."""
    for kind, kept, now in (("classifier", (sample.classifier_name, sample.classifier_sha256), classifier),
                            ("detector", (sample.detector_name, sample.detector_sha256), detector)):
        same = kept[1] == now[1] if kept[1] or now[1] else kept[0] == now[0]
        if not same:
                raise ConflictError(f"sample {sample.sample_id!r} was counted with the {kind} {kept[0] or 'unknown'} "
                                f"({(kept[1] or 'no file')[:12]}), not this service's {now[0] or 'unknown'} "
                                f"({(now[1] or 'no file')[:12]}): count these photos as a new sample")


def _keep_photos(session: Session, photos: PhotoFolder, sample: Sample, result: SampleResult,
                 photo_bytes: Sequence[bytes] | None, first: int, known: set[str] = frozenset()) -> None:
    """Keep each counted photo of ``result`` (from position ``first``) with its boxes; a photo the sample holds
    already (same SHA-256) is refused."""
    for position, counted in enumerate(result.images, start=first):
        entry = counted.entry()
        data = photo_bytes[position - first] if photo_bytes is not None else _photo_bytes(counted.path)
        digest = photos.put(data)
        if digest in known:
            raise ConfigError(f"{Path(counted.path).name}: sample {sample.sample_id!r} holds this photo already")
        photo = Photo(sample=sample, position=position, name=Path(counted.path).name, sha256=digest)
        session.add(photo)
        session.flush()
        reasons = dict(review_targets(entry))
        session.add_all(Cell(sample=sample, photo_pk=photo.id, label=box.label, x1=box.x1, y1=box.y1,
                             x2=box.x2, y2=box.y2, score=box.score, count=box.count,
                             cell_class=box.wbc_type, confidence=box.confidence,
                             referral_reason=reasons.get(index), origin="detector", removed=False,
                             unfamiliar_lab=box.unfamiliar_lab)
                        for index, box in enumerate(counted.boxes))


def _photo_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the photo to keep it ({exc.strerror or exc})") from None


def writable(session: Session, sample_id: str, expected_version: int | None) -> Sample:
    """The sample, if it may be changed: ConflictError for a stale version, ReadOnlyError when it is signed."""
    sample = find(session, sample_id)
    if expected_version is not None and sample.version != expected_version:
        raise ConflictError(f"sample {sample_id!r} is at version {sample.version}, not {expected_version}: someone "
                            "changed it since you read it; reload it and make the change again")
    if sample.status == "signed":
        raise ReadOnlyError(f"sample {sample_id!r} is signed: a supervisor must reopen it, with a reason, first")
    return sample


def _touch(sample: Sample, status: str | None = None) -> None:
    """Mark the sample changed (its version goes up when the transaction is flushed); without a ``status``, a cell
    changed: a counted or reviewed sample is in review (a review changed after it was finished is finished again)."""
    sample.updated_at = utcnow()
    if status is not None:
        sample.status = status
    elif sample.status in ("counted", "reviewed"):
        sample.status = "in_review"


def _cell(session: Session, sample: Sample, cell_id: int) -> Cell:
    cell = session.get(Cell, cell_id)
    if cell is None or cell.sample_pk != sample.id:
        raise NotFoundError(f"sample {sample.sample_id!r} has no cell {cell_id}")
    return cell


def _class_name(name: str, classes: list[str] | tuple[str, ...] | None) -> str:
    """The vocabulary's name of a reviewer's class: a detector class or one of ``classes`` in any case or alias
    (``PLT``, ``Lymphocytes``); ConfigError for another name when ``classes`` are given (without them, it is kept
    as given)."""
    name = name.strip()
    if not name:
        raise ConfigError("a cell class cannot be empty")
    known = cell_type(name, classes or [])
    if known is None and classes:
        raise ConfigError(f"{name!r} is not a class here; a white cell is one of "
                          f"{', '.join(white_cell_types(classes))}")
    return known or name


def decide(session: Session, sample_id: str, cell_id: int, action: str, by: Person, *,
           cell_class: str | None = None, box: Sequence[float] | None = None, undo: bool = False,
           expected_version: int | None = None, classes: list[str] | tuple[str, ...] | None = None,
           photos: PhotoFolder | None = None) -> Decision:
    """A reviewer decides one cell (:data:`ACTIONS`): ``cell_class`` for relabel (a white-cell type, or RBC, WBC,
    Platelets in any spelling of :mod:`bloodcell.data.cell_types`, checked against ``classes`` when given), ``box``
    for move (inside the photo, checked against its kept file when ``photos`` is given). ``undo`` takes back the
    reviewer's latest standing decision on the cell instead (:func:`undo_decision`; ``action`` and its values are
    then not used)."""
    by.require("review")
    if undo:
        return undo_decision(session, sample_id, cell_id, by, expected_version=expected_version)
    if action not in ACTIONS:
        raise ConfigError(f"unknown decision {action!r}; choose one of {', '.join(ACTIONS)}")
    if action == "relabel" and not cell_class:
        raise ConfigError("a relabel needs the cell's new class")
    new_class = _class_name(cell_class, classes) if action == "relabel" else None
    if action == "move":
        box = _checked_box(box)
    sample = writable(session, sample_id, expected_version)
    cell = _cell(session, sample, cell_id)
    if cell.removed and action in ("confirm", "move"):
        raise ReadOnlyError(f"cell {cell_id} of sample {sample_id!r} was removed: put it back in a class first")
    before = _cell_state(cell)
    if action == "relabel":
        # a detector class (a platelet, a red cell, an untyped white cell) moves the box; a type makes it a white cell
        cell.label, cell.cell_class = (new_class, None) if new_class in SMEAR_LABELS else ("WBC", new_class)
        cell.removed = False
    elif action == "platelet":
        cell.label, cell.cell_class, cell.removed = "Platelets", None, False
    elif action == "remove":
        cell.removed = True
    elif action == "move":
        _check_inside(photos, session.get(Photo, cell.photo_pk), box)
        cell.x1, cell.y1, cell.x2, cell.y2 = box
    return _decided(session, sample, cell, action, by, before, undo=False)


def undo_decision(session: Session, sample_id: str, cell_id: int, by: Person,
                  expected_version: int | None = None) -> Decision:
    """Take back ``by``'s latest standing decision on a cell: the cell is again exactly as it was before it (class,
    box, removed) and that decision no longer stands (:func:`standing_decisions`); the undo is a new decision, kept
    in the audit trail (nothing is deleted). Refused when there is none, or when someone else decided the cell
    since."""
    by.require("review")
    sample = writable(session, sample_id, expected_version)
    cell = _cell(session, sample, cell_id)
    standing = standing_decisions(session, sample).get(cell.id, [])
    mine = [d for d in standing if d.user == by.name]
    undone = _undoable_entry(session, cell, by.name)
    if not mine or undone is None:
        raise ConfigError(f"{by.name} has no decision on cell {cell_id} of sample {sample_id!r} to undo")
    if standing[-1] is not mine[-1]:
        raise ConflictError(f"{standing[-1].user} decided cell {cell_id} of sample {sample_id!r} after you: decide "
                            "it again instead of undoing")
    before = _cell_state(cell)
    if "box" in undone.before:
        cell.x1, cell.y1, cell.x2, cell.y2 = undone.before["box"]
    else:
        cell.label, cell.cell_class, cell.removed = (undone.before["label"], undone.before["class"],
                                                     undone.before["removed"])
    return _decided(session, sample, cell, mine[-1].action, by, before, undo=True)


def _decided(session: Session, sample: Sample, cell: Cell, action: str, by: Person, before: dict[str, Any], *,
             undo: bool) -> Decision:
    """Keep a decision on ``cell`` (its state was ``before``) and its audit entry."""
    after = _cell_state(cell)
    if action == "move":
        before, after = {"box": before["box"]}, {"box": after["box"]}
    else:
        before.pop("box"), after.pop("box")
    if undo:
        after["undo"] = True
    decision = Decision(sample_pk=sample.id, cell_pk=cell.id, action=action, before_class=before.get("class"),
                        after_class=after.get("class"), user=by.name, undo=undo)
    session.add(decision)
    _touch(sample)
    record(session, by.name, _AUDITED_AS[action], f"cell:{cell.id}", before, after, sample)
    return decision


def _undoable_entry(session: Session, cell: Cell, user: str) -> AuditEntry | None:
    """The audit entry (with the cell's state before it) of ``user``'s latest decision on ``cell`` that no later
    undo of theirs took back."""
    query = select(AuditEntry).where(AuditEntry.target == f"cell:{cell.id}", AuditEntry.actor == user,
                                     AuditEntry.action.in_(set(_AUDITED_AS.values()))).order_by(AuditEntry.id)
    taken: list[AuditEntry] = []
    for entry in session.scalars(query):
        if (entry.after or {}).get("undo"):
            taken[-1:] = []
        else:
            taken.append(entry)
    return taken[-1] if taken else None


def standing_decisions(session: Session, sample: Sample) -> dict[int, list[Decision]]:
    """Each cell's decisions that still stand, oldest first: an undo takes back its reviewer's latest standing
    decision on the cell and stands for nothing itself."""
    standing: dict[int, list[Decision]] = {}
    for decision in session.scalars(select(Decision).where(Decision.sample_pk == sample.id).order_by(Decision.id)):
        kept = standing.setdefault(decision.cell_pk, [])
        if not decision.undo:
            kept.append(decision)
            continue
        mine = [k for k, d in enumerate(kept) if d.user == decision.user]
        if mine:
            del kept[mine[-1]]
    return standing


def undecided(session: Session, sample: Sample) -> list[Cell]:
    """The sample's live cells meant for a person (referred, or doubtful white cells) that no standing decision
    answers (:data:`RESOLVING`)."""
    standing = standing_decisions(session, sample)
    return [cell for cell in live_cells(sample) if cell.referral_reason
            and not any(d.action in RESOLVING for d in standing.get(cell.id, []))]


def _cell_state(cell: Cell) -> dict[str, Any]:
    return {"label": cell.label, "class": cell.cell_class, "removed": cell.removed,
            "box": [cell.x1, cell.y1, cell.x2, cell.y2]}


def _checked_box(box: Sequence[float] | None) -> tuple[float, float, float, float]:
    if box is None or len(box) != 4:
        raise ConfigError("a box is four numbers: x1, y1, x2, y2")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0 <= x1 < x2 and 0 <= y1 < y2) or max(x2, y2) > 1e6:
        raise ConfigError(f"a box needs 0 <= x1 < x2 and 0 <= y1 < y2, got {list(box)}")
    return x1, y1, x2, y2


def _check_inside(photos: PhotoFolder | None, photo: Photo, box: tuple[float, float, float, float]) -> None:
    """ConfigError when ``box`` reaches beyond ``photo`` as counting saw it (upright); no check without ``photos``."""
    if photos is None:
        return
    try:
        width, height = oriented_size(photos.path(photo.sha256))
    except DataError:
        raise StoreError(f"photo {photo.name!r} cannot be read from the store's photo folder to check the box "
                         "against it") from None
    if box[2] > width or box[3] > height:
        raise ConfigError(f"the box {[round(v, 1) for v in box]} reaches beyond photo {photo.name!r}, which is "
                          f"{width}x{height} pixels")


def add_cell(session: Session, sample_id: str, photo_position: int, box: tuple[float, float, float, float],
             label: str, by: Person, *, cell_class: str | None = None, expected_version: int | None = None,
             classes: list[str] | tuple[str, ...] | None = None, photos: PhotoFolder | None = None) -> Cell:
    """A reviewer adds a cell the detector missed (``label`` RBC, WBC or Platelets; a white cell's class, checked
    against ``classes`` when given; both in any spelling of :mod:`bloodcell.data.cell_types`); the box must lie
    inside the photo (checked against its kept file when ``photos`` is given)."""
    by.require("review")
    label = cell_type(label) or label
    if label not in SMEAR_LABELS:
        raise ConfigError(f"unknown cell label {label!r}; choose one of {', '.join(SMEAR_LABELS)}")
    if cell_class:
        cell_class = _class_name(cell_class, classes)
        if label != "WBC" and cell_class != label:
            raise ConfigError(f"a {label} cell has no white-cell class (got {cell_class!r}): add it as WBC")
        label, cell_class = (cell_class, None) if cell_class in SMEAR_LABELS else ("WBC", cell_class)
    x1, y1, x2, y2 = _checked_box(box)
    sample = writable(session, sample_id, expected_version)
    photo = next((p for p in sample.photos if p.position == photo_position), None)
    if photo is None:
        raise NotFoundError(f"sample {sample_id!r} has no photo {photo_position}")
    _check_inside(photos, photo, (x1, y1, x2, y2))
    cell = Cell(sample=sample, photo_pk=photo.id, label=label, x1=x1, y1=y1, x2=x2, y2=y2, score=None, count=1,
                cell_class=cell_class if label == "WBC" else None, confidence=None, origin="reviewer", removed=False)
    session.add(cell)
    session.flush()
    session.add(Decision(sample_pk=sample.id, cell_pk=cell.id, action="add", before_class=None,
                         after_class=cell.cell_class, user=by.name))
    _touch(sample)
    record(session, by.name, "add_box", f"cell:{cell.id}", None,
           {"label": label, "class": cell.cell_class, "box": [x1, y1, x2, y2], "photo": photo_position}, sample)
    return cell


def finish_review(session: Session, sample_id: str, by: Person, expected_version: int | None = None) -> Sample:
    """The review is done: the sample waits for a supervisor's sign-off."""
    by.require("review")
    sample = writable(session, sample_id, expected_version)
    if sample.status == "reviewed":
        raise ReadOnlyError(f"sample {sample_id!r} is reviewed already")
    check_all_decided(session, sample, "finishing its review")
    before = sample.status
    _touch(sample, "reviewed")
    record(session, by.name, "review_done", f"sample:{sample_id}", {"status": before}, {"status": "reviewed"}, sample)
    return sample


def sign(session: Session, sample_id: str, by: Person, expected_version: int | None = None) -> Sample:
    """A supervisor signs a reviewed sample off; it is read-only until reopened."""
    by.require("sign")
    sample = writable(session, sample_id, expected_version)
    if sample.status != "reviewed":
        raise ReadOnlyError(f"sample {sample_id!r} is {sample.status.replace('_', ' ')}: only a reviewed sample can "
                            "be signed")
    check_all_decided(session, sample, "signing it")
    _touch(sample, "signed")
    sample.signed_by, sample.signed_at = by.name, sample.updated_at
    record(session, by.name, "sign", f"sample:{sample_id}", {"status": "reviewed"}, {"status": "signed"}, sample)
    return sample


def reopen(session: Session, sample_id: str, by: Person, reason: str, expected_version: int | None = None) -> Sample:
    """A supervisor reopens a signed sample for review, saying why."""
    by.require("sign")
    reason = (reason or "").strip()
    if not reason:
        raise ConfigError("reopening a signed sample needs a reason")
    sample = find(session, sample_id)
    if expected_version is not None and sample.version != expected_version:
        raise ConflictError(f"sample {sample_id!r} is at version {sample.version}, not {expected_version}: reload it")
    if sample.status != "signed":
        raise ReadOnlyError(f"sample {sample_id!r} is not signed, so there is nothing to reopen")
    before = {"status": "signed", "signed_by": sample.signed_by}
    _touch(sample, "in_review")
    sample.signed_by, sample.signed_at = None, None
    record(session, by.name, "reopen", f"sample:{sample_id}", before, {"status": "in_review", "reason": reason},
           sample)
    return sample


def check_all_decided(session: Session, sample: Sample, step: str) -> None:
    """ReadOnlyError in one sentence (how many, the first cell ids, what to do) while a referred or doubtful cell of
    ``sample`` has no standing decision (:func:`undecided`)."""
    left = undecided(session, sample)
    if left:
        one = len(left) == 1
        ids = ", ".join(str(cell.id) for cell in left[:5]) + (", ..." if len(left) > 5 else "")
        raise ReadOnlyError(f"sample {sample.sample_id!r} has {len(left)} referred or doubtful "
                            f"{'cell' if one else 'cells'} with no decision yet ({'cell' if one else 'cells'} {ids}): "
                            f"confirm, relabel or remove {'it' if one else 'each'} before {step}")


def live_cells(sample: Sample) -> list[Cell]:
    return [cell for cell in sample.cells if not cell.removed]


def tallies(sample: Sample) -> tuple[dict[str, int], dict[str, int]]:
    """The sample's cell counts per detector label and white cells per class, as reviewed so far."""
    counts = dict.fromkeys(SMEAR_LABELS, 0)
    types: Counter = Counter()
    for cell in live_cells(sample):
        counts[cell.label] = counts.get(cell.label, 0) + cell.count
        if cell.label == "WBC" and cell.cell_class:
            types[cell.cell_class] += 1
    return counts, dict(sorted(types.items()))


def sample_lab_check(sample: Sample) -> dict[str, Any] | None:
    """The lab check of the sample's live white cells (:func:`~bloodcell.smear.lab_check.lab_check`)."""
    return lab_check([{"unfamiliar_lab": c.unfamiliar_lab} for c in live_cells(sample) if c.label == "WBC"])


def summary(sample: Sample) -> dict[str, Any]:
    """What ``samples show`` prints and the service returns: status, counts, differential, models, timings."""
    counts, types = tallies(sample)
    diff = differential(types)
    return {"sample_id": sample.sample_id, "lab": sample.lab, "status": sample.status, "version": sample.version,
            "note": sample.note, "created_at": sample.created_at.isoformat(), "updated_at": sample.updated_at.isoformat(),
            "signed_by": sample.signed_by, "signed_at": sample.signed_at.isoformat() if sample.signed_at else None,
            "photos": [{"position": p.position, "name": p.name, "sha256": p.sha256} for p in sample.photos],
            "counts": counts, "wbc_types": types, "wbc_classified": sum(types.values()),
            "differential_percent": {k: round(v, 2) for k, v in diff["percent"].items()},
            "referred": sum(1 for c in live_cells(sample) if c.referral_reason),
            "classifier": {"name": sample.classifier_name, "sha256": sample.classifier_sha256},
            "detector": {"name": sample.detector_name, "sha256": sample.detector_sha256},
            "typing_unavailable": sample.typing_unavailable,
            "lab_check": sample_lab_check(sample),
            "timings": {t.stage: t.seconds for t in sample.timings}}


def list_samples(session: Session) -> list[Sample]:
    """Every sample, newest first, with its photos, cells and timings loaded in three more queries."""
    query = (select(Sample).options(selectinload(Sample.photos), selectinload(Sample.cells),
                                    selectinload(Sample.timings))
             .order_by(Sample.created_at.desc(), Sample.id.desc()))
    return list(session.scalars(query))
