"""Rules across rows and tables, as vectorised pandas: one function per rule.

Each function takes the :class:`Registry` (the typed tables and what is derived from
them once: index treatment, death and last contact per patient, every dated record
in long form) and returns the failing records as rows of
``table, record, patient_id, field, value``. No function loops over records.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cached_property

import numpy as np
import pandas as pd

from registry.codes import OTHER_MYOSITIS_SPECIFIC, AdverseEventOutcome, Antibody, VitalStatus
from registry.config import Config
from registry.definitions import index_treatment, positive, with_index
from registry.quality.catalogue import CATALOGUE, DUPLICATE_KEY, PREFIX, REFERENCE
from registry.tables import DAY, NEVER

FINDING_COLUMNS = ["table", "record", "patient_id", "field", "value"]
#: Primary key of each table (follow_up has one row per patient).
RECORD_KEY = {name: "patient_id" if name == "follow_up" else "id" for name in PREFIX}
#: The column naming the patient a record belongs to, where it is not ``patient_id``.
OWNER: dict[str, str | None] = {"site": None, "patient": "id"}
#: The dated fields of each table, checked against death, last contact, cut-off and today.
DATED = {
    "patient": ["dm_diagnosis_date", "ild_diagnosis_date", "resp_symptom_onset_date", "ild_worsening_date"],
    "antibody_test": ["sample_date"],
    "lab_result": ["sample_date"],
    "pft": ["test_date"],
    "hrct": ["scan_date"],
    "treatment": ["start_date", "end_date"],
    "adverse_event": ["onset_date", "resolution_date"],
    "follow_up": ["last_contact_date", "death_date", "lung_transplant_date"],
}

#: Columns read, by table.
Reads = Mapping[str, Collection[str]]


def reading(*parts: Reads) -> dict[str, frozenset[str]]:
    """The columns read by all of ``parts``."""
    merged: dict[str, set[str]] = {}
    for part in parts:
        for table, names in part.items():
            merged.setdefault(table, set()).update(names)
    return {table: frozenset(names) for table, names in merged.items()}


def columns(table: str, *fields: str) -> Reads:
    """A record's key and patient, as :func:`found` reads them, and ``fields`` of it."""
    owner = OWNER.get(table, "patient_id")
    return {table: {RECORD_KEY[table], *([owner] if owner else []), *fields}}


#: What :attr:`Registry.index` reads (:func:`registry.definitions.index_treatment`).
INDEX = {"treatment": ("patient_id", "drug", "start_date")}
#: What :attr:`Registry.dates` reads.
DATES = reading(*(columns(table, *fields) for table, fields in DATED.items()))
#: What :attr:`Registry.dates_and_births` reads.
DATES_AND_BIRTHS = reading(DATES, columns("patient", "birth_date"))
#: What :func:`_index_courses` reads.
INDEX_COURSES = reading(INDEX, columns("treatment", "drug", "start_date"))
#: What :func:`_events_with_courses` reads of the courses.
COURSES = {"treatment": ("patient_id", "drug", "start_date", "end_date")}
#: What :func:`registry.definitions.positive` reads.
POSITIVE = ("antibody", "grade", "value", "cutoff")


@dataclass
class Registry:
    tables: dict[str, pd.DataFrame]
    config: Config
    today: date

    @cached_property
    def patient_ids(self) -> pd.Index:
        return pd.Index(self.tables["patient"]["id"])

    @cached_property
    def index(self) -> pd.DataFrame:
        return index_treatment(self.tables["treatment"])

    @cached_property
    def follow_up(self) -> pd.DataFrame:
        return self.tables["follow_up"].drop_duplicates("patient_id").set_index("patient_id")

    @cached_property
    def patient(self) -> pd.DataFrame:
        """The patients by id, for the rules that hold a record against its patient's dates."""
        return self.tables["patient"].set_index("id")

    @cached_property
    def dates(self) -> pd.DataFrame:
        """Every recorded date, one row each: table, record, patient_id, field, value (cut from whole arrays into
        one frame: a frame per field was most of the date rules' time on one patient's few records)."""
        parts = []
        for table, fields in DATED.items():
            frame = self.tables[table]
            record, patient = frame[RECORD_KEY[table]].array, frame[OWNER.get(table, "patient_id")].array
            for name in fields:
                values = frame[name].to_numpy()
                dated = ~np.isnat(values)
                parts.append((table, record[dated], patient[dated], name, values[dated]))
        counts = [len(part[-1]) for part in parts]
        return pd.DataFrame(
            {
                "table": np.repeat(np.array([part[0] for part in parts], dtype=object), counts),
                "record": pd.concat([pd.Series(part[1]) for part in parts], ignore_index=True),
                "patient_id": pd.concat([pd.Series(part[2]) for part in parts], ignore_index=True),
                "field": np.repeat(np.array([part[3] for part in parts], dtype=object), counts),
                "value": np.concatenate([part[4] for part in parts]),
            }
        )

    @cached_property
    def dates_and_births(self) -> pd.DataFrame:
        """Every recorded date and every birth date, for the rules that hold a birth date like any other date."""
        births = found(self.tables["patient"], "patient", "birth_date")
        return pd.concat([self.dates, births[births["value"].notna()]], ignore_index=True)


#: No finding, as a rule returns it to the engine (shared: never changed in place).
NOTHING = pd.DataFrame(columns=FINDING_COLUMNS)


def found(frame: pd.DataFrame, table: str, field: str) -> pd.DataFrame:
    """The rows of ``frame`` (records of ``table``) as findings about ``field``."""
    if frame.empty:  # most rules on one patient's records (building an empty frame was a tenth of a save's check)
        return NOTHING
    owner = OWNER.get(table, "patient_id")
    return pd.DataFrame(
        {
            "table": table,
            "record": frame[RECORD_KEY[table]],
            "patient_id": frame[owner] if owner else None,
            "field": field,
            "value": frame.get(field, None),
        }
    )


def patients_without(registry: Registry, having: pd.Index | pd.Series, field: str) -> pd.DataFrame:
    """Patients whose id is not in ``having``: a per-patient completeness finding."""
    patients = registry.tables["patient"]
    missing = patients[~patients["id"].isin(having)].assign(**{field: None})
    return found(missing, "patient", field)


CrossRule = Callable[[Registry], pd.DataFrame]
CROSS_RULES: dict[str, CrossRule] = {}
#: The columns each cross rule reads, by table: a change to none of them cannot change its findings, so a save's
#: check runs only the rules reading what the save changed. Declared beside each rule, and held to it by the tests
#: (each rule run on its declared columns alone finds what it finds on the whole tables).
READS: dict[str, Reads] = {}


def cross(rule_id: str, *reads: Reads) -> Callable[[CrossRule], CrossRule]:
    def register(function: CrossRule) -> CrossRule:
        CROSS_RULES[rule_id], READS[rule_id] = function, reading(*reads)
        return function

    return register


# --- generic rules: references and natural-key duplicates, every table ------------------------


def _reference_rule(table: str, field: str, parent: str) -> CrossRule:
    def check(registry: Registry) -> pd.DataFrame:
        frame = registry.tables[table]
        orphans = frame[frame[field].notna() & ~frame[field].isin(registry.tables[parent]["id"])]
        return found(orphans, table, field)

    return check


def _duplicate_rule(table: str, key: tuple[str, ...]) -> CrossRule:
    def check(registry: Registry) -> pd.DataFrame:
        frame = registry.tables[table]
        if len(frame) < 2:  # no twins (one patient's records: often a single one)
            return NOTHING
        keyed = frame[frame[list(key)].notna().all(axis=1)]
        twins = keyed[keyed.duplicated(list(key), keep=False)]
        return found(twins, table, key[-1])

    return check


for _table, _prefix in PREFIX.items():
    if (reference := CATALOGUE.get(f"{_prefix}-{REFERENCE}")) is not None:
        _parent = "site" if _table == "patient" else "patient"
        CROSS_RULES[reference.id] = _reference_rule(_table, reference.fields[0], _parent)
        READS[reference.id] = reading(columns(_table, reference.fields[0]), {_parent: ["id"]})
    duplicate = CATALOGUE[f"{_prefix}-{DUPLICATE_KEY}"]
    CROSS_RULES[duplicate.id] = _duplicate_rule(_table, duplicate.fields)
    READS[duplicate.id] = reading(columns(_table, *duplicate.fields))


# --- completeness, per patient ----------------------------------------------------------------


@cross("ABT-010", columns("patient"), {"antibody_test": ["patient_id", "antibody"]})
def _no_anti_mda5(registry: Registry) -> pd.DataFrame:
    tests = registry.tables["antibody_test"]
    return patients_without(registry, tests.loc[tests["antibody"] == Antibody.ANTI_MDA5, "patient_id"], "antibody")


@cross("TRT-010", columns("patient"), INDEX)
def _no_index_treatment(registry: Registry) -> pd.DataFrame:
    return patients_without(registry, registry.index.index, "drug")


@cross("FUP-010", columns("patient"), {"follow_up": ["patient_id"]})
def _no_follow_up(registry: Registry) -> pd.DataFrame:
    return patients_without(registry, registry.tables["follow_up"]["patient_id"], "vital_status")


def _without_baseline(registry: Registry, table: str, date_field: str) -> pd.DataFrame:
    """Treated patients without a ``table`` record within the baseline window of the index date."""
    rows = with_index(registry.tables[table], registry.index, ["index_date"])
    near = (rows[date_field] - rows["index_date"]).dt.days.abs() <= registry.config.baseline_window_days
    untreated = registry.patient_ids.difference(registry.index.index)  # TRT-010 reports them
    return patients_without(registry, untreated.append(pd.Index(rows.loc[near, "patient_id"])), date_field)


@cross("PFT-010", columns("patient"), INDEX, {"pft": ["patient_id", "test_date"]})
def _no_baseline_pft(registry: Registry) -> pd.DataFrame:
    return _without_baseline(registry, "pft", "test_date")


@cross("HRC-010", columns("patient"), INDEX, {"hrct": ["patient_id", "scan_date"]})
def _no_baseline_hrct(registry: Registry) -> pd.DataFrame:
    return _without_baseline(registry, "hrct", "scan_date")


# --- study rules ------------------------------------------------------------------------------


def _patients(
    registry: Registry, ids: pd.Index | pd.Series, field: str, values: pd.Series | None = None
) -> pd.DataFrame:
    patients = registry.tables["patient"].set_index("id", drop=False)
    rows = patients.loc[patients.index.intersection(pd.Index(ids))]
    if values is not None:
        rows[field] = values.reindex(rows.index)
    return found(rows, "patient", field)


@cross("STU-001", columns("patient"), {"antibody_test": ["patient_id", *POSITIVE]})
def _anti_mda5_negative(registry: Registry) -> pd.DataFrame:
    tests = registry.tables["antibody_test"]
    mda5 = tests[tests["antibody"] == Antibody.ANTI_MDA5]
    ever_positive = positive(mda5).groupby(mda5["patient_id"]).any()
    return _patients(registry, ever_positive.index[~ever_positive], "antibody")


@cross("STU-003", columns("patient", "ild_diagnosis_date"))
def _outside_enrolment(registry: Registry) -> pd.DataFrame:
    patients = registry.tables["patient"]
    start, end = pd.Timestamp(registry.config.enrolment_start), pd.Timestamp(registry.config.enrolment_end)
    dx = patients["ild_diagnosis_date"]
    outside = patients[dx.notna() & ~dx.between(start, end)]
    return found(outside, "patient", "ild_diagnosis_date")


@cross("STU-004", columns("patient"), INDEX)
def _both_study_drugs(registry: Registry) -> pd.DataFrame:
    both = registry.index[registry.index["both_study_drugs"] & ~registry.index["same_day_start"]]
    return _patients(registry, both.index, "drug", both["group"])


@cross("STU-005", columns("patient"), INDEX)
def _same_day_start(registry: Registry) -> pd.DataFrame:
    same = registry.index[registry.index["same_day_start"]]
    return _patients(registry, same.index, "start_date", same["index_date"])


@cross("STU-008", INDEX, INDEX_COURSES)
def _index_outside_enrolment(registry: Registry) -> pd.DataFrame:
    start, end = pd.Timestamp(registry.config.enrolment_start), pd.Timestamp(registry.config.enrolment_end)
    index = registry.index
    outside = index[~index["index_date"].between(start, end)]
    return found(_index_courses(registry, outside.index), "treatment", "start_date")


@cross("STU-007", columns("antibody_test", *POSITIVE))
def _second_myositis_antibody(registry: Registry) -> pd.DataFrame:
    tests = registry.tables["antibody_test"]
    other = tests[tests["antibody"].isin(OTHER_MYOSITIS_SPECIFIC) & positive(tests)]
    return found(other, "antibody_test", "antibody")


# --- treatments and adverse events ------------------------------------------------------------


@cross("TRT-014", columns("treatment", "drug", "start_date", "end_date"))
def _overlapping_courses(registry: Registry) -> pd.DataFrame:
    courses = registry.tables["treatment"].sort_values(["patient_id", "drug", "start_date"])
    keys = [courses["patient_id"], courses["drug"]]
    latest_end = courses["end_date"].fillna(NEVER).groupby(keys).cummax()  # ongoing: never ends
    previous_end = latest_end.groupby(keys).shift()
    return found(courses[courses["start_date"] <= previous_end], "treatment", "start_date")


def _events_with_courses(registry: Registry) -> pd.DataFrame:
    events = registry.tables["adverse_event"]
    courses = registry.tables["treatment"][["patient_id", "drug", "start_date", "end_date"]]
    return events[events["attributed_drug"].notna()].merge(
        courses, left_on=["patient_id", "attributed_drug"], right_on=["patient_id", "drug"], how="left"
    )


@cross("AEV-010", columns("adverse_event", "attributed_drug", "onset_date"), COURSES)
def _onset_outside_course(registry: Registry) -> pd.DataFrame:
    pairs = _events_with_courses(registry)
    pairs = pairs[pairs["start_date"].notna()]
    window = registry.config.adverse_event_window_days * DAY
    within = (pairs["onset_date"] >= pairs["start_date"]) & (
        pairs["onset_date"] <= pairs["end_date"].fillna(NEVER) + window
    )
    inside = within.groupby(pairs["id"]).any()
    events = registry.tables["adverse_event"]
    return found(events[events["id"].isin(inside.index[~inside])], "adverse_event", "onset_date")


@cross("AEV-011", columns("adverse_event", "attributed_drug"), COURSES)
def _drug_never_given(registry: Registry) -> pd.DataFrame:
    pairs = _events_with_courses(registry)
    never = pairs.loc[pairs["start_date"].isna(), "id"]
    events = registry.tables["adverse_event"]
    return found(events[events["id"].isin(never)], "adverse_event", "attributed_drug")


def _death_date(registry: Registry, patient_ids: pd.Series) -> pd.Series:
    return patient_ids.map(registry.follow_up["death_date"])


@cross("AEV-012", columns("adverse_event", "onset_date"), {"follow_up": ["patient_id", "death_date"]})
def _onset_after_death(registry: Registry) -> pd.DataFrame:
    events = registry.tables["adverse_event"]
    late = events[events["onset_date"] > _death_date(registry, events["patient_id"])]
    return found(late, "adverse_event", "onset_date")


@cross("AEV-015", columns("adverse_event", "outcome"), {"follow_up": ["patient_id", "vital_status"]})
def _fatal_but_alive(registry: Registry) -> pd.DataFrame:
    events = registry.tables["adverse_event"]
    status = events["patient_id"].map(registry.follow_up["vital_status"])
    fatal = events[(events["outcome"] == AdverseEventOutcome.FATAL) & (status != VitalStatus.DEAD)]
    return found(fatal, "adverse_event", "outcome")


@cross("FUP-012", columns("follow_up", "death_date"), INDEX)
def _death_before_index(registry: Registry) -> pd.DataFrame:
    fu = registry.tables["follow_up"]
    return found(fu[fu["death_date"] < fu["patient_id"].map(registry.index["index_date"])], "follow_up", "death_date")


# --- dates across tables ----------------------------------------------------------------------


@cross("TIM-001", DATES, {"follow_up": ["patient_id", "death_date"]})
def _after_death(registry: Registry) -> pd.DataFrame:
    dates = registry.dates
    own = (dates["table"] == "adverse_event") & (dates["field"] == "onset_date")  # AEV-012 reports these
    own |= (dates["table"] == "follow_up") & (dates["field"] == "death_date")
    return dates[~own & (dates["value"] > _death_date(registry, dates["patient_id"]))]


@cross("TIM-002", DATES, {"follow_up": ["patient_id", "last_contact_date"]})
def _after_last_contact(registry: Registry) -> pd.DataFrame:
    """The records dated after the last contact, and the last contact itself: either may be the wrong date."""
    dates = registry.dates
    last = dates["patient_id"].map(registry.follow_up["last_contact_date"])
    late = dates[(dates["table"] != "follow_up") & (dates["value"] > last)]
    contacts = dates[(dates["table"] == "follow_up") & (dates["field"] == "last_contact_date")]
    return pd.concat([late, contacts[contacts["patient_id"].isin(late["patient_id"])]], ignore_index=True)


@cross("TIM-003", DATES)
def _after_cutoff(registry: Registry) -> pd.DataFrame:
    if registry.config.data_cutoff is None:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    dates = registry.dates
    followed = (dates["table"] == "follow_up") & (dates["field"] == "last_contact_date")  # runs on past a cut-off
    return dates[~followed & (dates["value"] > pd.Timestamp(registry.config.data_cutoff))]


@cross("TIM-004", DATES_AND_BIRTHS)
def _in_the_future(registry: Registry) -> pd.DataFrame:
    dates = registry.dates_and_births
    return dates[dates["value"] > pd.Timestamp(registry.today)]


def _index_courses(registry: Registry, patient_ids: pd.Index | pd.Series) -> pd.DataFrame:
    """The index course of each of ``patient_ids``: the first course of the patient's group, on the index date."""
    courses = registry.tables["treatment"]
    index = registry.index.loc[registry.index.index.intersection(pd.Index(patient_ids))]
    if index.empty:  # no such patient (most often): a merge costs milliseconds even on no rows
        return courses.iloc[:0]
    first = courses.merge(index[["group", "index_date"]], left_on="patient_id", right_index=True).rename_axis(None)
    return first[(first["drug"] == first["group"]) & (first["start_date"] == first["index_date"])]


@cross("TIM-005", columns("patient", "ild_diagnosis_date"), INDEX, INDEX_COURSES)
def _drug_before_ild(registry: Registry) -> pd.DataFrame:
    """Both dates: the ILD diagnosis and the index course's start (a finding named only the diagnosis, which is
    as often the right date as the start)."""
    patients = registry.tables["patient"]
    index_date = patients["id"].map(registry.index["index_date"])
    early = patients[index_date < patients["ild_diagnosis_date"]]
    courses = _index_courses(registry, early["id"])
    return pd.concat([found(early, "patient", "ild_diagnosis_date"), found(courses, "treatment", "start_date")])


#: Dates a spreadsheet makes of an empty or zero cell: day 0 of Excel's 1900 system (1899-12-31, or 1899-12-30 as
#: LibreOffice and most libraries count it), day 1 (1900-01-01) and day 0 of the 1904 system (1904-01-01).
SPREADSHEET_DEFAULT_DATES = pd.to_datetime(["1899-12-30", "1899-12-31", "1900-01-01", "1904-01-01"]).as_unit("s")
#: How long before the first of the DM and ILD diagnoses a record is unusual (TIM-007).
LONG_BEFORE_DIAGNOSIS_DAYS = 730


def _dated_records(registry: Registry) -> pd.DataFrame:
    """The dates of the patients' records, birth dates and default dates aside (TIM-008 reports those)."""
    dates = registry.dates
    return dates[(dates["table"] != "patient") & ~dates["value"].isin(SPREADSHEET_DEFAULT_DATES)]


def _of_patients(registry: Registry, dates: pd.DataFrame, field: str) -> pd.Series:
    return dates["patient_id"].map(registry.patient[field])


@cross("TIM-006", DATES, columns("patient", "birth_date"))
def _before_birth(registry: Registry) -> pd.DataFrame:
    dates = _dated_records(registry)
    return dates[dates["value"] < _of_patients(registry, dates, "birth_date")]


@cross("TIM-007", DATES, columns("patient", "birth_date", "dm_diagnosis_date", "ild_diagnosis_date"))
def _long_before_diagnosis(registry: Registry) -> pd.DataFrame:
    dates = _dated_records(registry)
    dates = dates[(dates["table"] != "follow_up") & (dates["value"] >= _of_patients(registry, dates, "birth_date"))]
    first = registry.patient[["dm_diagnosis_date", "ild_diagnosis_date"]].min(axis=1)
    return dates[dates["value"] < dates["patient_id"].map(first) - LONG_BEFORE_DIAGNOSIS_DAYS * DAY]


@cross("TIM-008", DATES_AND_BIRTHS)
def _spreadsheet_default_date(registry: Registry) -> pd.DataFrame:
    dates = registry.dates_and_births
    return dates[dates["value"].isin(SPREADSHEET_DEFAULT_DATES)]


# --- uniqueness -------------------------------------------------------------------------------


#: What makes two patients probably one (PAT-018).
DUPLICATE_PATIENT_KEY = ["site_id", "sex", "birth_date", "dm_diagnosis_date"]


@cross("PAT-018", columns("patient", "study_id", *DUPLICATE_PATIENT_KEY))
def _duplicate_patients(registry: Registry) -> pd.DataFrame:
    patients = registry.tables["patient"]
    key = DUPLICATE_PATIENT_KEY
    keyed = patients[patients[key].notna().all(axis=1)]
    twins = keyed[keyed.duplicated(key, keep=False)]
    return found(twins, "patient", "study_id")


@cross("LAB-015", columns("lab_result", "analyte", "sample_date", "value"))
def _double_entry(registry: Registry) -> pd.DataFrame:
    labs = registry.tables["lab_result"].sort_values(["patient_id", "analyte", "sample_date"])
    group = labs.groupby(["patient_id", "analyte"])
    day_after = (labs["sample_date"] - group["sample_date"].shift()).dt.days == 1
    return found(labs[day_after & (labs["value"] == group["value"].shift())], "lab_result", "value")
