"""The robustness job: a classifier on a split's images and their perturbations, untouched originals,
and another lab's white cells (BCCD).

- **split**: a stratified subset of the manifest's test split (``split="val"`` scores validation,
  for choosing between candidates without touching test), clean and under each perturbation of
  :data:`~bloodcell.evaluation.perturbations.PERTURBATIONS`;
- **untouched originals**: a ``root/<class>/<image>`` folder (e.g. 360x363 PBC JPEGs); an
  original whose re-encoded copy sits in another split of the manifest (often training) is left
  out, so only originals of the scored split count, each labelled as its manifest row is;
- **cross-lab cells**: the main white cell of each held-out BCCD smear
  (:func:`~bloodcell.data.bccd.held_out_ids`: never used for fine-tuning or adaptation), framed by
  :func:`~bloodcell.framing.crop_around` at each context.

Labels follow the model's classes: pbc8's or pbc11's (a model with other classes is refused). BCCD's
types are pbc8 classes, so a pbc11 model is not scored on BCCD (``cross_lab_skipped`` says why).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bloodcell._version import __version__
from bloodcell.data.bccd import BCCD_TYPES
from bloodcell.data.items import folder_items, manifest_items
from bloodcell.data.manifest import Manifest, ManifestRow, read_manifest
from bloodcell.data.taxonomy import Taxonomy, get_taxonomy
from bloodcell.errors import ConfigError, DataError
from bloodcell.evaluation.perturbations import (
    PERTURBATIONS,
    decode_all,
    score_images,
    score_split,
)
from bloodcell.inference.predictor import Classifier, load
from bloodcell.log import get_logger
from bloodcell.provenance import file_sha256, git_commit, now
from bloodcell.weights import resolve
from bloodcell.workflows.cells import bccd_cells

logger = get_logger(__name__)


def _manifest_rows(paths: Sequence[Path], root: Path, manifest: Manifest) -> list[ManifestRow | None]:
    """The manifest row of each original (same ``<class>/<stem>``), None for those not in the manifest."""
    row_of = {str(Path(row.path).with_suffix("")): row for row in manifest.rows}
    return [row_of.get(str(path.relative_to(root).with_suffix(""))) for path in paths]


def originals_of_split(paths: Sequence[Path], root: Path, manifest, split: str) -> tuple[list[int], Counter]:
    """Indices of the originals whose ``<class>/<stem>`` is a row of ``split``, and the split of every original.

    Originals not in the manifest at all count under ``"not in manifest"``.
    """
    found = [row.split if row else "not in manifest" for row in _manifest_rows(paths, root, manifest)]
    return [i for i, name in enumerate(found) if name == split], Counter(found)


def model_taxonomy(class_names: Sequence[str]) -> Taxonomy:
    """The PBC taxonomy whose classes are the model's; ConfigError for a model with other classes."""
    for name in ("pbc8", "pbc11"):
        taxonomy = get_taxonomy(name)
        if set(class_names) == set(taxonomy.class_names):
            return taxonomy
    raise ConfigError(f"the model's classes ({', '.join(class_names)}) are neither pbc8's nor pbc11's; the "
                      "robustness job scores PBC's labels only")


def _originals(classifier: Classifier, originals: str | Path, manifest: str | Path, split: str, taxonomy: Taxonomy,
               batch_size: int) -> dict[str, Any]:
    folder = folder_items(originals)
    manifest_rows = read_manifest(manifest)
    in_split, splits = originals_of_split(folder.paths, folder.root, manifest_rows, split)
    rows = _manifest_rows(folder.paths, folder.root, manifest_rows)
    keep = [i for i in in_split if taxonomy.label_of(rows[i]) is not None]
    if not keep:
        raise DataError(f"{originals}: none of its images is a labelled original of the {split} split of {manifest}")
    images, labels, skipped = decode_all([folder.paths[i] for i in keep], [taxonomy.label_of(rows[i]) for i in keep])
    logger.info("originals: %d of the %d images in %s belong to the %s split (%d without a %s label)",
                len(in_split), len(folder.paths), originals, split, len(in_split) - len(keep), taxonomy.name)
    sizes = Counter(f"{im.width}x{im.height}" for im in images)
    return {"folder": Path(originals).name, "split_of_originals": dict(splits), "sizes": dict(sizes.most_common()),
            "unlabelled": len(in_split) - len(keep), "skipped": skipped,
            **score_images(classifier, images, labels, batch_size),
            "tta": score_images(classifier, images, labels, batch_size, tta=True)}


def run_robustness(checkpoint: str | Path, manifest: str | Path, *, limit: int | None = 800, split: str = "test",
                   data_root: str | Path | None = None, originals: str | Path | None = None,
                   bccd: bool = False, contexts: Sequence[float] = (1.3, 2.0),
                   batch_size: int = 32) -> dict[str, Any]:
    """Score ``checkpoint`` (bundled name or file) on the manifest's ``split`` (stratified ``limit`` subset)
    and its perturbations, an ``originals`` folder and, with ``bccd``, held-out BCCD cells at each context."""
    path = resolve(checkpoint)
    classifier = load(path)
    taxonomy = model_taxonomy(classifier.class_names)
    items = manifest_items(manifest, split, taxonomy.name, data_root, limit=limit)
    logger.info("%s split: %d images", split, len(items.paths))
    scored = score_split(classifier, items.paths, items.labels, PERTURBATIONS, batch_size)
    result: dict[str, Any] = {
        "checkpoint": path.name, "checkpoint_sha256": file_sha256(path),
        "model_name": classifier.model.model_name if classifier.model is not None else None,
        "class_names": classifier.class_names, "manifest": items.manifest.name,
        "manifest_sha256": items.manifest_sha256, "limit": limit, "git_commit": git_commit(),
        "bloodcell_version": __version__, "date": now(), "split": split,
        f"{split}_split": scored["sections"], f"{split}_skipped": [*items.skipped, *scored["skipped"]],
        "taxonomy": taxonomy.name,
        "originals": _originals(classifier, originals, manifest, split, taxonomy, batch_size) if originals else None,
        "cross_lab": None,
    }
    if bccd and not set(BCCD_TYPES) <= set(classifier.class_names):
        result["cross_lab_skipped"] = f"BCCD's types ({', '.join(BCCD_TYPES)}) are not all classes of the model"
        logger.warning("BCCD not scored: %s", result["cross_lab_skipped"])
    elif bccd:
        result["cross_lab"] = {}
        for context in contexts:
            cells = bccd_cells(data_root, "held_out", context)
            logger.info("BCCD crops of the held-out smears at %gx the box: %d cells", context, len(cells.images))
            result["cross_lab"][f"bccd_box_{context:g}x"] = {
                "context": context, "skipped": cells.skipped,
                **score_images(classifier, cells.images, cells.labels, batch_size)}
    return result
