"""FHIR export: one R4 transaction Bundle, validated, complete, coded, reproducible and free of identifiers."""

import csv
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from registry import db
from registry.audit import audited_session
from registry.ingest import import_path
from registry.interchange import fhir
from registry.interchange.fhir import (
    DATA_ABSENT_REASON,
    DATA_ABSENT_REASON_EXTENSION,
    LEFT_OUT,
    STUDY_ID_SYSTEM,
    fhir_bundle,
    patient_id,
    write_fhir,
)
from registry.missing import Missing
from registry.models import (
    AdverseEvent,
    AntibodyTest,
    FollowUp,
    Hrct,
    LabResult,
    Patient,
    PatientIdentifier,
    Pft,
    Site,
    Treatment,
)
from registry.privacy import Scanner, registered_identifiers
from registry.sheets import SHEETS, stored_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LOINC, UCUM, RXNORM = "http://loinc.org", "http://unitsofmeasure.org", "http://www.nlm.nih.gov/research/umls/rxnorm"
#: What a Patient may hold: the pseudonym (id, identifier), gender and the date of death.
PATIENT_ELEMENTS = {"resourceType", "id", "identifier", "gender", "deceasedDateTime"}


def _registry(engine: sa.Engine, folder: Path = FIXTURES / "demo") -> sa.Engine:
    add_demo_site(engine)
    result = import_path(engine, folder, actor="test")
    assert result.written and result.problems == []
    return engine


def _export(engine: sa.Engine, out: Path) -> tuple[dict, dict[str, int]]:
    counts = write_fhir(engine, out)
    return json.loads(out.read_text(encoding="utf-8")), counts


def _resources(bundle: dict, resource_type: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def _of_patient(bundle: dict, study_id: str, resource_type: str) -> list[dict]:
    """The resources of ``resource_type`` whose subject is the Patient of ``study_id``."""
    (url,) = [e["fullUrl"] for e in bundle["entry"] if e["resource"].get("id") == patient_id(study_id)]
    return [r for r in _resources(bundle, resource_type) if r["subject"]["reference"] == url]


def _coded(concept: dict, system: str) -> str:
    (code,) = [c["code"] for c in concept["coding"] if c["system"] == system]
    return code


def _walk(node, path=()):
    """Every (path, dict) in a JSON tree."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


def _count(engine: sa.Engine, model) -> int:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.count()).select_from(model).where(model.deleted_at.is_(None))
        ).scalar()


# --- the Bundle: valid, complete, linked ------------------------------------------------------------------------------
def test_bundle_validates_with_one_resource_per_record_and_references_inside_it(migrated, tmp_path):
    engine = _registry(migrated)
    bundle, counts = _export(engine, tmp_path / "registry.fhir.json")

    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        assert uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:")).version == 5
        assert entry["fullUrl"].startswith("urn:uuid:")

    with engine.connect() as connection:
        smokers = connection.execute(sa.select(sa.func.count()).where(Patient.smoking.is_not(None))).scalar()
        rpild = connection.execute(sa.select(sa.func.count()).where(Patient.rpild.is_not(None))).scalar()
    patients = _count(engine, Patient)
    observations = sum(_count(engine, m) for m in (AntibodyTest, LabResult, Pft, Hrct, FollowUp)) + smokers
    expected = {"Patient": patients, "Condition": 2 * patients + rpild, "Observation": observations,
                "MedicationStatement": _count(engine, Treatment), "Procedure": 0,
                "AdverseEvent": _count(engine, AdverseEvent)}  # fmt: skip
    assert counts == expected
    assert (patients, expected["MedicationStatement"], expected["AdverseEvent"], _count(engine, LabResult)) == (
        61,
        243,
        45,
        732,
    )  # fmt: skip  the demo cohort's rows (fixtures/demo)
    assert {t: len(_resources(bundle, t)) for t in counts} == counts

    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    patient_urls = {e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"}
    references = [node["reference"] for _, node in _walk(bundle) if "reference" in node]
    assert references and set(references) <= set(urls)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] != "Patient":
            assert entry["resource"]["subject"]["reference"] in patient_urls
    suspects = [s["instance"] for r in _resources(bundle, "AdverseEvent") for s in r.get("suspectEntity", [])]
    medication_urls = {e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationStatement"}
    assert len(suspects) == 45 and {s["reference"] for s in suspects} <= medication_urls


def test_patients_hold_only_the_study_pseudonym_gender_and_death(migrated, tmp_path):
    engine = _registry(migrated)
    bundle = fhir_bundle(engine)
    with engine.connect() as connection:
        study_ids = set(connection.execute(sa.select(Patient.study_id)).scalars())
    patients = _resources(bundle, "Patient")
    assert {p["identifier"][0]["value"] for p in patients} == study_ids
    for patient in patients:
        assert set(patient) <= PATIENT_ELEMENTS
        assert "name" not in patient and "birthDate" not in patient
        assert patient["identifier"] == [{"system": STUDY_ID_SYSTEM, "value": patient["id"]}]
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", patient["id"])
    dead = [p for p in patients if "deceasedDateTime" in p]
    assert len(dead) == sum(1 for r in _resources(bundle, "Observation") if r["code"]["text"].startswith("Vital")
                            and r["valueCodeableConcept"]["coding"][0]["code"] == "dead")  # fmt: skip


# --- what a record becomes -------------------------------------------------------------------------------------------
def test_a_patients_values_codes_units_and_dates_are_carried(migrated):
    bundle = fhir_bundle(_registry(migrated))
    (patient,) = [p for p in _resources(bundle, "Patient") if p["id"] == "DM-001"]
    assert (patient["gender"], patient["deceasedDateTime"]) == ("female", "2018-09-09")

    conditions = {
        _coded(c["code"], "urn:mda5-registry:code:condition"): c for c in _of_patient(bundle, "DM-001", "Condition")
    }
    assert _coded(conditions["dm"]["code"], "http://snomed.info/sct") == "396230008"
    assert conditions["dm"]["onsetDateTime"] == "2018-05-27"
    assert (_coded(conditions["ild"]["code"], "http://snomed.info/sct"), conditions["ild"]["onsetDateTime"]) == (
        "233703007", "2018-06-12")  # fmt: skip
    assert conditions["rpild"]["verificationStatus"]["coding"][0]["code"] == "confirmed"

    analytes = "urn:mda5-registry:code:analyte"
    labs = {o["code"]["text"]: o for o in _of_patient(bundle, "DM-001", "Observation")
            if any(c["system"] == analytes for c in o["code"]["coding"])}  # fmt: skip
    ferritin = labs["Serum ferritin"]
    assert _coded(ferritin["code"], LOINC) == "2276-4"
    assert ferritin["effectiveDateTime"] == "2018-06-15"
    assert ferritin["valueQuantity"] == {"value": 2440.0, "unit": "ng/mL", "system": UCUM, "code": "ng/mL"}
    lymphocytes = labs["Lymphocyte count"]["valueQuantity"]
    assert (lymphocytes["unit"], lymphocytes["code"]) == ("10^9/L", "10*9/L")  # given its UCUM spelling
    assert labs["Arterial oxygen partial pressure"]["valueQuantity"]["code"] == "mm[Hg]"
    assert all(c["system"] != LOINC for c in labs["Krebs von den Lungen-6"]["code"]["coding"])  # none verified

    (mda5,) = [o for o in _of_patient(bundle, "DM-001", "Observation") if o["code"]["text"].startswith("Anti-MDA5")]
    assert _coded(mda5["code"], LOINC) == "82424-3"
    assert _coded(mda5["valueCodeableConcept"], "urn:mda5-registry:code:antibody-grade") == "moderate"
    (pft,) = [o for o in _of_patient(bundle, "DM-001", "Observation") if o["code"]["text"] == "Pulmonary function test"]
    assert _coded(pft["dataAbsentReason"], DATA_ABSENT_REASON) == "not-performed"
    assert pft["dataAbsentReason"]["text"] == "Too breathless or unwell to perform"

    medications = {
        m["medicationCodeableConcept"]["text"]: m for m in _of_patient(bundle, "DM-001", "MedicationStatement")
    }
    tofacitinib = medications["Tofacitinib"]
    assert tofacitinib["effectivePeriod"] == {"start": "2018-06-17", "end": "2018-08-28"}
    assert tofacitinib["status"] == "stopped"
    assert _coded(tofacitinib["statusReason"][0], "urn:mda5-registry:code:stop-reason") == "adverse_event"
    (dosage,) = tofacitinib["dosage"]
    assert dosage["doseAndRate"][0]["doseQuantity"] == {"value": 5.0, "unit": "mg", "system": UCUM, "code": "mg"}
    assert dosage["timing"]["repeat"] == {"frequency": 2, "period": 1, "periodUnit": "d"}
    tacrolimus = [
        m for m in _resources(bundle, "MedicationStatement") if m["medicationCodeableConcept"]["text"] == "Tacrolimus"
    ]
    assert len(tacrolimus) == 35 and {_coded(m["medicationCodeableConcept"], RXNORM) for m in tacrolimus} == {"42316"}

    (event,) = _of_patient(bundle, "DM-001", "AdverseEvent")
    assert (event["date"], event["event"]["text"]) == ("2018-07-02", "CMV reactivation")
    assert _coded(event["severity"], "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl") == "C41339"  # grade 2
    assert _coded(event["severity"], "http://terminology.hl7.org/CodeSystem/adverse-event-severity") == "moderate"
    assert (
        _coded(event["seriousness"], "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness") == "non-serious"
    )
    assert _coded(event["outcome"], "http://terminology.hl7.org/CodeSystem/adverse-event-outcome") == "ongoing"
    (url,) = [e["fullUrl"] for e in bundle["entry"] if e["resource"] is tofacitinib]
    assert event["suspectEntity"] == [{"instance": {"reference": url, "display": "Tofacitinib"}}]


def test_patient_ids_are_fhir_ids_and_keep_distinct_study_ids_apart():
    ids = {s: patient_id(s) for s in ("DM-001", "DM_001", "DM.001", "DM..001", "DM._001", "a" * 32, "x_y.z")}
    assert ids["DM-001"] == "DM-001"
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", i) for i in ids.values())


# --- missing-data codes, procedures, free text ------------------------------------------------------------------------
def _edit(folder: Path, sheet: str, study_id: str, match: dict[str, str] | None = None, **cells: str) -> None:
    """Set ``cells`` in the rows of ``study_id`` (those whose columns equal ``match``) of ``sheet``."""
    path = folder / f"{sheet}.csv"
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    hits = [r for r in rows if r["study_id"] == study_id and all(r[k] == v for k, v in (match or {}).items())]
    assert hits, (sheet, study_id, match)
    for row in hits:
        row.update(cells)
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _append(folder: Path, sheet: str, line: str) -> None:
    with (folder / f"{sheet}.csv").open("a") as stream:
        stream.write(line + "\n")


@pytest.fixture
def coded_example(tmp_path):
    """The example workbook with a missing-data code in every kind of exported field, a procedure, and an event
    attributed to a drug the patient has no episode of."""
    folder = tmp_path / "sheets"
    shutil.copytree(FIXTURES / "example", folder)
    _edit(folder, "patients", "EX-001", smoking="[not_asked]", dm_diagnosis_date="[unknown]")
    _edit(folder, "patients", "EX-002", rpild="[unknown]", rpild_definition="")
    _edit(folder, "antibody_tests", "EX-002", {"assay": "elisa"}, cutoff="[unknown]")
    _edit(folder, "pfts", "EX-004", tlc_pct_pred="[not_done]")
    _edit(folder, "hrct", "EX-004", total_score="[not_done]", ggo_right_upper_pct="[unknown]", pattern="[not_asked]")
    _edit(folder, "treatments", "EX-002", {"drug": "tofacitinib"}, end_date="[unknown]", stop_reason="[unknown]")
    _edit(folder, "treatments", "EX-004", {"drug": "mycophenolate"}, dose="[unknown]", frequency="[not_asked]")
    _edit(folder, "adverse_events", "EX-003", attributed_drug="[unknown]")
    _edit(folder, "adverse_events", "EX-002", outcome="[unknown]")
    _edit(folder, "follow_up", "EX-003", death_cause="[unknown]")
    _edit(folder, "follow_up", "EX-004", lung_transplant_date="[not_applicable]")
    _append(folder, "treatments", "EX-003,plasma_exchange,2019-09-08,2019-09-10,3,session,daily,completed")
    _append(folder, "adverse_events", "EX-001,2018-06-10,hepatotoxicity,,2,no,tacrolimus,no,recovered,2018-06-12")
    return folder


def _absent_code(node: dict) -> str:
    """The data-absent reason an element carries, as an extension or as a dataAbsentReason."""
    if "dataAbsentReason" in node:
        return _coded(node["dataAbsentReason"], DATA_ABSENT_REASON)
    (extension,) = node["extension"]
    assert extension["url"] == DATA_ABSENT_REASON_EXTENSION
    return extension["valueCode"]


def test_missing_data_codes_become_data_absent_reasons(migrated, coded_example):
    engine = _registry(migrated, coded_example)
    bundle = fhir_bundle(engine)
    observations = {
        study_id: _of_patient(bundle, study_id, "Observation") for study_id in ("EX-001", "EX-002", "EX-003", "EX-004")
    }

    def observation(study_id: str, text: str) -> dict:
        (found,) = [o for o in observations[study_id] if o["code"]["text"].startswith(text)]
        return found

    def component(resource: dict, text: str) -> dict:
        (found,) = [c for c in resource["component"] if c["code"]["text"].startswith(text)]
        return found

    smoking = observation("EX-001", "Smoking")
    assert _absent_code(smoking) == "not-asked" and "valueCodeableConcept" not in smoking
    dm = [c for c in _of_patient(bundle, "EX-001", "Condition") if c["code"]["text"].startswith("Dermatomyositis")]
    assert "onsetDateTime" not in dm[0] and _absent_code(dm[0]["_onsetDateTime"]) == "unknown"
    rpild = [c for c in _of_patient(bundle, "EX-002", "Condition") if c["code"]["text"].startswith("Rapidly")]
    assert _absent_code(rpild[0]["verificationStatus"]) == "unknown"
    (elisa,) = [o for o in observations["EX-002"] if o.get("method", {}).get("text", "").startswith("ELISA")]
    assert elisa["valueQuantity"]["value"] == 58 and _absent_code(elisa["referenceRange"][0]["high"]) == "unknown"
    assert _absent_code(component(observation("EX-004", "Pulmonary"), "Total lung capacity")) == "not-performed"
    hrct = observation("EX-004", "Chest HRCT")
    assert _absent_code(hrct) == "not-performed" and "valueQuantity" not in hrct
    assert _absent_code(component(hrct, "Ground-glass opacity extent, right upper")) == "unknown"
    assert _absent_code(component(hrct, "Radiological pattern")) == "not-asked"
    assert _absent_code(component(observation("EX-003", "Vital"), "Principal cause")) == "unknown"
    assert _absent_code(component(observation("EX-004", "Vital"), "Date of lung")) == "not-applicable"

    (tofacitinib,) = [
        m
        for m in _of_patient(bundle, "EX-002", "MedicationStatement")
        if m["medicationCodeableConcept"]["text"] == "Tofacitinib"
    ]
    assert tofacitinib["status"] == "unknown" and "end" not in tofacitinib["effectivePeriod"]
    assert _absent_code(tofacitinib["effectivePeriod"]["_end"]) == "unknown"
    assert _absent_code(tofacitinib["statusReason"][0]) == "unknown"
    (mycophenolate,) = [
        m
        for m in _of_patient(bundle, "EX-004", "MedicationStatement")
        if m["medicationCodeableConcept"]["text"].startswith("Mycophenolate")
    ]
    assert _absent_code(mycophenolate["dosage"][0]["doseAndRate"][0]["doseQuantity"]) == "unknown"
    assert _absent_code(mycophenolate["dosage"][0]["timing"]) == "not-asked"
    (pjp,) = _of_patient(bundle, "EX-003", "AdverseEvent")
    assert _absent_code(pjp["suspectEntity"][0]["instance"]) == "unknown"
    (zoster,) = _of_patient(bundle, "EX-002", "AdverseEvent")
    assert _absent_code(zoster["outcome"]) == "unknown"

    # no coded field of an exported column vanishes: one data-absent reason per missing-data code stored
    with engine.connect() as connection:
        coded = sum(isinstance(value, Missing) for sheet in SHEETS for row in stored_rows(connection, sheet).values()
                    for name, value in row.items() if name not in LEFT_OUT.get(sheet.name, ()))  # fmt: skip
    pft_not_done = sum(1 for o in _resources(bundle, "Observation") if o["code"]["text"] == "Pulmonary function test"
                       and "dataAbsentReason" in o)  # fmt: skip
    reasons = sum(1 for _, node in _walk(bundle) if node.get("url") == DATA_ABSENT_REASON_EXTENSION)
    reasons += sum(1 for _, node in _walk(bundle) if "dataAbsentReason" in node) - pft_not_done
    assert coded == 16 and reasons == coded
    for _, node in _walk(bundle):  # obs-6: a value or the reason it is absent, never both
        assert not ("dataAbsentReason" in node and any(k.startswith("value") for k in node))


def test_procedures_unmatched_drugs_and_free_text(migrated, coded_example):
    bundle = fhir_bundle(_registry(migrated, coded_example))
    (procedure,) = _resources(bundle, "Procedure")
    assert procedure["code"]["text"] == "Plasma exchange" and procedure["status"] == "completed"
    assert procedure["performedPeriod"] == {"start": "2019-09-08", "end": "2019-09-10"}
    assert len(_resources(bundle, "MedicationStatement")) == 11  # the example's 11 drug episodes, the procedure apart
    hepatotoxicity = [
        e for e in _of_patient(bundle, "EX-001", "AdverseEvent") if e["event"]["text"] == "Hepatotoxicity"
    ]
    assert hepatotoxicity[0]["suspectEntity"] == [{"instance": {"display": "Tacrolimus"}}]  # EX-001 had none
    text = json.dumps(bundle)
    assert "thoracic dermatome" not in text and "creatinine rise" not in text  # term_detail: free text stays home


# --- privacy, reproducibility, atomicity -------------------------------------------------------------------------------
def test_the_export_holds_no_identifier(migrated, tmp_path):
    engine = _registry(migrated)
    with audited_session(engine, actor="test", reason="synthetic identifiers") as session:
        for i, patient in enumerate(session.exec(sa.select(Patient.id).order_by(Patient.study_id)).scalars()):
            session.add(
                PatientIdentifier(patient_id=patient, full_name=f"Zhang Wei{i}", hospital_number=f"H{2300000 + i}")
            )
        session.commit()
    out = tmp_path / "registry.fhir.json"
    write_fhir(engine, out)
    with engine.connect() as connection:
        scanner = Scanner(registered_identifiers(connection))
        birth_dates = sorted(connection.execute(sa.select(Patient.birth_date)).scalars())
    result = scanner.scan([out])
    assert (result.findings, result.scanned, result.unreadable) == ([], [out], [])

    planted = tmp_path / "planted.fhir.json"  # the scan would see them: a birth date and a name in a resource
    bundle = json.loads(out.read_text())
    bundle["entry"][0]["resource"]["birthDate"] = birth_dates[0].isoformat()
    bundle["entry"][1]["resource"]["code"]["text"] = "Zhang Wei7"
    planted.write_text(json.dumps(bundle))
    assert sorted(f.kind for f in scanner.scan([planted]).findings) == ["birth date", "name"]


def test_the_export_is_byte_identical_every_time_and_on_every_database(migrated, tmp_path):
    engine = _registry(migrated)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    write_fhir(engine, first)
    write_fhir(engine, second)
    assert first.read_bytes() == second.read_bytes()

    other = db.make_engine(f"sqlite:///{tmp_path / 'other.db'}")  # another registry of the same data, other row ids
    db.upgrade(other)
    with audited_session(other, actor="test") as session:
        session.add(Site(code="OTHER", name="Another site"))  # a first site: row ids differ from the first registry
        session.commit()
    try:
        _registry(other)
        write_fhir(other, tmp_path / "other.json")
    finally:
        other.dispose()
    assert (tmp_path / "other.json").read_bytes() == first.read_bytes()


def test_an_invalid_resource_leaves_the_previous_export_in_place(migrated, tmp_path, monkeypatch):
    engine = _registry(migrated, FIXTURES / "example")
    out = tmp_path / "registry.fhir.json"
    write_fhir(engine, out)
    before = out.read_bytes()
    patient = fhir._Patient.patient
    monkeypatch.setattr(fhir._Patient, "patient", lambda self: {**patient(self), "id": "not an id!"})
    with pytest.raises(ValueError, match="id"):  # the R4B model refuses it, and nothing is written
        write_fhir(engine, out)
    assert out.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".registry.fhir.json.")]  # no temporary left


def test_export_command_writes_the_bundle(migrated, tmp_path):
    from typer.testing import CliRunner

    from registry.cli import app

    engine = _registry(migrated)
    out = tmp_path / "registry.fhir.json"
    url = engine.url.render_as_string(hide_password=False)
    done = CliRunner().invoke(app, ["--database", url, "export", "--format", "fhir", str(out)])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == (
        f"Exported FHIR R4 resources to {out}: Patient 61, Condition 183, Observation 1098, MedicationStatement 243, "
        "Procedure 0, AdverseEvent 45"
    )
    assert Bundle.model_validate_json(out.read_text(encoding="utf-8")).type == "transaction"
