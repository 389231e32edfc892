"""The database itself refuses rows that can never be valid, with a readable reason.

Rows go in through plain SQL (not the ORM) so that the database, not Python, is
what says no; each refusal must leave the table as it was.
"""

from datetime import date

import pytest
import sqlalchemy as sa

from registry.models import (
    AdverseEvent,
    AntibodyTest,
    FollowUp,
    Hrct,
    LabResult,
    Patient,
    Pft,
    Site,
    Treatment,
)
from registry.violations import explain

PATIENT = {"study_id": "P001", "site_id": 1, "sex": "female", "birth_date": date(1970, 5, 1)}
VALID = {
    Patient: {**PATIENT, "study_id": "P002"},
    AntibodyTest: {"patient_id": 1, "antibody": "anti_mda5", "assay": "line_blot", "sample_date": date(2019, 1, 2), "grade": "strong"},
    LabResult: {"patient_id": 1, "analyte": "ferritin", "sample_date": date(2019, 1, 2), "value": 1200.0, "unit": "ng/mL"},
    Pft: {"patient_id": 1, "test_date": date(2019, 1, 3), "fvc_pct_pred": 71.0},
    Hrct: {"patient_id": 1, "scan_date": date(2019, 1, 3), "pattern": "op", "ggo_right_upper_pct": 40.0},
    Treatment: {"patient_id": 1, "drug": "tofacitinib", "start_date": date(2019, 1, 5), "dose": 5.0, "dose_unit": "mg"},
    AdverseEvent: {
        "patient_id": 1, "onset_date": date(2019, 2, 1), "term": "cmv_reactivation", "ctcae_grade": 2,
        "serious": False, "led_to_discontinuation": False,
    },
    FollowUp: {"patient_id": 1, "last_contact_date": date(2020, 1, 1), "vital_status": "alive"},
}  # fmt: skip

CASES = [
    (Patient, {"sex": None}, "patient: sex is required"),
    (Patient, {"birth_date": None}, "patient: birth_date is required"),
    (Patient, {"sex": "f"}, "patient: sex must be one of: female, male"),
    (Patient, {"smoking": "sometimes"}, "patient: smoking must be one of: never, former, current"),
    (Patient, {"study_id": "P001"}, "patient: another record already has the same study_id"),
    (Patient, {"site_id": 99}, "patient: site_id refers to a site that does not exist"),
    (Patient, {"rpild": True}, "patient: an RPILD flag needs the definition it was judged by (rpild_definition)"),
    (AntibodyTest, {"patient_id": 99}, "antibody_test: patient_id refers to a patient that does not exist"),
    (AntibodyTest, {"grade": None, "value": 3.0, "unit": "index"}, "antibody_test: a line-blot result needs a grade (negative, weak, moderate or strong)"),
    (AntibodyTest, {"assay": "elisa", "grade": None}, "antibody_test: an antibody test needs a result: a grade or a value"),
    (AntibodyTest, {"value": 120.0}, "antibody_test: a value needs its unit"),
    (AntibodyTest, {"value": -1.0, "unit": "index"}, "antibody_test: value cannot be negative"),
    (AntibodyTest, {"antibody": "anti_xyz"}, "antibody_test: antibody must be one of: anti_mda5, anti_ro52, anti_ro60, "
     "anti_jo1, anti_pl7, anti_pl12, anti_ej, anti_oj, anti_mi2, anti_tif1g, anti_nxp2, anti_sae, anti_srp, anti_hmgcr, "
     "anti_pmscl, anti_ku, ana"),
    (LabResult, {"value": -3.0}, "lab_result: value cannot be negative"),
    (LabResult, {"value": None}, "lab_result: value is required"),
    (LabResult, {"analyte": "troponin"}, "lab_result: analyte must be one of: ferritin, ldh, crp, esr, kl6, lymphocytes, "
     "ck, alt, ast, albumin, creatinine, pao2, fio2, tacrolimus_trough"),
    (Pft, {"fvc_pct_pred": None}, "pft: a pulmonary function test needs at least one result or the reason it was not done"),
    (Pft, {"not_done_reason": "too_ill"}, "pft: a test marked not done (not_done_reason) cannot have results"),
    (Pft, {"dlco_pct_pred": 0.0}, "pft: dlco_pct_pred must be greater than 0"),
    (Hrct, {"ggo_right_upper_pct": 101.0}, "hrct: ggo_right_upper_pct must be between 0 and 100"),
    (Hrct, {"consolidation_left_lower_pct": -5.0}, "hrct: consolidation_left_lower_pct must be between 0 and 100"),
    (Hrct, {"pattern": "ard"}, "hrct: pattern must be one of: op, nsip, nsip_op, uip, dad, unclassifiable"),
    (Treatment, {"end_date": date(2019, 1, 4)}, "treatment: end_date cannot be before start_date"),
    (Treatment, {"dose": 0.0}, "treatment: dose must be greater than 0"),
    (Treatment, {"dose_unit": None}, "treatment: a dose needs its dose_unit"),
    (Treatment, {"start_date": None}, "treatment: start_date is required"),
    (AdverseEvent, {"ctcae_grade": 6}, "adverse_event: ctcae_grade must be 1, 2, 3, 4 or 5"),
    (AdverseEvent, {"ctcae_grade": 0}, "adverse_event: ctcae_grade must be 1, 2, 3, 4 or 5"),
    (AdverseEvent, {"resolution_date": date(2019, 1, 1)}, "adverse_event: resolution_date cannot be before onset_date"),
    (AdverseEvent, {"serious": None}, "adverse_event: serious is required"),
    (FollowUp, {"vital_status": "dead"}, "follow_up: death_date is required when vital_status is dead, and only then"),
    (FollowUp, {"death_date": date(2019, 12, 1)}, "follow_up: death_date is required when vital_status is dead, and only then"),
    (FollowUp, {"death_cause": "infection"}, "follow_up: death_cause can only be given when vital_status is dead"),
    (FollowUp, {"vital_status": "missing"}, "follow_up: vital_status must be one of: alive, dead"),
]  # fmt: skip


@pytest.fixture
def with_patient(migrated):
    with migrated.begin() as connection:
        connection.execute(sa.insert(Site), {"code": "S1", "name": "Site one"})
        connection.execute(sa.insert(Patient), PATIENT)
    return migrated


def _count(engine, model) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


def _insert(engine, model, row) -> None:
    with engine.begin() as connection:
        connection.execute(sa.insert(model), row)


@pytest.mark.parametrize("model, change, message", CASES, ids=[f"{m.__tablename__}-{'-'.join(c)}" for m, c, _ in CASES])
def test_constraint_refuses_bad_row(with_patient, model, change, message):
    before = _count(with_patient, model)
    with pytest.raises(sa.exc.IntegrityError) as refused:
        _insert(with_patient, model, {**VALID[model], **change})
    assert explain(refused.value).message == message
    assert _count(with_patient, model) == before


@pytest.mark.parametrize("model", VALID, ids=lambda m: m.__tablename__)
def test_valid_rows_are_accepted(with_patient, model):
    _insert(with_patient, model, VALID[model])
    assert _count(with_patient, model) == (2 if model is Patient else 1)


def test_duplicate_natural_key_is_refused(with_patient):
    _insert(with_patient, LabResult, VALID[LabResult])
    with pytest.raises(sa.exc.IntegrityError) as refused:
        _insert(with_patient, LabResult, {**VALID[LabResult], "value": 900.0})
    assert explain(refused.value).message == (
        "lab_result: another record already has the same patient_id + analyte + sample_date"
    )


def test_deleting_a_patient_with_records_is_refused_not_cascaded(with_patient):
    _insert(with_patient, Treatment, VALID[Treatment])
    with pytest.raises(sa.exc.IntegrityError) as refused, with_patient.begin() as connection:
        connection.execute(sa.delete(Patient).where(Patient.id == 1))
    children = "treatment" if with_patient.dialect.name == "postgresql" else "other tables"  # SQLite names none
    assert (
        explain(refused.value).message
        == f"patient: cannot delete this patient: records in {children} still refer to it"
    )
    assert _count(with_patient, Patient) == 1
    assert _count(with_patient, Treatment) == 1


def test_patient_without_records_can_be_deleted(with_patient):
    with with_patient.begin() as connection:
        connection.execute(sa.delete(Patient).where(Patient.id == 1))
    assert _count(with_patient, Patient) == 0
