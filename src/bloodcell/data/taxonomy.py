"""Label taxonomies: ``pbc8`` (the class folders) and ``pbc11`` (finer labels from file prefixes).

In ``pbc11`` neutrophils split into band/segmented and immature granulocytes into
promyelocyte/myelocyte/metamyelocyte. Files whose prefix leaves the fine label unspecified
(``IG_...`` and ``NEUTROPHIL_...``) keep the fine label ``"ig"``/``"neutrophil"`` in the
manifest and get label None under ``pbc11``: they are excluded from pbc11 training and
evaluation, and the number excluded is reported (``ManifestDataset.unlabelled``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bloodcell.data.registry import PBC_CLASSES
from bloodcell.errors import ConfigError

#: File-name prefix -> fine label, for PBC file names such as ``SNE_12345.jpg``.
PBC_PREFIXES = {
    "BA": "basophil",
    "EO": "eosinophil",
    "ERB": "erythroblast",
    "LY": "lymphocyte",
    "MO": "monocyte",
    "PLATELET": "platelet",
    "SNE": "segmented_neutrophil",
    "BNE": "band_neutrophil",
    "NEUTROPHIL": "neutrophil",
    "PMY": "promyelocyte",
    "MY": "myelocyte",
    "MMY": "metamyelocyte",
    "IG": "ig",
}

PBC11_CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "promyelocyte",
    "myelocyte",
    "metamyelocyte",
    "lymphocyte",
    "monocyte",
    "band_neutrophil",
    "segmented_neutrophil",
    "platelet",
)

class LabelledRow(Protocol):
    label: str
    fine_label: str


def pbc_fine_label(filename: str, folder_label: str) -> str:
    """Fine label from a PBC file name's prefix; the folder label when the prefix is unknown."""
    prefix = filename.split("_", 1)[0].upper() if "_" in filename else ""
    return PBC_PREFIXES.get(prefix, folder_label)


@dataclass(frozen=True)
class Taxonomy:
    """A named class list; ``field`` says which manifest column gives the label."""

    name: str
    class_names: tuple[str, ...]
    field: str = "label"

    def label_of(self, row: LabelledRow) -> str | None:
        """The row's class under this taxonomy, or None when it has none (unspecified fine label)."""
        value = getattr(row, self.field)
        return value if value in self.class_names else None

    def index_of(self, row: LabelledRow) -> int | None:
        label = self.label_of(row)
        return None if label is None else self.class_names.index(label)


TAXONOMIES = {
    "pbc8": Taxonomy("pbc8", PBC_CLASSES, "label"),
    "pbc11": Taxonomy("pbc11", PBC11_CLASSES, "fine_label"),
}


def get_taxonomy(name: str | Taxonomy) -> Taxonomy:
    """``pbc8`` or ``pbc11`` (a ``Taxonomy`` passes through)."""
    if isinstance(name, Taxonomy):
        return name
    key = name.strip().lower()
    if key not in TAXONOMIES:
        raise ConfigError(f"unknown taxonomy {name!r}; choose one of {', '.join(TAXONOMIES)} (or 'labels')")
    return TAXONOMIES[key]


def labels_taxonomy(labels: Iterable[str]) -> Taxonomy:
    """A taxonomy made of the sorted distinct folder labels (for ``folder`` datasets)."""
    return Taxonomy("labels", tuple(sorted(set(labels))), "label")
