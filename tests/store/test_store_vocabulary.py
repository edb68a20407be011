"""The store reads cell classes through the one vocabulary: a relabel to ``PLT`` makes the box a platelet (not a
white cell typed "PLT"), and ``Lymphocytes`` is the classifier's lymphocyte."""

from __future__ import annotations

from store_helpers import counted_doc

from bloodcell.store.samples import add_cell, decide, find, record_count, tallies

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "platelet", "RBC", "WBC", "Platelets"]


def _wbc(store, folder):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(folder), "tia")
        return [c.id for c in find(session, "S-001").cells if c.label == "WBC"]


def test_a_relabel_to_plt_moves_the_box_to_the_platelets(store, people, tmp_path):
    first, second = _wbc(store, tmp_path / "in")[:2]
    with store.session() as session:
        decide(session, "S-001", first, "relabel", people["tia"], cell_class="PLT", classes=CLASSES)
        decide(session, "S-001", second, "relabel", people["tia"], cell_class="Lymphocytes", classes=CLASSES)
        add_cell(session, "S-001", 0, (50, 50, 54, 54), "wbc", people["tia"], cell_class="platelet", classes=CLASSES)
    with store.session() as session:
        counts, types = tallies(find(session, "S-001"))
    assert counts == {"RBC": 3, "WBC": 3, "Platelets": 3}
    assert types == {"lymphocyte": 2, "neutrophil": 1} and "PLT" not in types and "platelet" not in types
