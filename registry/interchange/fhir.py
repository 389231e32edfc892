"""FHIR R4 export: the registry as one transaction Bundle, for hospital and research systems that speak FHIR.

Each patient becomes a Patient known only by the study pseudonym, with Conditions (dermatomyositis, ILD, RP-ILD),
Observations (smoking, antibodies, laboratory results, pulmonary function, HRCT, vital status), MedicationStatements
(drugs), Procedures (extracorporeal and supportive procedures: they are not medications) and AdverseEvents. Codes are
the standard ones where each was verified (LOINC, SNOMED CT, RxNorm, UCUM, NCI Thesaurus, HL7), always beside the
registry's own code in a registry code system, so that nothing a standard code cannot say is lost; docs/fhir.md lists
every code and its source. A missing-data code becomes a FHIR data-absent reason instead of vanishing.

Every resource and the Bundle are validated by the R4B models of ``fhir.resources``, which also serialise them: this
module only builds plain dicts. Identifiers are UUIDv5 of the registry's natural keys, so the same registry exports the
same bytes, and a server given the Bundle twice updates the resources instead of duplicating them (PUT).
``fhir.resources`` is imported inside the functions: importing it takes a noticeable part of a second, which every
other command of the CLI would pay.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from registry.atomic import replacing
from registry.codes import (
    CTCAE_VERSION,
    DRUGS,
    AdverseEventOutcome,
    AdverseEventTerm,
    Analyte,
    Antibody,
    AntibodyGrade,
    AntibodyUnit,
    Assay,
    CodeList,
    DeathCause,
    DoseUnit,
    Drug,
    DrugClass,
    Frequency,
    HrctFeature,
    HrctPattern,
    LungZone,
    MissingCode,
    PftNotDoneReason,
    RpildDefinition,
    Sex,
    Smoking,
    StopReason,
    VitalStatus,
)
from registry.missing import Missing
from registry.sheets import SHEETS, live_rows, snapshot

if TYPE_CHECKING:
    from fhir.resources.R4B.bundle import Bundle

# --- code systems -----------------------------------------------------------------------------------------------------
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
NCI_THESAURUS = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DATA_ABSENT_REASON_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
AE_SERIOUSNESS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
AE_SEVERITY = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
AE_OUTCOME = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"

#: The registry's own URIs: the study pseudonym's identifier system, and one code system per registry code list
#: (``urn:mda5-registry:code:drug``): the registry's codes, beside standard ones (instead of them, if none verified).
REGISTRY = "urn:mda5-registry"
STUDY_ID_SYSTEM = f"{REGISTRY}:study-id"
#: The namespace of every resource's UUIDv5: the same registry record always gets the same UUID.
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, REGISTRY)


def registry_system(code_list: str) -> str:
    """The URI of the registry code system ``code_list`` (a code list of registry/codes.py, in kebab case)."""
    return f"{REGISTRY}:code:{code_list}"


#: The registry's observation kinds that have no verified standard code of their own.
OBSERVATION_KIND = registry_system("observation")

# --- codes (each verified; sources in docs/fhir.md) -------------------------------------------------------------------
#: LOINC code and display of each analyte in its canonical unit; None: no LOINC code could be verified (text only).
LOINC_OF_ANALYTE: dict[Analyte, tuple[str, str] | None] = {
    Analyte.FERRITIN: ("2276-4", "Ferritin [Mass/volume] in Serum or Plasma"),
    Analyte.LDH: ("2532-0", "Lactate dehydrogenase [Enzymatic activity/volume] in Serum or Plasma"),
    Analyte.CRP: ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma"),
    Analyte.ESR: ("30341-2", "Erythrocyte sedimentation rate"),
    Analyte.KL6: None,
    Analyte.LYMPHOCYTES: ("731-0", "Lymphocytes [#/volume] in Blood by Automated count"),
    Analyte.CK: ("2157-6", "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma"),
    Analyte.ALT: ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
    Analyte.AST: ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
    Analyte.ALBUMIN: ("1751-7", "Albumin [Mass/volume] in Serum or Plasma"),
    Analyte.CREATININE: ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma"),
    Analyte.PAO2: ("2703-7", "Oxygen [Partial pressure] in Arterial blood"),
    Analyte.FIO2: ("3150-0", "Inhaled oxygen concentration"),
    Analyte.TACROLIMUS_TROUGH: ("11253-2", "Tacrolimus [Mass/volume] in Blood"),
}
#: An analyte in a unit of another kind of property than its canonical one has that property's LOINC code.
LOINC_OF_ANALYTE_UNIT: dict[tuple[Analyte, str], tuple[str, str]] = {
    (Analyte.CREATININE, "mg/dL"): ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
}
#: The UCUM spelling of each unit the registry stores lab results in (canonical units and those the forms convert).
UCUM_OF_UNIT: dict[str, str] = {
    "ng/mL": "ng/mL",
    "ug/L": "ug/L",
    "U/L": "U/L",
    "U/mL": "U/mL",
    "mg/L": "mg/L",
    "mg/dL": "mg/dL",
    "mm/h": "mm/h",
    "10^9/L": "10*9/L",
    "/uL": "/uL",
    "g/L": "g/L",
    "g/dL": "g/dL",
    "umol/L": "umol/L",
    "mmHg": "mm[Hg]",
    "fraction": "1",
    "%": "%",
}
#: Pulmonary function results: LOINC code and display (None: text only), UCUM unit.
PFT_CODES: dict[str, tuple[tuple[str, str] | None, str, str]] = {
    "fvc_l": (("19870-5", "Forced vital capacity [Volume] Respiratory system"), "L", "Forced vital capacity"),
    "fvc_pct_pred": (("19872-1", "FVC measured/predicted"), "%", "FVC, % of predicted"),
    "dlco_pct_pred": (None, "%", "DLCO, % of predicted"),
    "tlc_pct_pred": (None, "%", "Total lung capacity, % of predicted"),
}
#: The anti-MDA5 line blot: the one antibody test with a verified LOINC code (others: text and registry codes).
LOINC_OF_ANTIBODY_TEST: dict[tuple[Antibody, Assay], tuple[str, str]] = {
    (Antibody.ANTI_MDA5, Assay.LINE_BLOT): ("82424-3", "MDA5 Ab [Presence] in Serum by Line blot"),
}
#: UCUM spelling of antibody result units (arbitrary units as UCUM annotations).
UCUM_OF_ANTIBODY_UNIT: dict[AntibodyUnit, str] = {
    AntibodyUnit.INDEX: "{index}",
    AntibodyUnit.U_ML: "U/mL",
    AntibodyUnit.TITRE: "{titer}",
}
SMOKING_STATUS_LOINC = ("72166-2", "Tobacco smoking status")
SNOMED_OF_SMOKING: dict[Smoking, tuple[str, str]] = {
    Smoking.NEVER: ("266919005", "Never smoked tobacco (finding)"),
    Smoking.FORMER: ("8517006", "Ex-smoker (finding)"),
    Smoking.CURRENT: ("77176002", "Smoker (finding)"),
}
DERMATOMYOSITIS_SNOMED = ("396230008", "Dermatomyositis (disorder)")
ILD_SNOMED = ("233703007", "Interstitial lung disease (disorder)")
#: RxNorm ingredient (RXCUI) of each drug; None: not verified, or no single ingredient (text and registry code only).
RXNORM_OF_DRUG: dict[Drug, tuple[str, str] | None] = {
    Drug.TOFACITINIB: None,
    Drug.TACROLIMUS: ("42316", "tacrolimus"),
    Drug.GLUCOCORTICOID: None,  # a class in prednisone equivalents, not one ingredient
    Drug.METHYLPREDNISOLONE_PULSE: None,
    Drug.CYCLOPHOSPHAMIDE: ("3002", "cyclophosphamide"),
    Drug.IVIG: None,
    Drug.MYCOPHENOLATE: ("7145", "mycophenolic acid"),  # the active moiety of mycophenolate mofetil
    Drug.RITUXIMAB: ("121191", "rituximab"),
    Drug.CICLOSPORIN: ("3008", "cyclosporine"),
    Drug.AZATHIOPRINE: ("1256", "azathioprine"),
    Drug.METHOTREXATE: ("6851", "methotrexate"),
    Drug.HYDROXYCHLOROQUINE: ("5521", "hydroxychloroquine"),
    Drug.BARICITINIB: None,
    Drug.RUXOLITINIB: None,
    Drug.TOCILIZUMAB: None,
    Drug.BASILIXIMAB: None,
    Drug.PIRFENIDONE: None,
    Drug.NINTEDANIB: None,
    Drug.TMP_SMX_PROPHYLAXIS: ("10831", "sulfamethoxazole / trimethoprim"),
    Drug.PLASMA_EXCHANGE: None,
    Drug.PMX_DHP: None,
    Drug.ECMO: None,
}
#: UCUM spelling of dose units; a session is counted, an annotation.
UCUM_OF_DOSE_UNIT: dict[DoseUnit, str] = {
    DoseUnit.MG: "mg",
    DoseUnit.G: "g",
    DoseUnit.MG_KG: "mg/kg",
    DoseUnit.G_KG: "g/kg",
    DoseUnit.MG_M2: "mg/m2",
    DoseUnit.SESSION: "{session}",
}
#: Timing.repeat of each frequency (continuous: none, the registry code says it).
TIMING_OF_FREQUENCY: dict[Frequency, dict[str, Any] | None] = {
    Frequency.ONCE: {"count": 1},
    Frequency.DAILY: {"frequency": 1, "period": 1, "periodUnit": "d"},
    Frequency.BID: {"frequency": 2, "period": 1, "periodUnit": "d"},
    Frequency.TID: {"frequency": 3, "period": 1, "periodUnit": "d"},
    Frequency.WEEKLY: {"frequency": 1, "period": 1, "periodUnit": "wk"},
    Frequency.EVERY_2_WEEKS: {"frequency": 1, "period": 2, "periodUnit": "wk"},
    Frequency.EVERY_4_WEEKS: {"frequency": 1, "period": 4, "periodUnit": "wk"},
    Frequency.MONTHLY: {"frequency": 1, "period": 1, "periodUnit": "mo"},
    Frequency.THRICE_WEEKLY: {"frequency": 3, "period": 1, "periodUnit": "wk"},
    Frequency.CONTINUOUS: None,
}
#: CTCAE grade as the NCI Thesaurus concept (HL7 value set adverse-event-clinical-research-grades).
NCIT_OF_CTCAE_GRADE: dict[int, tuple[str, str]] = {
    1: ("C41338", "Grade 1 Mild Adverse Event"),
    2: ("C41339", "Grade 2 Moderate Adverse Event"),
    3: ("C41340", "Grade 3 Severe Adverse Event"),
    4: ("C41337", "Grade 4 Life Threatening or Disabling Adverse Event"),
    5: ("C48275", "Grade 5 Death Related to Adverse Event"),
}
#: AdverseEvent.severity (a required binding: mild, moderate, severe) of each CTCAE grade.
AE_SEVERITY_OF_GRADE: dict[int, tuple[str, str]] = {
    1: ("mild", "Mild"),
    2: ("moderate", "Moderate"),
    3: ("severe", "Severe"),
    4: ("severe", "Severe"),
    5: ("severe", "Severe"),
}
AE_OUTCOME_OF: dict[AdverseEventOutcome, tuple[str, str]] = {
    AdverseEventOutcome.RECOVERED: ("resolved", "Resolved"),
    AdverseEventOutcome.RECOVERING: ("recovering", "Recovering"),
    AdverseEventOutcome.NOT_RECOVERED: ("ongoing", "Ongoing"),
    AdverseEventOutcome.SEQUELAE: ("resolvedWithSequelae", "Resolved with Sequelae"),
    AdverseEventOutcome.FATAL: ("fatal", "Fatal"),
    AdverseEventOutcome.UNKNOWN: ("unknown", "Unknown"),
}
#: The FHIR data-absent reason of each missing-data code.
DATA_ABSENT_REASON_OF: dict[MissingCode, tuple[str, str]] = {
    MissingCode.UNKNOWN: ("unknown", "Unknown"),
    MissingCode.NOT_DONE: ("not-performed", "Not Performed"),
    MissingCode.NOT_APPLICABLE: ("not-applicable", "Not Applicable"),
    MissingCode.NOT_ASKED: ("not-asked", "Not Asked"),
}
#: Sheet columns the Bundle leaves out (docs/fhir.md says why): the birth date and the site, which narrow down who a
#: patient is; free text, which may name anyone; and what no element of R4 AdverseEvent or Condition holds. Every
#: other column is exported, and its missing-data codes become data-absent reasons.
LEFT_OUT: dict[str, tuple[str, ...]] = {
    "patients": ("site", "birth_date", "resp_symptom_onset_date", "gottron", "heliotrope_rash", "mechanics_hands",
                 "skin_ulcers", "fever", "arthritis", "muscle_weakness"),
    "adverse_events": ("term_detail", "led_to_discontinuation", "resolution_date"),
}  # fmt: skip
#: The resource types of the Bundle, in the order their counts are given.
RESOURCE_TYPES = ("Patient", "Condition", "Observation", "MedicationStatement", "Procedure", "AdverseEvent")


# --- reading ----------------------------------------------------------------------------------------------------------
def _read(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every sheet's live records in natural-key order, read in one snapshot (registry.sheets.snapshot)."""
    with snapshot(engine) as connection:
        return {sheet.name: live_rows(connection, sheet) for sheet in SHEETS}


# --- identifiers ------------------------------------------------------------------------------------------------------
_ID_ESCAPES = {".": "..", "_": ".-"}


def patient_id(study_id: str) -> str:
    """The Patient.id of ``study_id``: FHIR ids allow letters, digits, '-' and '.', study_ids also '_'. Escaping '.' as
    '..' and '_' as '.-' keeps distinct study_ids distinct (DM_1 and DM-1 stay apart); most study_ids are unchanged."""
    return re.sub(r"[._]", lambda match: _ID_ESCAPES[match.group()], study_id)


def _uuid(*parts: object) -> str:
    """The UUIDv5 of a record's kind and natural key: the same for the same record in every export and database."""
    return str(uuid.uuid5(UUID_NAMESPACE, "/".join(_text(part) for part in parts)))


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


# --- building blocks --------------------------------------------------------------------------------------------------
def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code} | ({"display": display} if display else {})


def _local(code_list: str, code: CodeList) -> dict[str, str]:
    """The registry's own coding of ``code`` (a member of a registry code list)."""
    return _coding(registry_system(code_list), code.value, code.label)


def _concept(*codings: dict[str, str] | None, text: str) -> dict[str, Any]:
    return {"coding": [c for c in codings if c], "text": text}


def _standard(system: str, code: tuple[str, str] | None) -> dict[str, str] | None:
    return None if code is None else _coding(system, *code)


def _absent(value: Missing) -> dict[str, Any]:
    """The data-absent-reason extension for an element that has no dataAbsentReason of its own."""
    return {"extension": [{"url": DATA_ABSENT_REASON_EXTENSION, "valueCode": DATA_ABSENT_REASON_OF[value.code][0]}]}


def _absent_reason(value: Missing) -> dict[str, Any]:
    """The dataAbsentReason CodeableConcept of an Observation (or component) whose value is a missing-data code."""
    return _concept(_coding(DATA_ABSENT_REASON, *DATA_ABSENT_REASON_OF[value.code]), text=value.code.label)


def _date_element(name: str, value: date | Missing | None) -> dict[str, Any]:
    """A date element ``name``: its value, the data-absent-reason extension on it (``_name``), or nothing."""
    if isinstance(value, Missing):
        return {f"_{name}": _absent(value)}
    return {} if value is None else {name: value.isoformat()}


def _quantity(value: float, unit: str, ucum: str | None) -> dict[str, Any]:
    return {"value": value, "unit": unit} | ({"system": UCUM, "code": ucum} if ucum else {})


def _category(code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [_coding(OBSERVATION_CATEGORY, code, display)]}]


def _value(value: Any, present: Mapping[str, Any]) -> dict[str, Any]:
    """An Observation's (or component's) value element(s) ``present`` for a value, its dataAbsentReason for a code,
    nothing for a blank."""
    if isinstance(value, Missing):
        return {"dataAbsentReason": _absent_reason(value)}
    return {} if value is None else dict(present)


# --- resources --------------------------------------------------------------------------------------------------------
class _Patient:
    """One patient's resources, built from their records."""

    def __init__(self, row: dict[str, Any], records: Mapping[str, list[dict[str, Any]]]) -> None:
        self.row = row
        self.study_id: str = row["study_id"]
        self.records = records
        self.full_url = f"urn:uuid:{_uuid('Patient', self.study_id)}"
        self.subject = {"reference": self.full_url}
        self.treatment_urls: list[tuple[dict[str, Any], str]] = []  # (treatment row, fullUrl), for AdverseEvents

    def resources(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(fullUrl, resource) of every resource of the patient, the Patient first."""
        yield self.full_url, self.patient()
        yield from self.conditions()
        yield from self.observations()
        for row in self.records["treatments"]:
            yield self.treatment(row)
        for row in self.records["adverse_events"]:
            yield self.adverse_event(row)

    def _entry(self, resource_type: str, *key: object) -> tuple[str, str]:
        """(fullUrl, id) of the resource of ``resource_type`` made from the record of natural ``key``."""
        identifier = _uuid(resource_type, self.study_id, *key)
        return f"urn:uuid:{identifier}", identifier

    def patient(self) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": patient_id(self.study_id),
            "identifier": [{"system": STUDY_ID_SYSTEM, "value": self.study_id}],
            "gender": Sex(self.row["sex"]).value,
        }
        for row in self.records["follow_up"]:
            if row["vital_status"] == VitalStatus.DEAD and row["death_date"] is not None:
                resource["deceasedDateTime"] = row["death_date"].isoformat()
        return resource

    def conditions(self) -> Iterator[tuple[str, dict[str, Any]]]:
        confirmed = {"coding": [_coding(CONDITION_VERIFICATION, "confirmed", "Confirmed")]}
        for key, code, text, onset in (
            (
                "dm",
                DERMATOMYOSITIS_SNOMED,
                "Dermatomyositis (or clinically amyopathic dermatomyositis)",
                "dm_diagnosis_date",
            ),
            ("ild", ILD_SNOMED, "Interstitial lung disease", "ild_diagnosis_date"),
        ):
            full_url, identifier = self._entry("Condition", key)
            yield (
                full_url,
                {
                    "resourceType": "Condition",
                    "id": identifier,
                    "verificationStatus": confirmed,
                    "code": _concept(_standard(SNOMED, code), _coding(registry_system("condition"), key), text=text),
                    "subject": self.subject,
                    **_date_element("onsetDateTime", self.row[onset]),
                },
            )
        rpild = self.row["rpild"]
        if rpild is None and self.row["ild_worsening_date"] is None:
            return
        full_url, identifier = self._entry("Condition", "rpild")
        resource: dict[str, Any] = {"resourceType": "Condition", "id": identifier}
        if isinstance(rpild, Missing):
            resource["verificationStatus"] = _absent(rpild)
        elif rpild is not None:  # unanswered (only a worsening date): no verification status is asserted
            status = ("confirmed", "Confirmed") if rpild else ("refuted", "Refuted")
            resource["verificationStatus"] = {"coding": [_coding(CONDITION_VERIFICATION, *status)]}
        resource |= {
            "code": _concept(
                _coding(registry_system("condition"), "rpild"), text="Rapidly progressive interstitial lung disease"
            ),
            "subject": self.subject,
            **_date_element("onsetDateTime", self.row["ild_worsening_date"]),
        }
        if self.row["rpild_definition"] is not None:
            definition = RpildDefinition(self.row["rpild_definition"])
            resource["evidence"] = [{"code": [_concept(_local("rpild-definition", definition), text=definition.label)]}]
        yield full_url, resource

    def observations(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.row["smoking"] is not None:
            yield self.smoking(self.row["smoking"])
        for row in self.records["antibody_tests"]:
            yield self.antibody(row)
        for row in self.records["labs"]:
            yield self.lab(row)
        for row in self.records["pfts"]:
            yield self.pft(row)
        for row in self.records["hrct"]:
            yield self.hrct(row)
        for row in self.records["follow_up"]:
            yield self.vital_status(row)

    def _observation(self, full_url: str, identifier: str, **elements: Any) -> tuple[str, dict[str, Any]]:
        return full_url, {
            "resourceType": "Observation",
            "id": identifier,
            "status": "final",
            **elements,
            "subject": self.subject,
        }

    def smoking(self, smoking: str | Missing) -> tuple[str, dict[str, Any]]:
        full_url, identifier = self._entry("Observation", "smoking")
        value = {}
        if not isinstance(smoking, Missing):
            status = Smoking(smoking)
            value = {
                "valueCodeableConcept": _concept(
                    _standard(SNOMED, SNOMED_OF_SMOKING[status]), _local("smoking", status), text=status.label
                )
            }
        return self._observation(
            full_url,
            identifier,
            category=_category("social-history", "Social History"),
            code=_concept(_standard(LOINC, SMOKING_STATUS_LOINC), text="Smoking history"),
            **_value(smoking, value),
        )

    def antibody(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        antibody, assay = Antibody(row["antibody"]), Assay(row["assay"])
        full_url, identifier = self._entry("Observation", "antibody", antibody.value, assay.value, row["sample_date"])
        grade = None if row["grade"] is None else AntibodyGrade(row["grade"])
        grade_concept = None if grade is None else _concept(_local("antibody-grade", grade), text=grade.label)
        elements: dict[str, Any] = {
            "category": _category("laboratory", "Laboratory"),
            "code": _concept(
                _standard(LOINC, LOINC_OF_ANTIBODY_TEST.get((antibody, assay))),
                _local("antibody", antibody),
                text=antibody.label,
            ),
            "effectiveDateTime": row["sample_date"].isoformat(),
            "method": _concept(_local("assay", assay), text=assay.label),
        }
        unit = None if row["unit"] is None else AntibodyUnit(row["unit"])
        if row["value"] is not None and unit is not None:
            elements["valueQuantity"] = _quantity(row["value"], unit.label, UCUM_OF_ANTIBODY_UNIT[unit])
            if grade_concept is not None:
                elements["component"] = [
                    {
                        "code": _concept(_coding(OBSERVATION_KIND, "antibody-grade"), text="Grade"),
                        "valueCodeableConcept": grade_concept,
                    }
                ]
        elif grade_concept is not None:
            elements["valueCodeableConcept"] = grade_concept
        cutoff = row["cutoff"]
        if isinstance(cutoff, Missing):
            elements["referenceRange"] = [{"high": _absent(cutoff), "text": "The kit's positivity cut-off"}]
        elif cutoff is not None:
            quantity = _quantity(cutoff, unit.label, UCUM_OF_ANTIBODY_UNIT[unit]) if unit else {"value": cutoff}
            elements["referenceRange"] = [
                {"high": quantity, "text": "The kit's positivity cut-off: positive at or above"}
            ]
        return self._observation(full_url, identifier, **elements)

    def lab(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        analyte, unit = Analyte(row["analyte"]), row["unit"]
        full_url, identifier = self._entry("Observation", "lab", analyte.value, row["sample_date"])
        loinc = LOINC_OF_ANALYTE_UNIT.get((analyte, unit), LOINC_OF_ANALYTE[analyte])
        return self._observation(
            full_url,
            identifier,
            category=_category("laboratory", "Laboratory"),
            code=_concept(_standard(LOINC, loinc), _local("analyte", analyte), text=analyte.label),
            effectiveDateTime=row["sample_date"].isoformat(),
            valueQuantity=_quantity(row["value"], unit, UCUM_OF_UNIT.get(unit)),
        )

    def pft(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        full_url, identifier = self._entry("Observation", "pft", row["test_date"])
        components = []
        for name, (loinc, unit, text) in PFT_CODES.items():
            value = row[name]
            present = {"valueQuantity": _quantity(value, unit, unit)} if not isinstance(value, Missing) else {}
            if value is not None:
                code = _concept(_standard(LOINC, loinc), _coding(OBSERVATION_KIND, f"pft-{name}"), text=text)
                components.append({"code": code, **_value(value, present)})
        elements: dict[str, Any] = {
            "category": _category("procedure", "Procedure"),
            "code": _concept(_coding(OBSERVATION_KIND, "pft"), text="Pulmonary function test"),
            "effectiveDateTime": row["test_date"].isoformat(),
        }
        if row["not_done_reason"] is not None:
            reason = PftNotDoneReason(row["not_done_reason"])
            elements["dataAbsentReason"] = _concept(
                _coding(DATA_ABSENT_REASON, "not-performed", "Not Performed"),
                _local("pft-not-done-reason", reason),
                text=reason.label,
            )
        if components:
            elements["component"] = components
        return self._observation(full_url, identifier, **elements)

    def hrct(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        full_url, identifier = self._entry("Observation", "hrct", row["scan_date"])
        components = []
        pattern = row["pattern"]
        if pattern is not None:
            present = {}
            if not isinstance(pattern, Missing):
                pattern = HrctPattern(pattern)
                present = {"valueCodeableConcept": _concept(_local("hrct-pattern", pattern), text=pattern.label)}
            code = _concept(_coding(OBSERVATION_KIND, "hrct-pattern"), text="Radiological pattern")
            components.append({"code": code, **_value(pattern, present)})
        for feature in HrctFeature:
            for zone in LungZone:
                name = f"{feature.value}_{zone.value}_pct"
                value = row[name]
                if value is None:
                    continue
                present = {} if isinstance(value, Missing) else {"valueQuantity": _quantity(value, "%", "%")}
                code = _concept(
                    _coding(OBSERVATION_KIND, f"hrct-{name}"), text=f"{feature.label} extent, {zone.label.lower()}"
                )
                components.append({"code": code, **_value(value, present)})
        score = row["total_score"]
        present = {} if isinstance(score, Missing) else {"valueQuantity": _quantity(score, "points", "{score}")}
        elements: dict[str, Any] = {
            "category": _category("imaging", "Imaging"),
            "code": _concept(
                _coding(OBSERVATION_KIND, "hrct-total-score"),
                text="Chest HRCT: total score by the site's scoring protocol",
            ),
            "effectiveDateTime": row["scan_date"].isoformat(),
            **_value(score, present),
        }
        if components:
            elements["component"] = components
        return self._observation(full_url, identifier, **elements)

    def vital_status(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        full_url, identifier = self._entry("Observation", "vital-status")
        status = VitalStatus(row["vital_status"])
        components = []
        if row["death_date"] is not None:
            components.append(
                {
                    "code": _concept(_coding(OBSERVATION_KIND, "death-date"), text="Date of death"),
                    "valueDateTime": row["death_date"].isoformat(),
                }
            )
        cause = row["death_cause"]
        if cause is not None:
            present = {}
            if not isinstance(cause, Missing):
                cause = DeathCause(cause)
                present = {"valueCodeableConcept": _concept(_local("death-cause", cause), text=cause.label)}
            code = _concept(_coding(OBSERVATION_KIND, "death-cause"), text="Principal cause of death")
            components.append({"code": code, **_value(cause, present)})
        transplant = row["lung_transplant_date"]
        if transplant is not None:
            present = {} if isinstance(transplant, Missing) else {"valueDateTime": transplant.isoformat()}
            code = _concept(_coding(OBSERVATION_KIND, "lung-transplant-date"), text="Date of lung transplantation")
            components.append({"code": code, **_value(transplant, present)})
        components.append(
            {
                "code": _concept(_coding(OBSERVATION_KIND, "lost-to-follow-up"), text="Lost to follow-up"),
                "valueBoolean": bool(row["lost_to_follow_up"]),
            }
        )
        return self._observation(
            full_url,
            identifier,
            code=_concept(_coding(OBSERVATION_KIND, "vital-status"), text="Vital status at last contact"),
            effectiveDateTime=row["last_contact_date"].isoformat(),
            valueCodeableConcept=_concept(_local("vital-status", status), text=status.label),
            component=components,
        )

    def treatment(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A drug episode as a MedicationStatement; a procedure (plasma exchange, PMX-DHP, ECMO) as a Procedure."""
        drug = Drug(row["drug"])
        procedure = DRUGS[drug].drug_class is DrugClass.PROCEDURE
        resource_type = "Procedure" if procedure else "MedicationStatement"
        full_url, identifier = self._entry(resource_type, "treatment", drug.value, row["start_date"])
        self.treatment_urls.append((row, full_url))
        end, stop = row["end_date"], row["stop_reason"]
        period = {"start": row["start_date"].isoformat(), **_date_element("end", end)}
        code = _concept(_standard(RXNORM, RXNORM_OF_DRUG[drug]), _local("drug", drug), text=drug.label)
        reason = None
        if isinstance(stop, Missing):
            reason = _absent(stop)
        elif stop is not None:
            reason = _concept(_local("stop-reason", StopReason(stop)), text=StopReason(stop).label)
        if procedure:
            status = "unknown" if isinstance(end, Missing) else "in-progress" if end is None else "completed"
            resource = {
                "resourceType": "Procedure",
                "id": identifier,
                "status": status,
                "code": code,
                "subject": self.subject,
                "performedPeriod": period,
            }
            if reason is not None:
                resource["statusReason"] = reason
            if note := _dosage_note(row):
                resource["note"] = [{"text": note}]
            return full_url, resource
        status = _medication_status(end, stop)
        resource = {
            "resourceType": "MedicationStatement",
            "id": identifier,
            "status": status,
            "medicationCodeableConcept": code,
            "subject": self.subject,
            "effectivePeriod": period,
        }
        if reason is not None:
            resource["statusReason"] = [reason]
        if dosage := _dosage(row):
            resource["dosage"] = [dosage]
        return full_url, resource

    def adverse_event(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        term = AdverseEventTerm(row["term"])
        full_url, identifier = self._entry("AdverseEvent", term.value, row["onset_date"])
        grade = int(row["ctcae_grade"])
        seriousness = ("serious", "Serious") if row["serious"] else ("non-serious", "Non-serious")
        resource: dict[str, Any] = {
            "resourceType": "AdverseEvent",
            "id": identifier,
            "actuality": "actual",
            "event": _concept(_local("adverse-event-term", term), text=term.label),
            "subject": self.subject,
            "date": row["onset_date"].isoformat(),
            "seriousness": {"coding": [_coding(AE_SERIOUSNESS, *seriousness)]},
            "severity": _concept(
                _coding(AE_SEVERITY, *AE_SEVERITY_OF_GRADE[grade]),
                _coding(NCI_THESAURUS, *NCIT_OF_CTCAE_GRADE[grade]),
                text=f"CTCAE v{CTCAE_VERSION} grade {grade}",
            ),
        }
        outcome = row["outcome"]
        if isinstance(outcome, Missing):
            resource["outcome"] = _absent(outcome)
        elif outcome is not None:
            outcome = AdverseEventOutcome(outcome)
            resource["outcome"] = _concept(
                _coding(AE_OUTCOME, *AE_OUTCOME_OF[outcome]),
                _local("adverse-event-outcome", outcome),
                text=outcome.label,
            )
        drug = row["attributed_drug"]
        if isinstance(drug, Missing):
            resource["suspectEntity"] = [{"instance": _absent(drug)}]
        elif drug is not None:
            resource["suspectEntity"] = [{"instance": self._suspect(Drug(drug), row["onset_date"])}]
        return full_url, resource

    def _suspect(self, drug: Drug, onset: date) -> dict[str, Any]:
        """A reference to the episode of ``drug`` the event happened in (or else the latest before it, or else the
        first after it); only the drug's name when the patient has no episode of it."""
        episodes = [(row, url) for row, url in self.treatment_urls if row["drug"] == drug]
        if not episodes:
            return {"display": drug.label}

        def rank(episode: tuple[dict[str, Any], str]) -> tuple[int, int]:
            row = episode[0]
            start, end = row["start_date"], row["end_date"]
            ongoing = not isinstance(end, date) or end >= onset
            if start <= onset and ongoing:
                return 0, -start.toordinal()
            return (1, -start.toordinal()) if start <= onset else (2, start.toordinal())

        return {"reference": min(episodes, key=rank)[1], "display": drug.label}


def _medication_status(end: date | Missing | None, stop: str | Missing | None) -> str:
    """active while ongoing; completed when the course ran out or remitted; stopped when ended for another reason."""
    if isinstance(end, Missing):
        return "unknown"
    if end is None:
        return "active"
    if stop is None or stop in (StopReason.COMPLETED, StopReason.REMISSION):
        return "completed"
    return "stopped"


def _dosage(row: dict[str, Any]) -> dict[str, Any]:
    """The Dosage of a drug episode: dose (in UCUM) and timing, each a data-absent reason when coded missing."""
    dosage: dict[str, Any] = {}
    frequency = row["frequency"]
    if isinstance(frequency, Missing):
        dosage["timing"] = _absent(frequency)
    elif frequency is not None:
        frequency = Frequency(frequency)
        timing: dict[str, Any] = {"code": _concept(_local("frequency", frequency), text=frequency.label)}
        if (repeat := TIMING_OF_FREQUENCY[frequency]) is not None:
            timing["repeat"] = repeat
        dosage["timing"] = timing
    dose = row["dose"]
    if isinstance(dose, Missing):
        dosage["doseAndRate"] = [{"doseQuantity": _absent(dose)}]
    elif dose is not None and row["dose_unit"] is not None:
        unit = DoseUnit(row["dose_unit"])
        dosage["doseAndRate"] = [{"doseQuantity": _quantity(dose, unit.value, UCUM_OF_DOSE_UNIT[unit])}]
    return dosage


def _dosage_note(row: dict[str, Any]) -> str:
    """A procedure's dose and frequency, which Procedure has no element for, as a note made from registry codes."""
    parts = []
    if row["dose"] is not None:
        unit = "" if row["dose_unit"] is None else f" {DoseUnit(row['dose_unit']).label}"
        parts.append(f"dose {row['dose']}" + ("" if isinstance(row["dose"], Missing) else unit))
    if row["frequency"] is not None:
        frequency = row["frequency"]
        parts.append(f"frequency {frequency if isinstance(frequency, Missing) else Frequency(frequency).label}")
    return "; ".join(parts)


# --- the Bundle -------------------------------------------------------------------------------------------------------
def _resources(sheets: Mapping[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    by_patient: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, rows in sheets.items():
        if name == "patients":
            continue
        for row in rows:
            by_patient.setdefault(row["study_id"], {}).setdefault(name, []).append(row)
    for row in sheets["patients"]:
        records = by_patient.get(row["study_id"], {})
        yield from _Patient(row, {name: records.get(name, []) for name in sheets if name != "patients"}).resources()


def build_bundle(engine: sa.Engine) -> Bundle:
    """The registry as a validated R4B transaction Bundle (a ``fhir.resources`` model): each resource validated by its
    own model, then the Bundle by its."""
    from fhir.resources.R4B import get_fhir_model_class

    entries = []
    for full_url, resource in _resources(_read(engine)):
        model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        entries.append({"fullUrl": full_url, "resource": model, "request": request})
    bundle_class = get_fhir_model_class("Bundle")
    return bundle_class.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def fhir_bundle(engine: sa.Engine) -> dict[str, Any]:
    """The registry as one FHIR R4 transaction Bundle, JSON-ready, every resource and the Bundle validated."""
    return build_bundle(engine).model_dump(mode="json", exclude_none=True, by_alias=True)


def counts(bundle: Bundle) -> dict[str, int]:
    """Resources per type in ``bundle``, in the order of :data:`RESOURCE_TYPES`."""
    found = {resource_type: 0 for resource_type in RESOURCE_TYPES}
    for entry in bundle.entry or []:
        found[entry.resource.get_resource_type()] += 1
    return found


def write_fhir(engine: sa.Engine, out: Path) -> dict[str, int]:
    """Write the Bundle as JSON to ``out``, whole or not at all; returns the resources per type."""
    bundle = build_bundle(engine)
    text = bundle.model_dump_json()
    with replacing(out) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return counts(bundle)
