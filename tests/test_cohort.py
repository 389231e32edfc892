"""The cohort builder, on small registries whose answers are worked out by hand."""

from datetime import date

import pytest

from registry.audit import audited_session
from registry.cohort import build_cohort
from registry.config import Config
from registry.ingest import import_sheets
from registry.models import Site
from registry.tables import load_tables
from registry.workbook import RawSheet

PATIENT = ["study_id", "site", "sex", "birth_date", "smoking", "ild_diagnosis_date", "rpild", "rpild_definition"]
MDA5 = ["study_id", "antibody", "assay", "sample_date", "grade", "value", "unit", "cutoff"]
TREAT = ["study_id", "drug", "start_date", "end_date"]
FOLLOW = ["study_id", "last_contact_date", "vital_status", "death_date"]


def raw(name, header, rows):
    return RawSheet(name, name, header, [(i, list(r)) for i, r in enumerate(rows, start=2)])


def patient(study_id, **changes):
    row = dict(
        zip(
            PATIENT,
            [study_id, "S", "female", "1970-01-01", "never", "2019-01-01", "no", "worsening_1_month"],
            strict=True,
        )
    )
    return [changes.get(k, v) for k, v in row.items()]


@pytest.fixture
def cohort_of(migrated):
    with audited_session(migrated, actor="t") as session:
        session.add(Site(code="S", name="Site"))
        session.commit()

    def build(patients, antibodies, treatments, follow_up, labs=(), config=None):
        sheets = [
            raw("patients", PATIENT, patients),
            raw("antibody_tests", MDA5, antibodies),
            raw("treatments", TREAT, treatments),
            raw("follow_up", FOLLOW + ["lung_transplant_date"] * (len(follow_up[0]) == 5), follow_up),
            raw("labs", ["study_id", "analyte", "sample_date", "value", "unit"], labs),
        ]
        result = import_sheets(migrated, sheets, actor="t", reason="test")
        assert result.errors == [], result.errors
        return build_cohort(load_tables(migrated), config or Config())

    return build


def mda5(study_id, grade="strong", day="2019-01-02"):
    return [study_id, "anti_mda5", "line_blot", day, grade, "", "", ""]


def test_group_index_time_and_landmarks(cohort_of):
    cohort = cohort_of(
        [patient("A"), patient("B"), patient("C"), patient("D")],
        [mda5("A"), mda5("B", "weak"), mda5("C", "moderate"), mda5("D")],
        [
            ["A", "tacrolimus", "2019-02-01", ""], ["A", "tofacitinib", "2019-03-01", ""],  # both: first wins
            ["B", "tofacitinib", "2019-02-01", ""],
            ["C", "tofacitinib", "2019-02-01", ""],
            ["D", "tacrolimus", "2019-02-01", ""],
        ],
        [
            ["A", "2019-08-03", "dead", "2019-08-03"],  # day 183: a death at the landmark counts by it
            ["B", "2019-08-20", "alive", ""],  # censored alive on day 200: known at 6 months, not at 1 year
            ["C", "2019-02-01", "alive", ""],  # zero follow-up
            ["D", "2020-06-01", "dead", "2020-06-01"],  # day 486
        ],
    )  # fmt: skip
    t = cohort.table
    assert t["group"].to_dict() == {"A": "tacrolimus", "B": "tofacitinib", "C": "tofacitinib", "D": "tacrolimus"}
    assert t["both_study_drugs"].to_dict() == {"A": True, "B": False, "C": False, "D": False}
    assert t["time_days"].to_dict() == {"A": 183, "B": 200, "C": 0, "D": 486}
    assert t["event"].to_dict() == {"A": 1, "B": 0, "C": 0, "D": 1}
    assert t["dead_by_183"].to_dict() == {"A": True, "B": False, "C": False, "D": False}
    assert t["status_known_183"].to_dict() == {"A": True, "B": True, "C": False, "D": True}
    assert t["status_known_365"].to_dict() == {"A": True, "B": False, "C": False, "D": True}
    assert t["anti_mda5_grade"].to_dict() == {"A": 3, "B": 1, "C": 2, "D": 3}
    assert round(t.loc["A", "age"], 4) == round((date(2019, 2, 1) - date(1970, 1, 1)).days / 365.25, 4)
    assert cohort.registered == 4 and cohort.excluded.empty


def test_lung_transplantation_is_the_competing_event_and_leaves_the_primary_analysis_alone(cohort_of):
    cohort = cohort_of(
        [patient(p) for p in "ABCDE"],
        [mda5(p) for p in "ABCDE"],
        [[p, "tofacitinib", "2019-02-01", ""] for p in "ABCDE"],
        [
            ["A", "2019-06-01", "dead", "2019-06-01", "2019-03-03"],  # transplanted on day 30, died on day 120
            ["B", "2019-12-01", "alive", "", "2019-05-02"],  # transplanted on day 90, alive
            ["C", "2019-12-01", "alive", "", "2019-01-15"],  # transplanted before the index date: not counted
            ["D", "2019-06-01", "dead", "2019-06-01", "2019-06-01"],  # on the day of death: the death counts
            ["E", "2019-06-01", "alive", "", "2019-07-01"],  # after the last contact: not counted
        ],
        config=Config(data_cutoff=date(2019, 12, 1)),
    )
    t = cohort.table
    assert t["cr_status"].to_dict() == {"A": 2, "B": 2, "C": 0, "D": 1, "E": 0}
    assert t["cr_time_days"].to_dict() == {"A": 30, "B": 90, "C": 303, "D": 120, "E": 120}
    assert t["transplant_date"].notna().to_dict() == {"A": True, "B": True, "C": False, "D": False, "E": False}
    assert t["event"].to_dict() == {"A": 1, "B": 0, "C": 0, "D": 1, "E": 0}  # death at any time, as before
    assert t["time_days"].to_dict() == {"A": 120, "B": 303, "C": 303, "D": 120, "E": 120}


def test_a_transplantation_after_the_data_cutoff_is_not_counted(cohort_of):
    cohort = cohort_of(
        [patient(p) for p in "ABCD"],
        [mda5(p) for p in "ABCD"],
        [[p, "tacrolimus", "2019-02-01", ""] for p in "ABCD"],
        [
            ["A", "2020-06-01", "alive", "", "2020-01-15"],  # transplanted after the cut-off: censored at it
            ["B", "2020-06-01", "dead", "2020-03-01", "2020-01-15"],  # both after the cut-off: censored at it
            ["C", "2020-06-01", "dead", "2020-03-01", "2019-12-01"],  # on the cut-off (day 303), died after it
            ["D", "2019-12-01", "dead", "2019-12-01", "2019-11-30"],  # the day before death, both by the cut-off
        ],
        config=Config(data_cutoff=date(2019, 12, 1)),
    )
    t = cohort.table
    assert t["cr_status"].to_dict() == {"A": 0, "B": 0, "C": 2, "D": 2}
    assert t["cr_time_days"].to_dict() == {"A": 303, "B": 303, "C": 303, "D": 302}
    assert t["transplant_date"].dt.strftime("%Y-%m-%d").fillna("").to_dict() == {
        "A": "", "B": "", "C": "2019-12-01", "D": "2019-11-30"
    }  # fmt: skip
    assert t["event"].to_dict() == {"A": 0, "B": 0, "C": 0, "D": 1}
    assert t["time_days"].to_dict() == {"A": 303, "B": 303, "C": 303, "D": 303}


def test_data_cutoff_censors_later_deaths_and_follow_up(cohort_of):
    cohort = cohort_of(
        [patient("A"), patient("B")],
        [mda5("A"), mda5("B")],
        [["A", "tofacitinib", "2019-02-01", ""], ["B", "tacrolimus", "2019-02-01", ""]],
        [["A", "2019-12-01", "dead", "2019-12-01"], ["B", "2020-05-01", "alive", ""]],
        config=Config(data_cutoff=date(2019, 6, 30)),
    )
    assert cohort.table["event"].to_dict() == {"A": 0, "B": 0}
    assert cohort.table["time_days"].to_dict() == {"A": 149, "B": 149}


def test_exclusions_are_counted_with_the_first_reason(cohort_of):
    cohort = cohort_of(
        [patient("OK"), patient("NODRUG"), patient("NEG"), patient("EARLY", ild_diagnosis_date="2016-05-01"),
         patient("NOFU"), patient("SAMEDAY"), patient("ELISA")],
        [mda5("OK"), mda5("NODRUG"), mda5("NEG", "negative"), mda5("EARLY"), mda5("NOFU"), mda5("SAMEDAY"),
         ["ELISA", "anti_mda5", "elisa", "2019-01-02", "", "31", "index", ""]],  # below the default cut-off of 32
        [["OK", "tofacitinib", "2019-02-01", ""], ["NEG", "tofacitinib", "2019-02-01", ""],
         ["EARLY", "tofacitinib", "2019-02-01", ""], ["NOFU", "tofacitinib", "2019-02-01", ""],
         ["SAMEDAY", "tofacitinib", "2019-02-01", ""], ["SAMEDAY", "tacrolimus", "2019-02-01", ""],
         ["ELISA", "tacrolimus", "2019-02-01", ""], ["NODRUG", "mycophenolate", "2019-02-01", ""]],
        [[s, "2019-06-01", "alive", ""] for s in ("OK", "NODRUG", "NEG", "EARLY", "SAMEDAY", "ELISA")],
    )  # fmt: skip
    assert list(cohort.table.index) == ["OK"]
    assert dict(zip(cohort.excluded["study_id"], cohort.excluded["reason"], strict=True)) == {
        "NODRUG": "no tofacitinib or tacrolimus course",
        "NEG": "anti-MDA5 not positive or not tested",
        "EARLY": "ILD diagnosed outside the enrolment window",
        "NOFU": "no follow-up (vital status) record",
        "SAMEDAY": "tofacitinib and tacrolimus started the same day",
        "ELISA": "anti-MDA5 not positive or not tested",
    }
    assert cohort.exclusion_counts()["anti-MDA5 not positive or not tested"] == 2


def test_baseline_value_is_the_nearest_within_the_window_and_steroid_sparing_overlap(cohort_of):
    cohort = cohort_of(
        [patient("A"), patient("B")],
        [mda5("A"), mda5("B")],
        [["A", "tofacitinib", "2019-02-01", ""], ["A", "cyclophosphamide", "2018-12-01", "2019-01-05"],
         ["B", "tacrolimus", "2019-02-01", ""], ["B", "cyclophosphamide", "2018-11-01", "2018-11-30"]],
        [["A", "2019-06-01", "alive", ""], ["B", "2019-06-01", "alive", ""]],
        labs=[["A", "ferritin", "2019-01-27", "900", "ng/mL"], ["A", "ferritin", "2019-02-06", "1500", "ng/mL"],
              ["A", "ferritin", "2019-01-30", "1000", "ng/mL"], ["B", "ferritin", "2018-12-01", "700", "ng/mL"]],
    )  # fmt: skip
    assert cohort.table.loc["A", "ferritin"] == 1000  # 2 days before beats 5 after
    assert cohort.table["ferritin"].isna().to_dict() == {"A": False, "B": True}  # B's is 62 days away
    assert cohort.table["steroid_sparing"].to_dict() == {
        "A": 1,
        "B": 0,
    }  # A's ended 27 days before the index date, inside the 30-day window


def test_safety_flags_count_events_from_the_index_date(cohort_of, migrated):
    cohort_of(
        [patient("A"), patient("B"), patient("C")],
        [mda5("A"), mda5("B"), mda5("C")],
        [["A", "tofacitinib", "2019-02-01", "2019-03-01"], ["B", "tacrolimus", "2019-02-01", ""],
         ["C", "tacrolimus", "2019-02-01", ""]],
        [[s, "2019-06-01", "alive", ""] for s in "ABC"],
    )  # fmt: skip
    sheet = raw(
        "adverse_events",
        ["study_id", "onset_date", "term", "ctcae_grade", "serious", "attributed_drug", "led_to_discontinuation"],
        [["A", "2019-02-20", "herpes_zoster", "2", "no", "tofacitinib", "yes"],
         ["B", "2019-01-20", "pjp", "4", "yes", "", "no"],  # before the index date: not counted
         ["C", "2019-03-01", "cytopenia", "3", "no", "mycophenolate", "yes"]],  # another drug stopped
    )  # fmt: skip
    assert import_sheets(migrated, [sheet], actor="t", reason="test").written
    t = build_cohort(load_tables(migrated), Config()).table
    assert t["ae_any"].to_dict() == {"A": True, "B": False, "C": True}
    assert t["ae_serious_or_grade3"].to_dict() == {"A": False, "B": False, "C": True}
    assert t["ae_herpes_zoster"].to_dict() == {"A": True, "B": False, "C": False}
    assert t["discontinuation"].to_dict() == {"A": True, "B": False, "C": False}


def test_an_empty_registry_gives_an_empty_cohort(migrated):
    cohort = build_cohort(load_tables(migrated), Config())
    assert cohort.table.empty and cohort.registered == 0
    assert cohort.why_empty() == "the registry holds no patients"


def test_patients_without_a_study_drug_are_excluded_not_a_crash(cohort_of):
    cohort = cohort_of([patient("A"), patient("B")], [mda5("A"), mda5("B")], [], [["A", "2020-01-01", "alive", ""]])
    assert cohort.table.empty
    assert cohort.exclusion_counts() == {"no tofacitinib or tacrolimus course": 2}
    assert cohort.why_empty() == "every patient was excluded: no tofacitinib or tacrolimus course 2"
