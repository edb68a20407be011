"""``bloodcell count``: smear photos of one or more samples -> counts, differentials and reports.

A folder of photos is one sample; a folder whose sub-folders hold photos is one sample per
sub-folder (``SAMPLES/<sample id>/<photos>``); a CSV maps sample ids to photos. Each sample gets
``<output>/<sample id>/`` with ``annotated/*.png`` (written as each photo is counted),
``counts.json`` and ``report.md``; ``<output>/samples.csv`` has one row per sample. With one
sample the files go straight into ``<output>``. Every file is written whole or not at all; with
``resume`` the samples and photos an interrupted run finished (unchanged since, by SHA-256) are kept.

``evaluate`` compares the counts with the labels beside the photos (VOC ``../Annotations/*.xml``
or YOLO ``../labels/*.txt``), per source (TXL-PBC's ``sources.csv``) and over all: count
accuracy (1 - |counted - labelled| / labelled, the published metric), per-image MAPE, exact
counts and AP@0.5 (pycocotools; VOC all-point AP beside it). Every visible cell counts, cells
cut by the photo's border included, in the counts and in the labels alike.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bloodcell.data.boxes import SMEAR_LABELS
from bloodcell.data.images import scan_folder
from bloodcell.data.smears import labels_beside
from bloodcell.data.tables import read_csv
from bloodcell.errors import ConfigError, DataError, OutputError
from bloodcell.data.inputs import Inputs, collect_inputs, input_sha256
from bloodcell.inference.predictor import DEFAULT_REFER_BELOW
from bloodcell.metrics.detection import coco_ap50, evaluate_counts
from bloodcell.outputs import check_output_folder
from bloodcell.smear.counting import BORDER_NOTE, count_image, count_photos
from bloodcell.smear.differential import differential, write_report
from bloodcell.smear.documents import MAX_JSON_BYTES, parse_json, read_text
from bloodcell.smear.lab_check import lab_check_text
from bloodcell.smear.schema import CountError, PhotoCount, SampleResult, SampleTotals
from bloodcell.smear.review import sample_folder_name
from bloodcell.smear.sample_id import sample_id_problem
from bloodcell.smear.typing import typing_summary
from bloodcell.store.components import classifier_used, detector_used
from bloodcell.store.database import Store
from bloodcell.store.samples import check_new, kept_already, record_count
from bloodcell.writing import atomic_file, name_text, output_name, save_image, write_failed, write_text

SAMPLES_CSV = "samples.csv"
COUNTS = "counts.json"
#: Photos counted so far (one JSON line each), until counts.json is written: what ``--resume`` keeps of a sample.
PROGRESS = ".counts-progress.jsonl"


@dataclass
class Sample:
    """One sample: its id and photos (and the folder problems found while collecting them)."""

    sample_id: str
    photos: list[Path]
    problems: list[tuple[str, str]] = field(default_factory=list)


def samples_from_folders(paths: Sequence[str | Path]) -> list[Sample]:
    """One sample per sub-folder of a single folder that holds no photos itself; else one sample of everything,
    named after that single folder (``sample`` for files or several paths)."""
    sample_id = "sample"
    if len(paths) == 1 and Path(paths[0]).is_dir():
        samples = _sample_folders(Path(paths[0]))
        if samples:
            return [once_each(sample) for sample in samples]
        sample_id = name_text(Path(paths[0]).resolve().name) or sample_id
    inputs: Inputs = collect_inputs(paths)
    return [once_each(Sample(sample_id, inputs.paths, inputs.problems))]


def _sample_folders(root: Path) -> list[Sample]:
    """One sample per visible sub-folder of ``root``, or [] when ``root``'s own files include a photo.

    Other files beside the sample folders (a README) are passed over; entries there that cannot be used
    (a broken link) are reported with the first sample, and an empty sample folder is reported as its own.
    """
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    scan = scan_folder(root)
    if not subfolders or any(p.parent == root for p in scan.images):
        return []
    samples = []
    for folder in subfolders:
        inputs = Inputs()
        inputs.add_folder(folder)
        empty = [] if inputs.paths or inputs.problems else [(str(folder), "no photos in this sample folder")]
        samples.append(Sample(name_text(folder.name), inputs.paths, inputs.problems + empty))
    samples[0].problems[:0] = [(path, reason) for path, reason in scan.problems if Path(path).parent == root]
    return samples


def samples_from_csv(path: str | Path) -> list[Sample]:
    """Samples of a ``sample_id,photo`` CSV (photo paths relative to the CSV's folder)."""
    path = Path(path)
    _, rows = read_csv(path, "samples file", ("sample_id", "photo"))
    samples: dict[str, Sample] = {}
    for line, row in enumerate(rows, start=2):
        sample_id, photo = (row.get("sample_id") or "").strip(), (row.get("photo") or "").strip()
        if not sample_id or not photo:
            raise DataError(f"{path} line {line}: empty sample_id or photo")
        if problem := sample_id_problem(sample_id):
            raise DataError(f"{path} line {line}: {problem}")
        samples.setdefault(sample_id, Sample(sample_id, [])).photos.append(path.parent / photo)
    return [once_each(sample) for sample in samples.values()]


def once_each(sample: Sample) -> Sample:
    """``sample`` with each photo once: a file listed again, or a copy of one listed before (identical bytes), would
    count its cells twice; the repeats are left out and reported."""
    photos, seen = [], {}
    problems = list(sample.problems)
    for photo in sample.photos:
        key = input_sha256(photo) or str(Path(photo).resolve())  # an unreadable file is reported by the counting loop
        if key in seen:
            problems.append((str(photo), f"the same photo as {seen[key]} (identical bytes): counted once"))
            continue
        seen[key] = name_text(str(photo))
        photos.append(photo)
    return Sample(sample.sample_id, photos, problems)


def count_sample(sample: Sample, out: Path, classifier, *, detector: str, refer_below: float | None,
                 cell_size_px: float | None, typing_unavailable: str | None, resume: bool = False,
                 tta: bool = False, made_with: str | None = None,
                 logged: dict[str, PhotoCount] | None = None) -> SampleResult:
    """Count one sample's photos into ``out`` (annotated PNGs written photo by photo) with the one counting loop;
    writes counts.json and report.md and returns the counted sample.

    Photo paths are written as text (:func:`~bloodcell.writing.name_text`) with each photo's SHA-256. Each
    counted photo is also logged to :data:`PROGRESS` until counts.json is written; with ``resume`` the photos
    logged by an interrupted run (unchanged, annotated PNG present) are kept, not counted again, when that run
    counted them the same way (``made_with``, :func:`how_counted`; ConfigError otherwise); ``logged``: those photos,
    when the caller has read them already."""
    (out / "annotated").mkdir(parents=True, exist_ok=True)
    kept = logged if logged is not None else _logged_photos(out, sample, made_with) if resume else {}
    used = {Path(photo.annotated_png or "").name for photo in kept.values()}
    files = {name_text(str(photo)): photo for photo in sample.photos}
    with _progress_log(out, keep=resume) as log:
        def save(_index: int, photo: PhotoCount, _image) -> None:
            photo.sha256 = input_sha256(files[photo.path])
            name = output_name(files[photo.path].stem, ".png", used)
            save_image(photo.annotated, out / "annotated" / name)
            photo.annotated, photo.annotated_png = None, f"annotated/{name}"
            log({**photo.entry(), "made_with": made_with})

        result = count_photos(sample.photos, partial(count_image, classifier=classifier, detector=detector,
                                                     refer_below=refer_below, cell_size_px=cell_size_px, tta=tta),
                              sample_id=sample.sample_id, names=[name_text(str(p)) for p in sample.photos], kept=kept,
                              on_photo=save,
                              typing=typing_summary(classifier) if classifier is not None else None,
                              typing_unavailable=typing_unavailable, progress=f"counting {sample.sample_id}")
    result.errors[:0] = [CountError(path=name_text(p), error=reason) for p, reason in sample.problems]
    doc = result.document()
    write_report(doc, out / "report.md", sample.sample_id)
    recorded = {**doc, "made_with": made_with} if made_with else doc
    write_text(out / COUNTS, json.dumps(recorded, indent=2) + "\n")  # last: it marks the sample done
    (out / PROGRESS).unlink(missing_ok=True)
    return result


@contextmanager
def _progress_log(out: Path, keep: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function appending one counted photo's entry (a JSON line) to ``out``/:data:`PROGRESS`, flushed at once."""
    path = out / PROGRESS
    try:
        with path.open("a" if keep else "w", encoding="utf-8") as handle:
            def log(entry: dict[str, Any]) -> None:
                handle.write(json.dumps(entry) + "\n")
                handle.flush()

            yield log
    except OSError as exc:
        raise write_failed(path, exc, "the annotated photos finished are kept") from None


def how_counted(classifier, detector: str, refer_below: float | None, cell_size_px: float | None, tta: bool) -> str:
    """How a run counts: the white-cell classifier and detector files (name, SHA-256) and the options that change a
    count, so that a resumed run keeps only what was counted the same way."""
    typer_name, typer_sha = classifier_used(classifier) if classifier is not None else (None, None)
    finder, finder_sha = detector_used(detector)
    return (f"classifier {typer_name} sha256:{(typer_sha or '')[:16]} engine={getattr(classifier, 'engine', None)}, "
            f"detector {finder} sha256:{(finder_sha or '')[:16]}, "
            f"refer_below={refer_below} cell_size_px={cell_size_px} tta={tta}")


def _check_made_with(recorded: Any, made_with: str | None, where: Path) -> None:
    """ConfigError when an earlier run's ``recorded`` way of counting is not this run's."""
    if made_with is not None and recorded != made_with:
        earlier = recorded if isinstance(recorded, str) else "a classifier and options it does not record"
        raise ConfigError(f"--resume: {name_text(str(where))} was counted with {earlier}, not {made_with}; rerun "
                          "with that model and those options, or without --resume to start over")


def _logged_photos(out: Path, sample: Sample, made_with: str | None = None) -> dict[str, PhotoCount]:
    """The entries an interrupted run logged for photos of ``sample`` unchanged since (by SHA-256) whose annotated
    PNG is there, by path; a line cut short by a crash is left out (ConfigError: counted another way)."""
    try:
        lines = (out / PROGRESS).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    wanted = {name_text(str(photo)): photo for photo in sample.photos}
    kept = {}
    for line in lines:
        try:
            raw = parse_json(line, str(out / PROGRESS))
            entry = PhotoCount.model_validate(raw)
        except (DataError, ValidationError):
            continue
        if entry.path not in wanted:
            continue
        annotated = entry.annotated_png or ""
        if (annotated.startswith("annotated/") and "/" not in annotated[10:] and (out / annotated).is_file()
                and entry.sha256 == input_sha256(wanted[entry.path])):
            _check_made_with(raw.get("made_with"), made_with, out)  # only what would be kept is refused
            kept[entry.path] = entry
    return kept


def counted_before(sample: Sample, out: Path, made_with: str | None = None) -> SampleResult | None:
    """The counted sample an earlier run finished in ``out`` (its counts.json, validated) for exactly this sample's
    photos, unchanged since (by SHA-256); None when there is none or it differs; ConfigError when it was counted
    another way (``made_with``)."""
    try:
        raw = parse_json(read_text(out / COUNTS, "counts", MAX_JSON_BYTES), str(out / COUNTS))
        result = SampleResult.model_validate(raw)
    except (DataError, ValidationError):
        return None
    hashes = {photo.path: photo.sha256 for photo in result.images}
    wanted = {name_text(str(photo)): photo for photo in sample.photos}
    failed = {error.path for error in result.errors}
    if set(hashes) | failed != set(wanted) | {name_text(p) for p, _ in sample.problems}:
        return None
    if any(hashes[name] != input_sha256(wanted[name]) for name in hashes if name in wanted):
        return None
    _check_made_with(raw.get("made_with"), made_with, out)  # the same photos: keeping them needs the same way
    return result


def sample_row(result: SampleResult) -> dict[str, Any]:
    """The samples.csv row of one counted sample."""
    sample = result.sample
    diff = differential(sample.wbc_types)
    row = {"sample_id": result.sample_id, "photos": sample.images, "skipped": len(result.errors),
           **{f"count_{k}": v for k, v in sample.counts.items()},
           "wbc_classified": sample.wbc_classified, "wbc_referred": sample.wbc_referred,
           "differential": "; ".join(f"{k} {v:.1f}%" for k, v in diff["percent"].items()),
           "flags": "; ".join(f"{k} {v}" for k, v in diff["flags"].items()),
           "trust": _trust(sample),
           "lab_check": lab_check_text(None if sample.lab_check is None else sample.lab_check.model_dump())}
    return row


def _trust(sample: SampleTotals) -> str:
    accuracy = sample.wbc_typing.held_out_accuracy if sample.wbc_typing is not None else None
    parts = [f"{sample.wbc_classified} white cells typed"]
    adapted = sample.wbc_typing.adapted_cv_accuracy if sample.wbc_typing is not None else None
    if accuracy is not None:
        parts.append(f"typing right on {accuracy:.0%} of another lab's held-out cells")
    elif adapted is not None:
        parts.append(f"adapted to {sample.wbc_typing.adapted_to or 'this lab'}: typing right on {adapted:.0%} of its "
                     "reviewed cells in cross-validation")
    if sample.wbc_typing is not None and sample.wbc_typing.adapted_at_risk:
        parts.append(f"may miss {' or '.join(sample.wbc_typing.adapted_at_risk)} where present (adapted without any)")
    if sample.wbc_classified < 100:
        parts.append("under 100 cells: percentages imprecise")
    if sample.wbc_typing_unavailable:
        parts = [f"white cells not typed: {sample.wbc_typing_unavailable}"]
    return "; ".join(parts)


def write_samples_csv(rows: list[dict[str, Any]], out: Path) -> Path:
    path = out / SAMPLES_CSV
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_file(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def sample_folder_names(samples: list[Sample]) -> dict[str, str]:
    """Each sample's output folder name (its id made safe for a file name); DataError when two ids would share one."""
    names: dict[str, str] = {}
    for sample in samples:
        name = sample_folder_name(sample.sample_id)
        clash = next((other for other, taken in names.items() if taken == name), None)
        if clash is not None:
            raise DataError(f"the sample ids {clash!r} and {sample.sample_id!r} would share the output folder "
                            f"{name!r}: rename one")
        names[sample.sample_id] = name
    return names


class CountInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`count_samples`: ``finished`` of ``total`` samples are written."""

    def __init__(self, finished: int, total: int):
        super().__init__(f"{finished} of {total} samples finished")
        self.finished, self.total = finished, total


def count_samples(samples: list[Sample], output: str | Path, classifier=None, *, detector: str = "learned",
                  refer_below: float | None = DEFAULT_REFER_BELOW, cell_size_px: float | None = None,
                  typing_unavailable: str | None = None, resume: bool = False, store: Store | None = None,
                  actor: str = "", tta: bool = False) -> list[dict[str, Any]]:
    """Count every sample into ``output`` (a sub-folder per sample when there are several) and write samples.csv;
    returns each sample's counts.json document;
    with ``store``, also keep each sample there (recorded by ``actor``; sample ids already kept are refused first).

    With ``resume``, a sample whose counts.json an earlier run finished for the same photos (unchanged, by
    SHA-256) is kept, not counted again (and kept in ``store`` if it is not there yet). A write that fails raises
    OutputError saying how many samples are finished; Ctrl-C raises :class:`CountInterrupted`. ``tta`` types the
    white cells over the 8 dihedral views."""
    folders = sample_folder_names(samples)
    output = check_output_folder(output, "counts")
    folder_of = {sample.sample_id: output / folders[sample.sample_id] if len(samples) > 1 else output
                 for sample in samples}
    way = how_counted(classifier, detector, refer_below, cell_size_px, tta)
    before = {sample.sample_id: result for sample in samples
              if resume and (result := counted_before(sample, folder_of[sample.sample_id], way)) is not None}
    # photos logged by an interrupted run, read once; logged another way, they are refused before anything is counted
    logged = {sample.sample_id: _logged_photos(folder_of[sample.sample_id], sample, way) for sample in samples
              if resume and sample.sample_id not in before}
    kept: set[str] = set()
    if store is not None:
        with store.session() as session:
            kept = kept_already(session, list(before))  # finished and kept by the interrupted run
            check_new(session, [sample.sample_id for sample in samples if sample.sample_id not in kept])
    docs, rows = [], []
    for sample in samples:
        folder = folder_of[sample.sample_id]
        started = time.perf_counter()
        try:
            result = before.get(sample.sample_id) or count_sample(
                sample, folder, classifier, detector=detector, refer_below=refer_below, cell_size_px=cell_size_px,
                typing_unavailable=typing_unavailable, resume=resume, tta=tta, made_with=way,
                logged=logged.get(sample.sample_id))
            rows.append(sample_row(result))
            write_samples_csv(rows, output)  # after each sample, so finished samples survive a later failure
        except OutputError as exc:
            raise OutputError(f"{exc}; {len(docs)} of {len(samples)} samples were finished before (rerun the same "
                              "command with --resume to do the rest)") from None
        except KeyboardInterrupt:
            raise CountInterrupted(len(docs), len(samples)) from None
        if store is not None and sample.sample_id not in kept:
            seconds = None if sample.sample_id in before else time.perf_counter() - started
            with store.session() as session:
                record_count(session, store.photos, result, actor, classifier=classifier_used(classifier),
                             detector=detector_used(detector), seconds=seconds)
        docs.append(result.document())
    return docs


def _no_labels(photos: int) -> str:
    return (f"no labels found for the {photos} photos (VOC ../Annotations/<stem>.xml or YOLO ../labels/<stem>.txt "
            "beside the images folder, or pass --labels DIR)")


def check_labelled(samples: list[Sample], labels_folder: Path | None = None) -> None:
    """DataError, before anything is counted, when no photo of ``samples`` has labels to evaluate against."""
    photos = [photo for sample in samples for photo in sample.photos]
    if not any(labels_beside(Path(photo), labels_folder) is not None for photo in photos):
        raise DataError(_no_labels(len(photos)))


def evaluate_against_labels(entries: list[dict[str, Any]], labels_folder: Path | None = None) -> dict[str, Any]:
    """Counting and detection figures against the labels beside each photo, per source and over all."""
    groups: dict[str, tuple[list, list]] = {}
    missing = []
    for entry in entries:
        found = labels_beside(Path(entry["path"]), labels_folder)
        if found is None:
            missing.append(entry["path"])
            continue
        annotation, source = found
        truth = [(b.label, b.x1, b.y1, b.x2, b.y2) for b in annotation.boxes if b.label in SMEAR_LABELS]
        for key in {source, "all"}:
            groups.setdefault(key, ([], []))[0].append(entry)
            groups[key][1].append(truth)
    if not groups:
        raise DataError(_no_labels(len(entries)))
    result: dict[str, Any] = {"border_cells": BORDER_NOTE, "unlabelled_photos": missing, "sources": {}}
    for source, (group_entries, truths) in sorted(groups.items()):
        figures = evaluate_counts(group_entries, truths, SMEAR_LABELS)
        for label, ap in coco_ap50(group_entries, truths, SMEAR_LABELS).items():
            figures[label]["ap50"] = ap
        result["sources"][source] = figures
    return result

