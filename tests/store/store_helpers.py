"""Store test data: a small photo and a counts.json document of one photo (shared by the store and service tests)."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import create_engine, text

from bloodcell.smear.schema import SampleResult

POSTGRES_ENV = "BLOODCELL_TEST_POSTGRES_URL"
PASSWORDS = {"ada": "admin-password-1", "sam": "supervisor-pass-1", "tia": "technician-pass-1"}


def photo_bytes(shade: int = 0) -> bytes:
    image = Image.new("RGB", (128, 96), (200, 202, 205 - shade))
    ImageDraw.Draw(image).ellipse([40, 30, 80, 70], fill=(110, 70, 190))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def counted_doc(folder, sample_id: str = "S-001", types: dict[str, int] | None = None,
                unfamiliar: bool = False) -> SampleResult:
    """A counted sample (read from its counts.json document) of one photo: two red cells, white cells of ``types``
    (one referred; with ``unfamiliar`` each found by the lab check unlike every lab the classifier learned from), one
    platelet."""
    types = types if types is not None else {"neutrophil": 3, "lymphocyte": 1}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{abs(hash(sample_id)) % 10**8}.png"
    path.write_bytes(photo_bytes(len(sample_id) % 50))
    boxes = [{"label": "RBC", "score": 0.9, "x1": 1.0, "y1": 1.0, "x2": 9.0, "y2": 9.0},
             {"label": "RBC", "score": 0.8, "x1": 11.0, "y1": 1.0, "x2": 19.0, "y2": 9.0, "count": 2},
             {"label": "Platelets", "score": 0.7, "x1": 30.0, "y1": 1.0, "x2": 33.0, "y2": 4.0}]
    x = 40.0
    for name, n in types.items():
        for _ in range(n):
            boxes.append({"label": "WBC", "score": 0.95, "x1": x, "y1": 20.0, "x2": x + 10, "y2": 30.0,
                          "wbc_type": name, "confidence": 0.9, **({"unfamiliar_lab": True} if unfamiliar else {})})
            x += 12
    referred = []
    if len(boxes) > 3:
        boxes[3].update(confidence=0.4, referred=True)
        referred.append({**boxes[3], "reason": "confidence 0.40 below 0.60"})
    wbc = sum(types.values())
    return SampleResult.model_validate({"sample_id": sample_id, "images": [{"path": str(path), "boxes": boxes, "referred": referred,
                                                "counts": {"RBC": 3, "WBC": wbc, "Platelets": 1},
                                                "wbc_types": types}],
            "sample": {"images": 1, "counts": {"RBC": 3, "WBC": wbc, "Platelets": 1}, "wbc_types": types,
                       "wbc_classified": wbc, "wbc_referred": len(referred)},
            "errors": []})


def confirm_referred(session, sample_id: str, person) -> None:
    """``person`` confirms every referred or doubtful cell of the sample (so its review can be finished)."""
    from bloodcell.store.samples import decide, find, undecided

    for cell in undecided(session, find(session, sample_id)):
        decide(session, sample_id, cell.id, "confirm", person)


def reset_postgres(url: str) -> None:
    """An empty public schema (the test role owns the test database)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
        connection.execute(text("DROP FUNCTION IF EXISTS bloodcell_audit_append_only() CASCADE"))
    engine.dispose()


def bank_doc(folder, sample_id: str, cells: list[tuple[str, tuple[int, int, int]]], seed: int = 0) -> SampleResult:
    """A counted sample of one photo whose white cells are 20-px squares of the given colours on a grey slide,
    each called (by the counter) as the given type: a sample whose cells a reviewer then confirms or corrects."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    width = 30 * len(cells) + 10
    array = np.full((40, width, 3), 205, np.int16) + rng.integers(-6, 7, (40, width, 3))
    boxes, types = [], {}
    for k, (name, colour) in enumerate(cells):
        x = 10 + 30 * k
        array[10:30, x:x + 20] = np.array(colour) + rng.integers(-15, 16, (20, 20, 3))
        boxes.append({"label": "WBC", "score": 0.9, "x1": float(x), "y1": 10.0, "x2": float(x + 20), "y2": 30.0,
                      "wbc_type": name, "confidence": 0.9})
        types[name] = types.get(name, 0) + 1
    path = folder / f"{sample_id}.png"
    Image.fromarray(np.clip(array, 0, 255).astype("uint8")).save(path)
    counts = {"RBC": 0, "WBC": len(cells), "Platelets": 0}
    return SampleResult.model_validate({
        "sample_id": sample_id, "errors": [],
        "images": [{"path": str(path), "boxes": boxes, "referred": [], "counts": counts, "wbc_types": types}],
        "sample": {"images": 1, "counts": counts, "wbc_types": types, "wbc_classified": len(cells), "wbc_referred": 0}})


def store_location(kind: str, tmp_path, monkeypatch, sqlite_name: str = "lab.sqlite") -> str:
    """Where a test's fresh store goes: an SQLite file under ``tmp_path``, or, for ``kind`` "postgresql", the test
    PostgreSQL emptied first (the test is skipped when none is configured); the photos go under ``tmp_path``."""
    monkeypatch.setenv("BLOODCELL_PHOTOS", str(tmp_path / "pg-photos"))
    if kind != "postgresql":
        return str(tmp_path / sqlite_name)
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (scripts/postgres-test.sh prints one)")
    reset_postgres(url)
    return url
