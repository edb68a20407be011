"""Exports: a CSV row with a numeric percent and count column per cell type; a FHIR R4 Bundle that validates,
LOINC-coded, final only when signed, absolute counts only with the blood's white-cell concentration."""

from __future__ import annotations

import csv
import json

import pytest
from store_helpers import confirm_referred, counted_doc
from fhir.resources.R4B.bundle import Bundle

from bloodcell.errors import ConfigError
from bloodcell.store.exports import LOINC, fhir_bundle, sample_csv, write_export
from bloodcell.store.samples import find, finish_review, record_count, sign


@pytest.fixture()
def kept(store, tmp_path, people):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "in", types={"neutrophil": 3, "lymphocyte": 1}),
                     "tia")
    return store


def _sample(store):
    with store.session() as session:
        sample = find(session, "S-001")
        sample.cells, sample.photos  # loaded while the session is open
        return sample


def test_the_csv_has_a_numeric_percent_and_count_column_per_cell_type(kept):
    rows = list(csv.DictReader(sample_csv(_sample(kept)).splitlines()))
    assert len(rows) == 1
    row = rows[0]
    assert float(row["neutrophil_percent"]) == 75.0 and int(row["neutrophil_count"]) == 3
    assert float(row["lymphocyte_percent"]) == 25.0 and int(row["lymphocyte_count"]) == 1
    assert float(row["monocyte_percent"]) == 0.0 and int(row["basophil_count"]) == 0
    assert (int(row["count_RBC"]), int(row["count_WBC"]), int(row["count_Platelets"])) == (3, 4, 1)
    assert row["status"] == "counted" and "differential" not in row


def _observations(bundle):
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]


def _by_loinc(bundle):
    return {o["code"]["coding"][0]["code"]: o for o in _observations(bundle) if o["code"]["coding"][0]["system"] == LOINC}


def test_fhir_is_a_valid_bundle_of_a_preliminary_report_with_loinc_coded_percentages(kept):
    bundle = fhir_bundle(_sample(kept))
    Bundle.model_validate(bundle)
    report = bundle["entry"][0]["resource"]
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    assert report["identifier"][0]["value"] == "S-001"
    coded = _by_loinc(bundle)
    # neutrophils and lymphocytes seen, the other white-cell types of the reference intervals at 0 %; no absolute
    # counts without --wbc
    assert set(coded) == {"770-8", "736-9", "713-8", "706-2", "5905-5"}
    assert all(coded[code]["valueQuantity"]["value"] == 0.0 for code in ("713-8", "706-2", "5905-5"))
    assert report["conclusion"].startswith("Differential from 4 white cells typed on smear photos by a classifier "
                                           "(fewer than the 100 of a manual differential")
    assert coded["770-8"]["valueQuantity"] == {"value": 75.0, "unit": "%", "system": "http://unitsofmeasure.org",
                                               "code": "%"}
    assert coded["736-9"]["valueQuantity"]["value"] == 25.0
    assert {o["status"] for o in _observations(bundle)} == {"preliminary"}
    counts = {o["code"]["coding"][0]["code"]: o["valueQuantity"]["value"] for o in _observations(bundle)
              if o["code"]["coding"][0]["system"] != LOINC}
    assert counts == {"RBC": 3, "WBC": 4, "Platelets": 1, "WBC-lymphocyte": 1, "WBC-neutrophil": 3}
    assert len(report["result"]) == len(_observations(bundle))


def test_a_signed_sample_exports_as_final_with_absolute_counts_from_the_white_cell_concentration(kept, people):
    with kept.session() as session:
        confirm_referred(session, "S-001", people["tia"])
        finish_review(session, "S-001", people["tia"])
        sign(session, "S-001", people["sam"])
    bundle = fhir_bundle(_sample(kept), wbc_per_nl=8.0)
    assert bundle["entry"][0]["resource"]["status"] == "final"
    assert bundle["entry"][0]["resource"]["resultsInterpreter"] == [{"display": "sam"}]
    coded = _by_loinc(bundle)
    assert coded["751-8"]["valueQuantity"]["value"] == 6.0 and coded["751-8"]["valueQuantity"]["code"] == "10*9/L"
    assert coded["731-0"]["valueQuantity"]["value"] == 2.0
    assert {o["status"] for o in _observations(bundle)} == {"final"}


def test_an_implausible_white_cell_concentration_is_refused(kept):
    with pytest.raises(ConfigError, match="not plausible"):
        fhir_bundle(_sample(kept), wbc_per_nl=-1)


def test_an_export_is_written_whole_and_a_wrong_suffix_refused(kept, tmp_path):
    path = write_export(_sample(kept), "fhir", tmp_path / "out" / "s.json")
    assert json.loads(path.read_text())["resourceType"] == "Bundle"
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]
    with pytest.raises(ConfigError, match="must end in .csv"):
        write_export(_sample(kept), "csv", tmp_path / "s.json")
    with pytest.raises(ConfigError, match="unknown export format"):
        write_export(_sample(kept), "hl7v2", tmp_path / "s.txt")


def test_calls_kept_out_of_the_differential_have_a_count_and_no_percent(store, tmp_path):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "in", types={"neutrophil": 1, "platelet": 1}),
                     "tia")
    row = next(csv.DictReader(sample_csv(_sample(store)).splitlines()))
    assert (row["neutrophil_percent"], row["platelet_percent"], row["platelet_count"]) == ("100.00", "", "1")


def test_both_exports_carry_the_lab_check_of_a_sample_from_an_unfamiliar_lab(store, tmp_path, people):
    """A receiving system's reader learns what the page says: the cells look unlike every lab the classifier knows."""
    result = counted_doc(tmp_path / "in", "S-odd", unfamiliar=True)
    with store.session() as session:
        record_count(session, store.photos, result, "tia")
        sample = find(session, "S-odd")
        sample.cells, sample.photos
    row = next(csv.DictReader(sample_csv(sample).splitlines()))
    assert row["lab_check"].startswith("unfamiliar lab: 4 of 4 white cells look unlike the cells of every lab")
    conclusion = fhir_bundle(sample)["entry"][0]["resource"]["conclusion"]
    assert "Lab check: 4 of 4 white cells look unlike" in conclusion and "adapt the classifier" in conclusion
    plain = next(csv.DictReader(sample_csv(_sample(_kept_plain(store, tmp_path))).splitlines()))
    assert plain["lab_check"] == ""


def _kept_plain(store, tmp_path):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "plain"), "tia")
    return store
