"""What leaves the lab: a sample as CSV (one numeric column per cell type) or as a FHIR R4 DiagnosticReport.

The FHIR Bundle (type collection) holds one DiagnosticReport and its Observations: one per
differential entry (percent of white cells, LOINC "/100 leukocytes" codes), one per count (cells
counted in the photos, a bloodcell code: a count of cells on photos is not a concentration), and,
only when the white-cell concentration of the blood is given, one absolute count per type (LOINC
[#/volume] codes, 10*9/L). A signed sample is ``final``, any other ``preliminary``. The resources are
built and validated with fhir.resources' R4B (4.3) models; every element written here (DiagnosticReport
identifier, status, category, code, effectiveDateTime, issued, result, resultsInterpreter, conclusion;
Observation status, category, code, effectiveDateTime, valueQuantity, referenceRange; Bundle type,
timestamp, entry) is an R4 (4.0.1) element of the same meaning. fhir.resources 6.1
(the last release whose models are 4.0.1) is written for pydantic 1, which cannot sit beside the
service's pydantic 2; 6.2 onwards and 8.x carry R4B.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from bloodcell.errors import ConfigError
from bloodcell.outputs import check_output_file
from bloodcell.smear.differential import NOT_WHITE_CELLS, REFERENCE_INTERVALS, differential
from bloodcell.smear.lab_check import lab_check_text
from bloodcell.store.models import Sample
from bloodcell.store.vocabulary import EXPORTS
from bloodcell.store.samples import sample_lab_check, tallies

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
COUNT_SYSTEM = "urn:bloodcell:cell-count"
SAMPLE_SYSTEM = "urn:bloodcell:sample"
#: LOINC codes per white-cell type: (percent of leukocytes, absolute [#/volume]), both "in Blood by Automated count".
#: Checked against published FHIR examples that carry the code with its LOINC long name:
#: 770-8 in the US Core R4 example Observation-neutrophils (hl7.org/fhir/us/core/Observation-neutrophils.html);
#: 731-0 on loinc.org/731-0 and in the eCR R4 example observation-us-core-results-eve-everywoman-lymphocytes;
#: 751-8, 742-7, 711-2, 704-7, 5905-5, 713-8, 706-2 in the HL7 CTC Adverse Events IG's CBC examples
#: (build.fhir.org/ig/standardhealth/fsh-ae/Observation-r201-9, r202-13, r201-15, r201-17, r202-12, r201-14,
#: r201-16.html); 736-9 "Lymphocytes/100 leukocytes in Blood by Automated count" in the same IG's FSH source and
#: public LOINC mapping tables (no hl7.org page for it was found).
LOINC_CODES = {
    "neutrophil": (("770-8", "Neutrophils/100 leukocytes in Blood by Automated count"),
                   ("751-8", "Neutrophils [#/volume] in Blood by Automated count")),
    "lymphocyte": (("736-9", "Lymphocytes/100 leukocytes in Blood by Automated count"),
                   ("731-0", "Lymphocytes [#/volume] in Blood by Automated count")),
    "monocyte": (("5905-5", "Monocytes/100 leukocytes in Blood by Automated count"),
                 ("742-7", "Monocytes [#/volume] in Blood by Automated count")),
    "eosinophil": (("713-8", "Eosinophils/100 leukocytes in Blood by Automated count"),
                   ("711-2", "Eosinophils [#/volume] in Blood by Automated count")),
    "basophil": (("706-2", "Basophils/100 leukocytes in Blood by Automated count"),
                 ("704-7", "Basophils [#/volume] in Blood by Automated count")),
}


def _types(types: dict[str, int]) -> list[str]:
    return sorted(set(REFERENCE_INTERVALS) | set(types))


def sample_csv(sample: Sample) -> str:
    """One header and one row: the sample, its counts, and per cell type ``<type>_percent`` and ``<type>_count``."""
    counts, types = tallies(sample)
    percent = differential(types)["percent"]
    row: dict[str, Any] = {"sample_id": sample.sample_id, "lab": sample.lab, "status": sample.status,
                           "signed_by": sample.signed_by or "", "photos": len(sample.photos),
                           **{f"count_{label}": n for label, n in counts.items()},
                           "wbc_classified": sum(types.values()), "lab_check": lab_check_text(sample_lab_check(sample))}
    for name in _types(types):
        # calls kept out of the differential (platelet, erythroblast) and untyped samples have no percent
        row[f"{name}_percent"] = (f"{percent[name]:.2f}" if name in percent else
                                  "" if name in NOT_WHITE_CELLS or not percent else "0.00")
        row[f"{name}_count"] = types.get(name, 0)
    handle = io.StringIO()
    writer = csv.DictWriter(handle, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    return handle.getvalue()


def _caveats(sample: Sample, typed: int) -> str:
    """What a receiving system's reader must know of the numbers: how many cells they rest on, the lab check's warning,
    and the sample's note."""
    said = [f"Differential from {typed} white cell{'s' if typed != 1 else ''} typed on smear photos by a classifier"
            + (" (fewer than the 100 of a manual differential: percentages are imprecise)." if typed < 100 else ".")]
    check = sample_lab_check(sample)
    if check is not None and check["unfamiliar_lab"]:
        said.append(f"Lab check: {check['message']}")
    if sample.note:
        said.append(sample.note)
    return " ".join(said)


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _observation(code: dict[str, Any], value: dict[str, Any], status: str, when: str,
                 reference: tuple[float, float] | None = None) -> dict[str, Any]:
    observation = {"resourceType": "Observation", "id": str(uuid.uuid4()), "status": status,
                   "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                             "code": "laboratory", "display": "Laboratory"}]}],
                   "code": code, "effectiveDateTime": when, "valueQuantity": value}
    if reference is not None:
        observation["referenceRange"] = [{"low": _quantity(reference[0], "%", "%"),
                                          "high": _quantity(reference[1], "%", "%")}]
    return observation


def fhir_bundle(sample: Sample, wbc_per_nl: float | None = None) -> dict[str, Any]:
    """The sample as a FHIR R4 Bundle (DiagnosticReport + Observations), validated; ``wbc_per_nl`` is the
    blood's white-cell concentration in 10*9/L, needed for the absolute counts (left out without it)."""
    if wbc_per_nl is not None and not 0 < wbc_per_nl < 1000:
        raise ConfigError(f"a white-cell concentration of {wbc_per_nl} x10^9/L is not plausible")
    status = "final" if sample.status == "signed" else "preliminary"
    when = _instant(sample.created_at)
    counts, types = tallies(sample)
    percent = differential(types)["percent"]
    observations = []
    # a type none of the typed cells was is 0 %, a finding like any other (none without a typed white cell at all)
    for name, value in ({name: percent.get(name, 0.0) for name in _types(types) if name not in NOT_WHITE_CELLS}
                        if percent else {}).items():
        codes = LOINC_CODES.get(name)
        code = _coding(LOINC, *codes[0]) if codes else {"text": f"{name}/100 leukocytes in Blood (smear photos)"}
        observations.append(_observation(code, _quantity(round(value, 2), "%", "%"), status, when,
                                         REFERENCE_INTERVALS.get(name)))
        if wbc_per_nl is not None and codes:
            observations.append(_observation(_coding(LOINC, *codes[1]),
                                             _quantity(round(value / 100 * wbc_per_nl, 3), "10*9/L", "10*9/L"),
                                             status, when))
    tallied = {**{label: n for label, n in counts.items()}, **{f"WBC {name}": n for name, n in types.items()}}
    for name, n in tallied.items():
        observations.append(_observation(_coding(COUNT_SYSTEM, name.replace(" ", "-"),
                                                 f"{name} cells counted on the smear photos"),
                                         _quantity(n, "cells", "{cells}"), status, when))
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": str(uuid.uuid4()), "status": status,
        "identifier": [{"system": SAMPLE_SYSTEM, "value": sample.sample_id}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM",
                                  "display": "Hematology"}]}],
        "code": {"text": "White-cell differential and cell counts from blood-smear photos (bloodcell)"},
        "effectiveDateTime": when, "issued": _instant(datetime.now(timezone.utc)),
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
    }
    if sample.signed_by:
        report["resultsInterpreter"] = [{"display": sample.signed_by}]
    report["conclusion"] = _caveats(sample, sum(n for name, n in types.items() if name not in NOT_WHITE_CELLS))
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": report["issued"],
              "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in [report, *observations]]}
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back UTC times without their zone
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat(timespec="seconds")


def write_export(sample: Sample, kind: str, path: str | Path, wbc_per_nl: float | None = None, *,
                 overwrite: bool = False) -> Path:
    """Write ``sample`` as ``kind`` (csv or fhir) to ``path`` whole or not at all (a temporary file renamed);
    an existing ``path`` (an earlier export) is refused unless ``overwrite``."""
    if kind not in EXPORTS:
        raise ConfigError(f"unknown export format {kind!r}; choose one of {', '.join(EXPORTS)}")
    if kind == "csv" and wbc_per_nl is not None:
        raise ConfigError("the white-cell concentration is used by the FHIR export only")
    path = check_output_file(path, EXPORTS[kind], f"{kind} export", replace=overwrite)
    text = sample_csv(sample) if kind == "csv" else json.dumps(fhir_bundle(sample, wbc_per_nl), indent=2) + "\n"
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write the export ({exc.strerror or exc})") from None
    return path


#: Export formats and the file suffixes each accepts.
