"""One registry of the datasets bloodcell knows (in the spirit of MedMNIST's ``INFO``).

Each entry names where the data comes from (URLs, checksums where published), what a
complete copy holds (class names and official counts), its layout, license and citation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bloodcell.errors import DataError

PBC_CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)

PBC_CITATION = (
    "Acevedo A, Merino A, Alférez S, Molina Á, Boldú L, Rodellar J. A dataset of microscopic "
    "peripheral blood cell images for development of automatic recognition systems. "
    "Data in Brief 30 (2020) 105474. Mendeley Data doi:10.17632/snkd93bnjr.1"
)


@dataclass(frozen=True)
class DownloadFile:
    """One file to download: ``checksum`` is ``"md5:<hex>"``/``"sha256:<hex>"`` or None when unknown."""

    url: str
    filename: str
    checksum: str | None = None
    extract: bool = False
    variant: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry. ``layout`` is one of ``classes`` (root/<class>/<image>), ``voc``, ``yolo`` or ``npz``."""

    name: str
    description: str
    layout: str
    class_names: tuple[str, ...] = ()
    expected_counts: dict[str, int] = field(default_factory=dict)
    files: tuple[DownloadFile, ...] = ()
    homepage: str = ""
    license: str = ""
    citation: str = ""
    folder_names: tuple[str, ...] = ()
    local_only: bool = False

    @property
    def expected_total(self) -> int | None:
        return sum(self.expected_counts.values()) if self.expected_counts else None


_MEDMNIST_MD5 = {
    "28": "7053d0359d879ad8a5505303e11de1dc",
    "64": "2b94928a2ae4916078ca51e05b6b800b",
    "128": "adace1e0ed228fccda1f39692059dd4c",
    "224": "b718ff6835fcbdb22ba9eacccd7b2601",
}


def _bloodmnist_files() -> tuple[DownloadFile, ...]:
    files = []
    for size, md5 in _MEDMNIST_MD5.items():
        filename = "bloodmnist.npz" if size == "28" else f"bloodmnist_{size}.npz"
        url = f"https://zenodo.org/records/10519652/files/{filename}?download=1"
        files.append(DownloadFile(url, filename, f"md5:{md5}", extract=False, variant=size))
    return tuple(files)


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="pbc",
            description="PBC dataset normal DIB: 17,092 single peripheral blood cells (CellaVision DM96, "
            "Hospital Clinic of Barcelona) in 8 classes; file-name prefixes carry finer labels.",
            layout="classes",
            class_names=PBC_CLASSES,
            expected_counts={
                "basophil": 1218,
                "eosinophil": 3117,
                "erythroblast": 1551,
                "ig": 2895,
                "lymphocyte": 1214,
                "monocyte": 1420,
                "neutrophil": 3329,
                "platelet": 2348,
            },
            files=(
                DownloadFile(
                    "https://data.mendeley.com/api/datasets/snkd93bnjr/versions/1/download",
                    "snkd93bnjr-1.zip",
                    None,
                    extract=True,
                ),
            ),
            homepage="https://data.mendeley.com/datasets/snkd93bnjr/1",
            license="CC BY 4.0",
            citation=PBC_CITATION,
            folder_names=("pbc", "PBC_dataset_normal_DIB", "PBC_dataset_normal_DIB/PBC_dataset_normal_DIB"),
        ),
        DatasetInfo(
            name="pbc-originals-sample",
            description="12 untouched original PBC images per class (local sample; no download).",
            layout="classes",
            class_names=PBC_CLASSES,
            expected_counts={name: 12 for name in PBC_CLASSES},
            homepage="https://data.mendeley.com/datasets/snkd93bnjr/1",
            license="CC BY 4.0",
            citation=PBC_CITATION,
            folder_names=("pbc_originals_sample", "pbc-originals-sample"),
            local_only=True,
        ),
        DatasetInfo(
            name="cbc",
            description="Complete Blood Count dataset: 640x480 smear photos with VOC XML boxes "
            "(RBC, WBC, Platelets); Training/ and Validation/ (Validation is a subset of Training).",
            layout="voc",
            class_names=("RBC", "WBC", "Platelets"),
            expected_counts={"Training": 300, "Validation": 60},
            files=(
                DownloadFile(
                    "https://github.com/MahmudulAlam/Complete-Blood-Cell-Count-Dataset/archive/refs/heads/master.zip",
                    "Complete-Blood-Cell-Count-Dataset-master.zip",
                    None,
                    extract=True,
                ),
            ),
            homepage="https://github.com/MahmudulAlam/Complete-Blood-Cell-Count-Dataset",
            license="MIT",
            citation="Alam MM, Islam MT. Machine learning approach of automatic identification and counting "
            "of blood cells. Healthcare Technology Letters 6(4) (2019) 103-108.",
            folder_names=("cbc", "Complete-Blood-Cell-Count-Dataset-master", "Complete-Blood-Cell-Count-Dataset"),
        ),
        DatasetInfo(
            name="bccd",
            description="BCCD: the uncleaned source of CBC, 640x480 smears with VOC XML boxes (JPEGImages/, "
            "Annotations/; optional wbc_labels.csv with the main white-cell type per smear).",
            layout="voc",
            class_names=("RBC", "WBC", "Platelets"),
            expected_counts={"JPEGImages": 364},
            files=(
                DownloadFile(
                    "https://github.com/Shenggan/BCCD_Dataset/archive/refs/heads/master.zip",
                    "BCCD_Dataset-master.zip",
                    None,
                    extract=True,
                ),
            ),
            homepage="https://github.com/Shenggan/BCCD_Dataset",
            license="MIT",
            citation="Shenggan. BCCD Dataset: a small-scale dataset for blood cells detection. "
            "https://github.com/Shenggan/BCCD_Dataset",
            folder_names=("bccd", "BCCD_Dataset-master/BCCD", "BCCD_Dataset/BCCD", "BCCD"),
        ),
        DatasetInfo(
            name="txl",
            description="TXL-PBC: smear fields from four sources (BCCD 640x480, PBC 360x363, Raabin-WBC 575x575, "
            "Kaggle BCD 416x416) with complete YOLO boxes (WBC, RBC, Platelet); train/ and val/ subsets, "
            "sources.csv names each field's source.",
            layout="yolo",
            class_names=("RBC", "WBC", "Platelets"),
            expected_counts={"train": 889, "val": 247},
            homepage="https://github.com/lugan113/TXL-PBC_Dataset",
            license="MIT",
            citation="Gan L. et al. TXL-PBC: a freely accessible labeled peripheral blood cell dataset. "
            "Scientific Data (2025). https://github.com/lugan113/TXL-PBC_Dataset",
            folder_names=("txl", "TXL-PBC", "TXL-PBC_Dataset", "TXL_PBC"),
            local_only=True,
        ),
        DatasetInfo(
            name="folder",
            description="Any root/<class>/<image> tree (optionally root/TRAIN|TEST/<class>/<image>), e.g. "
            "Kaggle 'Blood Cell Images' or BCCD-WBC sets; pass its folder with --data-root.",
            layout="classes",
            license="as published by the source",
            local_only=True,
        ),
        DatasetInfo(
            name="bloodmnist",
            description="MedMNIST BloodMNIST: PBC images centre-cropped and resized to 28/64/128/224 px, "
            "official train/val/test split in .npz files; labels map to the PBC classes in order.",
            layout="npz",
            class_names=PBC_CLASSES,
            expected_counts={"train": 11959, "val": 1712, "test": 3421},
            files=_bloodmnist_files(),
            homepage="https://medmnist.com/",
            license="CC BY 4.0",
            citation="Yang J, Shi R, Wei D, et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D "
            "and 3D biomedical image classification. Scientific Data 10, 41 (2023). " + PBC_CITATION,
            folder_names=("bloodmnist", "medmnist", "."),
        ),
    )
}


def get_dataset(name: str) -> DatasetInfo:
    """Return the registry entry for ``name`` (case-insensitive; ``_`` and ``-`` are equivalent)."""
    key = name.strip().lower().replace("_", "-")
    if key in REGISTRY:
        return REGISTRY[key]
    raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(REGISTRY))}")


def list_datasets() -> list[DatasetInfo]:
    """All registry entries, sorted by name."""
    return [REGISTRY[name] for name in sorted(REGISTRY)]
