"""A lab's cell bank on disk: the reviewed cells of every sample of a lab, gathered in one ``bloodcell adapt`` folder.

``bloodcell review apply ... --bank BANK`` adds a reviewed sample's ``cells/<type>/`` to ``BANK/<type>/``
(a file already there is never overwritten: a name taken gets ``_2``, ``_3``...), and says how many more
reviewed cells of each type the bank needs before ``bloodcell adapt BANK`` (:data:`WANTED` per type). A lab with a
sample store has its bank there, without a folder (:mod:`bloodcell.store.cell_bank`); both count towards :data:`~bloodcell.smear.review.WANTED`.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from bloodcell.data.images import class_folder_images, class_folders, image_files
from bloodcell.errors import OutputError
from bloodcell.smear.review import WANTED, still_needed
from bloodcell.writing import output_name, write_failed

__all__ = ["WANTED", "add_to_bank", "bank_counts", "still_needed"]


def add_to_bank(cells: Path, bank: Path) -> dict[str, int]:
    """Copy the reviewed cells ``cells/<type>/<images>`` into ``bank/<type>/``; returns the bank's cells per type."""
    if bank.exists() and not bank.is_dir():
        raise OutputError(f"{bank}: is a file, not a cell bank folder")
    for folder in class_folders(cells) if cells.is_dir() else []:
        target = bank / folder.name
        try:
            target.mkdir(parents=True, exist_ok=True)
            used = {p.name for p in target.iterdir()}
            for image in image_files(folder):
                shutil.copyfile(image, target / output_name(image.stem, image.suffix, used))
        except OSError as exc:
            raise write_failed(target, exc, "the cells copied before it are in the bank") from None
    return bank_counts(bank)


def bank_counts(bank: Path) -> dict[str, int]:
    """Reviewed cells per type in ``bank`` (types with none left out)."""
    if not bank.is_dir():
        return {}
    return dict(Counter(cell_type for _, cell_type in class_folder_images(bank)))

