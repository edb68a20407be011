"""One vocabulary of cell types: aliases in any case for the detector's classes and the white-cell types, used by
corrections CSVs, the store and the service; a platelet is never a white cell."""

from __future__ import annotations

import pytest

from bloodcell.data.boxes import canonical_label
from bloodcell.data.cell_types import cell_type, reviewer_classes, white_cell_types
from bloodcell.errors import DataError
from bloodcell.smear.review import apply_corrections, read_corrections, valid_labels

PBC8 = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


@pytest.mark.parametrize("name", ["platelet", "Platelets", "PLT", "plts", " thrombocytes ", "PLATELET"])
def test_every_spelling_of_a_platelet_is_the_detectors_platelets(name):
    assert cell_type(name, PBC8) == "Platelets"


@pytest.mark.parametrize("name, expected", [("rbc", "RBC"), ("red cell", "RBC"), ("Red_Blood_Cells", "RBC"),
                                            ("erythrocytes", "RBC"), ("white cell", "WBC"), ("WBCs", "WBC"),
                                            ("Neutrophils", "neutrophil"), ("LYMPHOCYTE", "lymphocyte"),
                                            ("eosinophil", "eosinophil"), ("IG", "ig")])
def test_aliases_in_any_case(name, expected):
    assert cell_type(name, PBC8) == expected


def test_unknown_names_are_none_and_the_annotation_reader_keeps_them():
    assert cell_type("blast", PBC8) is None and cell_type("", PBC8) is None
    assert canonical_label(" wbc") == "WBC" and canonical_label("platelet") == "Platelets"
    assert canonical_label("Other ") == "Other"


def test_the_reviewer_list_offers_each_class_once():
    assert white_cell_types(PBC8) == PBC8[:-1]
    labels = reviewer_classes(PBC8)
    assert labels == PBC8[:-1] + ["RBC", "WBC", "Platelets"] and valid_labels(PBC8) == labels
    assert sum(cell_type(label, PBC8) == "Platelets" for label in labels) == 1


def _doc():
    photo = {"path": "a.jpg", "width": 200, "height": 200,
             "boxes": [{"label": "WBC", "score": 0.9, "x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 50.0,
                        "wbc_type": "neutrophil", "confidence": 0.9}],
             "counts": {"RBC": 0, "WBC": 1, "Platelets": 0}, "wbc_types": {"neutrophil": 1}, "referred": []}
    return {"sample_id": "S", "images": [photo], "errors": [],
            "sample": {"images": 1, "counts": {"RBC": 0, "WBC": 1, "Platelets": 0}, "wbc_types": {"neutrophil": 1},
                       "wbc_classified": 1, "wbc_referred": 0}}


@pytest.mark.parametrize("label", ["platelet", "Platelets", "PLT"])
def test_a_missing_platelet_in_a_corrections_csv_becomes_a_platelet_not_a_white_cell(label):
    text = f"decision,label,photo,x1,y1,x2,y2\nmissing,{label},1,100,100,110,110\n"
    reviewed, decisions = apply_corrections(_doc(), read_corrections(text), PBC8)
    assert reviewed["sample"]["counts"] == {"RBC": 0, "WBC": 1, "Platelets": 1}
    assert reviewed["sample"]["wbc_types"] == {"neutrophil": 1}
    assert reviewed["images"][0]["boxes"][-1]["label"] == "Platelets" and decisions[0].label == "Platelets"


def test_a_relabel_to_red_cell_and_lymphocytes_in_other_spellings():
    text = "item,decision,label\n1-1,relabel,Lymphocytes\n"
    reviewed, _ = apply_corrections(_doc(), read_corrections(text), PBC8)
    assert reviewed["sample"]["wbc_types"] == {"lymphocyte": 1}
    reviewed, _ = apply_corrections(_doc(), read_corrections("item,decision,label\n1-1,relabel,red cell\n"), PBC8)
    assert reviewed["sample"]["counts"] == {"RBC": 1, "WBC": 0, "Platelets": 0}


def test_a_label_equal_to_the_models_call_in_another_spelling_is_an_accept():
    corrections = read_corrections("item,model_label,decision,label\n1-1,neutrophil,,Neutrophils\n")
    assert corrections[0].decision == "accept"


def test_an_unknown_class_is_one_sentence():
    with pytest.raises(DataError, match="'blast' is not a class the reviewer can give"):
        apply_corrections(_doc(), read_corrections("item,decision,label\n1-1,relabel,blast\n"), PBC8)
