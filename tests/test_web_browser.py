"""The web application in a real headless Chromium (Debian's, driven by Playwright).

The server is uvicorn on a loopback port in a background thread; screenshots of each
step go to test-artifacts/ (REGISTRY_TEST_ARTIFACTS overrides the folder).
"""

import contextlib
import os
import re
import shutil
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import WEB_PASSWORD as PASSWORD
from conftest import served

import registry
from registry.codes import LungZone
from registry.models import AuditLog
from registry.web.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("REGISTRY_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))

if os.environ.get("CI"):  # CI installs both; there a missing one is a failure, never a skip
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium for the browser tests", pytrace=False)
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture
def server(web_registry):
    with served(create_app(web_registry, secret_key="browser-test")) as url:
        yield url


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


#: How long a step may wait (ms). A save and the patient page run the patient's data-quality checks: seconds on a busy
#: machine, more the first time a process builds them. Speed is the benchmarks' business, not a browser test's.
TIMEOUT = 30_000


def new_page(browser, **context):
    """A page of its own browser context (``context``: its options): its own cookies, so its own session."""
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(TIMEOUT)
    return page


@pytest.fixture
def page(browser):
    return new_page(browser)


def focused(page, expected: str) -> str:
    """The id of the focused element once ``expected`` has it or the page's timeout has passed: Chromium applies
    ``autofocus`` at its next rendering update, not as the page loads."""
    script = "id => document.activeElement && document.activeElement.id === id"
    with contextlib.suppress(sync_api.TimeoutError):  # the assertion shows what has the focus instead
        page.wait_for_function(script, arg=expected)
    return page.evaluate("document.activeElement.id")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def test_sign_in_find_a_patient_and_read_the_record(server, page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server}/patients/EX-002")
    assert page.url == f"{server}/login?next=/patients/EX-002"
    page.fill("#username", "cora")
    page.fill("#password", "wrong password!")
    page.click("button[type=submit]")
    assert page.text_content("[role=alert]") == "Wrong user name or password."
    shot(page, "01-sign-in-refused")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{server}/patients/EX-002"
    assert page.text_content("h1") == "EX-002"
    assert page.locator("td", has_text="<script>alert(1)</script>").count() == 2  # the event and its history
    assert dialogs == []  # shown as text, never run
    shot(page, "02-patient-page")
    page.click("text=All patients")
    page.fill("#q", "00")
    page.click("text=Search")
    assert page.locator("tbody tr").count() == 4
    shot(page, "03-patient-list")
    page.goto(f"{server}/patients/EX-901")
    assert page.text_content("h1") == "Not found"  # another site's patient
    page.click("text=All patients")
    page.click("text=Sign out")
    assert page.url == f"{server}/login"


NEW_PATIENT = {
    "study_id": "EX-200",
    "site": "DEMO",
    "sex": "female",
    "birth_date": "1970-03-04",
    "smoking": "never",
    "ild_diagnosis_date": "2020-02-01",
    "rpild": "yes",
    "rpild_definition": "worsening_1_month",
}
ANTIBODY_TEST = {"antibody": "anti_mda5", "assay": "elisa", "sample_date": "2021-02-03", "value": "120.5",
                 "unit": "index", "cutoff": "32"}  # fmt: skip
TREATMENT = {"drug": "tofacitinib", "start_date": "2021-02-10", "dose": "5", "dose_unit": "mg", "frequency": "bid"}
FOLLOW_UP = {"last_contact_date": "2022-02-10", "vital_status": "alive", "lost_to_follow_up": "no"}
REASON = "Dose misread from the prescription: it is 10 mg twice daily"


def fill(page, values: dict[str, str]) -> None:
    """Type each value into the input with that id, or choose it in the drop-down."""
    for name, value in values.items():
        field = page.locator(f"#{name}")
        if field.evaluate("element => element.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def entered(page, names) -> dict[str, str]:
    """What the form's inputs hold now."""
    return {name: page.input_value(f"#{name}") for name in names}


def save(page) -> int:
    """Click Save; the status the form's POST was answered with (303 when saved, then the patient page)."""
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Save", exact=True).click()
    request = navigation.value.request
    return (request.redirected_from or request).response().status


def rows(page, table: str) -> list[list[str]]:
    """The cells of each body row of ``table`` (a selector), as text."""
    return [row.locator("td").all_inner_texts() for row in page.locator(f"{table} tbody tr").all()]


def test_after_sign_out_a_copied_session_cookie_is_refused_in_another_browser(server, page):
    page.goto(f"{server}/login")
    page.fill("#username", "cora")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{server}/patients"
    copied = [cookie for cookie in page.context.cookies() if cookie["name"] == "registry_session"]
    assert len(copied) == 1 and copied[0]["httpOnly"] and copied[0]["sameSite"] == "Strict"
    other = page.context.browser.new_context()
    try:
        thief = other.new_page()
        other.add_cookies(copied)
        thief.goto(f"{server}/patients/EX-001")
        assert thief.url == f"{server}/patients/EX-001"  # the copy works while the session lasts
        page.click("text=Sign out")
        assert page.url == f"{server}/login"
        thief.goto(f"{server}/patients/EX-001")
        assert thief.url == f"{server}/login?next=/patients/EX-001" and "EX-001" not in thief.text_content("main")
        shot(thief, "09-copied-cookie-refused-after-sign-out")
    finally:
        other.close()


def test_a_coordinator_enters_and_corrects_a_patient(server, page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server}/patients/new")
    page.fill("#username", "cora")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{server}/patients/new"
    assert page.text_content("h1") == "New patient"
    shot(page, "10-new-patient-form")

    fill(page, NEW_PATIENT)
    assert save(page) == 303
    assert page.url == f"{server}/patients/EX-200"
    assert page.text_content("h1") == "EX-200"
    assert page.text_content("[role=status]").startswith("Saved: study_id, site, sex, birth_date, smoking, ")
    assert page.locator("#patient td").all_inner_texts()[:4] == ["DEMO", "female", "1970-03-04", "never"]
    shot(page, "11-patient-created")

    page.click("text=Add antibody test")
    assert page.url == f"{server}/patients/EX-200/antibody_tests/new"
    fill(page, ANTIBODY_TEST)
    assert save(page) == 303
    assert page.url == f"{server}/patients/EX-200#antibody_tests"
    assert page.text_content("[role=status]").startswith("Saved: antibody, assay, sample_date, ")
    assert page.locator("#timeline", has_text="anti_mda5 120.5 index").count() == 1
    shot(page, "12-antibody-test-added")

    page.click("text=Add treatment")
    fill(page, {**TREATMENT, "end_date": "2021-01-10"})  # stopped a month before it started
    assert save(page) == 422
    assert page.url == f"{server}/patients/EX-200/treatments/new"
    assert page.text_content("[role=alert]") == "Not saved: correct the fields marked below."
    assert page.text_content("#error-end_date") == "end_date cannot be before start_date"
    assert entered(page, [*TREATMENT, "end_date"]) == {**TREATMENT, "end_date": "2021-01-10"}  # nothing retyped
    shot(page, "13-treatment-refused")
    page.fill("#end_date", "")  # still taking it
    assert save(page) == 303
    assert page.url == f"{server}/patients/EX-200#treatments"
    assert page.text_content("[role=status]").startswith("Saved: drug, start_date, ")
    assert page.locator("#timeline", has_text="tofacitinib started").count() == 1
    shot(page, "14-treatment-added")

    page.click("text=Add follow-up record")
    fill(page, FOLLOW_UP)
    assert save(page) == 303
    assert page.url == f"{server}/patients/EX-200#follow_up"
    assert page.text_content("[role=status]").startswith("Saved: last_contact_date, vital_status, ")
    assert page.locator("#timeline", has_text="last contact, alive").count() == 1
    assert page.locator("#follow_up", has_text="Add follow-up record").count() == 0  # one per patient
    shot(page, "15-follow-up-added")

    page.click("#treatments >> text=Edit")
    treatment = page.url.removeprefix(f"{server}/patients/EX-200/treatments/").removesuffix("/edit")
    assert treatment.isdigit()
    assert entered(page, [*TREATMENT, "end_date"]) == {**TREATMENT, "end_date": ""}
    page.fill("#dose", "10")
    assert save(page) == 422  # a correction needs its reason
    assert page.text_content("[role=alert]") == "Not saved: correct the fields marked below."
    assert page.text_content("#error-reason") == "a reason for the change is required"
    assert page.input_value("#dose") == "10"
    page.fill("#reason", REASON)
    assert page.text_content("footer") == f"mda5-registry {registry.__version__}"  # not the record's edit counter
    shot(page, "16-treatment-correction")
    assert save(page) == 303
    assert page.url == f"{server}/patients/EX-200#treatments"
    assert page.text_content("[role=status]") == "Saved: dose."
    history = rows(page, "#history")
    assert [row[1:] for row in history[-1:]] == [["cora", "update", f"treatment {treatment}", "dose: 5 → 10", REASON]]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", history[-1][0])
    assert page.locator("#treatments tbody td").all_inner_texts()[:4] == ["tofacitinib", "2021-02-10", "", "10"]
    assert [row[1:3] + row[5:] for row in history[:-1]] == [["cora", "insert", "initial entry"]] * 4
    assert [row[3].split()[0] for row in history[:-1]] == ["patient", "antibody_test", "treatment", "follow_up"]
    shot(page, "17-history-of-the-patient")

    page.goto(f"{server}/patients/EX-200/treatments/{treatment}/edit")
    assert page.input_value("#dose") == "10"
    history = rows(page, "h2:has-text('History of this record') + table")
    assert [row[1:3] for row in history] == [["cora", "insert"], ["cora", "update"]]
    assert history[-1][3:] == ["dose: 5 → 10", REASON]
    shot(page, "18-history-of-the-treatment")
    assert dialogs == []


def sign_in(page, server: str, username: str, path: str) -> None:
    """Open ``path``, sign in as ``username`` on the way, and arrive there."""
    page.goto(f"{server}{path}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{server}{path}"


def pft_path(page, server: str) -> str:
    page.goto(f"{server}/patients/EX-002")
    return page.locator("#pfts a", has_text="Edit").first.get_attribute("href")


def test_two_users_correct_one_record_and_no_update_is_lost(server, browser):
    violations = []
    a, b = new_page(browser), new_page(browser)
    for page in (a, b):
        page.on(
            "console", lambda message: violations.append(message.text) if "Content Security" in message.text else None
        )
    sign_in(a, server, "cora", "/patients/EX-002")
    path = pft_path(a, server)
    sign_in(b, server, "dana", path)
    a.goto(f"{server}{path}")
    assert entered(a, ["fvc_l", "fvc_pct_pred"]) == {"fvc_l": "2.61", "fvc_pct_pred": "74.5"}
    assert a.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") == "rgb(31, 78, 121)"

    b.fill("#fvc_l", "2.11")  # B corrects fvc_l while A has the form open
    b.fill("#reason", "spirometry report: 2.11 L")
    assert save(b) == 303
    a.fill("#fvc_pct_pred", "75")  # A corrects another field of the form opened before
    a.fill("#reason", "predicted value recomputed")
    assert save(a) == 409
    assert a.text_content("#stale strong") == (
        "Not saved: this record was changed by someone else since you opened it: review their change and edit again."
    )
    assert entered(a, ["fvc_l", "fvc_pct_pred"]) == {"fvc_l": "2.11", "fvc_pct_pred": "75"}  # theirs, mine
    assert focused(a, "stale") == "stale"  # focus on what went wrong
    shot(a, "20-conflict-other-fields")
    assert save(a) == 303  # "Save again"
    assert a.text_content("[role=status]") == "Saved: fvc_pct_pred."
    assert a.locator("#pfts tbody td").all_inner_texts()[1:3] == ["2.11", "75"]  # no lost update

    a.goto(f"{server}{path}")
    b.goto(f"{server}{path}")
    b.fill("#fvc_l", "2.2")  # now both change fvc_l
    b.fill("#reason", "second reading")
    assert save(b) == 303
    a.fill("#fvc_l", "2.5")
    a.fill("#reason", "my reading")
    assert save(a) == 409
    choice = a.locator("#field-fvc_l")
    assert re.fullmatch(r"stored: 2.2 \(dana, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: second reading\)",
                        choice.locator("label").nth(0).inner_text().strip())  # fmt: skip
    assert choice.locator("label").nth(1).inner_text().strip() == "yours: 2.5"
    assert focused(a, "fvc_l-theirs") == "fvc_l-theirs"  # focus on what needs a choice
    shot(a, "21-conflict-same-field")
    assert save(a) == 422  # no choice made: refused
    assert a.text_content("#error-fvc_l") == "choose the stored value or yours"
    a.check("#fvc_l-yours")
    assert save(a) == 303
    assert a.text_content("[role=status]") == "Saved: fvc_l."
    assert a.locator("#pfts tbody td").all_inner_texts()[1] == "2.5"
    history = rows(a, "#history")
    assert [row[1:2] + row[4:] for row in history[-2:]] == [
        ["dana", "fvc_l: 2.11 → 2.2", "second reading"],
        ["cora", "fvc_l: 2.2 → 2.5", "my reading"],
    ]
    shot(a, "22-conflict-resolved")
    assert violations == []


def test_focus_goes_to_the_first_error_and_typed_work_survives_the_end_of_a_session(server, browser):
    page = new_page(browser)
    sign_in(page, server, "cora", "/patients/EX-002/treatments/new")
    fill(page, {**TREATMENT, "start_date": "2021-13-01", "end_date": "2021-01-10"})
    assert save(page) == 422
    assert focused(page, "start_date") == "start_date"  # the first field in error
    shot(page, "23-focus-on-the-first-error")

    fill(page, {**TREATMENT, "end_date": ""})
    page.context.clear_cookies()  # the session ends while the form is open
    assert save(page) == 401
    assert page.text_content("[role=alert]") == (
        "You were signed out before this was saved: sign in again to go back to the form with what you typed."
    )
    shot(page, "24-signed-out-before-saving")
    page.fill("#username", "cora")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{server}/patients/EX-002/treatments/new"
    assert (
        page.text_content("#note")
        == "Not saved yet: you were signed out before saving. Check what you typed, then save."
    )
    assert entered(page, TREATMENT) == TREATMENT
    shot(page, "25-back-at-the-form")
    assert save(page) == 422  # the course adds errors to EX-002's findings: confirmed, as in the record
    page.check("#confirm")
    page.select_option("#confirm_reason", "as in the record")
    assert save(page) == 303
    assert page.text_content("[role=status]").startswith("Saved: drug, start_date, ")


def test_fields_that_do_not_apply_are_hidden_and_the_lab_offers_only_the_analytes_units(server, page):
    sign_in(page, server, "cora", "/patients/EX-002")
    page.click("#follow_up >> text=Edit")
    assert page.is_hidden("#field-death_date") and page.is_hidden("#field-death_cause")
    page.select_option("#vital_status", "dead")
    assert page.is_visible("#field-death_date") and page.is_visible("#field-death_cause")
    fill(page, {"death_date": "2021-03-01", "death_cause": "infection"})
    shot(page, "30-death-fields-shown-once-dead")
    page.select_option("#vital_status", "alive")  # changed their mind: the date typed is not sent
    assert page.is_hidden("#field-death_date")
    page.fill("#reason", "last contact confirmed")
    assert save(page) == 303
    assert page.text_content("[role=status]") == "Nothing changed."

    page.click("text=Add pulmonary function test")
    assert page.is_visible("#field-not_done_reason") and page.is_visible("#field-fvc_l")
    page.select_option("#not_done_reason", "too_ill")
    assert page.is_hidden("#field-fvc_l") and page.is_hidden("#field-dlco_pct_pred")
    page.select_option("#not_done_reason", "")
    page.fill("#fvc_l", "2.2")
    assert page.is_hidden("#field-not_done_reason") and page.is_visible("#field-fvc_l")

    page.goto(f"{server}/patients/EX-002/labs/new")
    page.select_option("#analyte", "crp")
    offered = page.eval_on_selector_all("#unit option:not([hidden])", "options => options.map(o => o.value)")
    assert offered == ["", "mg/L", "mg/dL"]
    fill(page, {"sample_date": "2019-02-13", "value": "1.2", "unit": "mg/dL"})
    shot(page, "31-lab-units-of-the-analyte")
    assert save(page) == 303
    assert page.text_content("[role=status]") == (
        "Saved: analyte, sample_date, value, unit. Result entered as 1.2 mg/dL, stored as 12 mg/L."
    )


def test_pages_fit_a_375_px_screen_wide_tables_scroll_inside_themselves(server, browser):
    page = new_page(browser, viewport={"width": 375, "height": 800})
    sign_in(page, server, "cora", "/patients")
    for path in ("/patients", "/patients/EX-002", "/patients/EX-002/hrct/new", "/patients/new"):
        page.goto(f"{server}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    page.goto(f"{server}/patients/EX-002")
    hrct = page.locator("#hrct table")
    assert hrct.evaluate("table => table.scrollWidth > table.clientWidth")  # wide, and scrolls inside itself
    shot(page, "32-patient-page-at-375-px")


def test_a_coordinator_records_why_a_value_is_missing_with_a_missing_data_code(server, page, web_registry):
    """A code chosen beside an empty field is saved as the code (not a blank), shown again on the form and the
    patient page, and hides the fields that depend on a value as the server would refuse them."""
    sign_in(page, server, "cora", "/patients/EX-002/edit")
    codes = page.eval_on_selector_all("[id='missing.smoking'] option", "options => options.map(o => o.textContent)")
    assert codes == ["", "Unknown", "Not done", "Not applicable", "Not asked"]
    assert page.locator("[id='missing.sex']").count() == 0  # a required field takes no code
    page.select_option("#smoking", "")
    page.select_option("[id='missing.smoking']", "unknown")
    assert page.is_visible("#field-rpild_definition")
    page.select_option("[id='missing.rpild']", "not_asked")
    assert page.is_visible("#field-rpild_definition")  # rpild is still "no"
    page.select_option("#rpild", "")
    assert page.is_hidden("#field-rpild_definition")  # applies to a yes or a no only, not to a code
    page.fill("#reason", "not in the referral letter")
    shot(page, "40-missing-data-codes")
    status = save(page)
    assert status == 303, page.text_content("main")
    assert "Smoking" in page.text_content("body")
    cells = page.locator("table").first.inner_text()
    assert "[unknown]" in cells and "[not_asked]" in cells
    page.goto(f"{server}/patients/EX-002/edit")
    assert page.input_value("[id='missing.smoking']") == "unknown" and page.input_value("#smoking") == ""
    with web_registry.connect() as connection:
        stored = connection.exec_driver_sql(
            "SELECT smoking, rpild, rpild_definition, missing_codes FROM patient WHERE study_id = 'EX-002'"
        ).one()
    assert tuple(stored) == (None, None, None, '{"rpild":"not_asked","smoking":"unknown"}')


def beside(page, field: str) -> list[str]:
    """The findings of the checks listed beside ``field`` of a form."""
    return page.locator(f"#field-{field} .field-findings li").all_inner_texts()


def test_a_coordinator_sees_each_implausible_value_beside_its_field_and_confirms_one_with_a_reason(
    server, browser, web_registry
):
    """Issue 18: each value the web form once saved without a word is refused beside its field, by the rule that
    catches it (or, where none can, as the form is read); one error confirmed is saved, its reason audited."""
    next_year = date.today().year + 1
    page = new_page(browser)
    sign_in(page, server, "cora", "/patients/new")
    patient = {**NEW_PATIENT, "study_id": "EX-300", "rpild": "no", "dm_diagnosis_date": "2020-01-20"}
    fill(page, {**patient, "birth_date": f"{next_year + 3}-01-01"})  # 2030, as the issue found it
    assert save(page) == 422
    assert page.text_content("#refusal") == (
        "Not saved: the checks found errors: correct them, or confirm them with a reason"
    )
    assert beside(page, "birth_date") == [
        f"error PAT-010: age at diagnosis is outside 18-100 years (value {next_year + 3}-01-01)",
        f"error PAT-012: a diagnosis or symptom date is not after the birth date (value {next_year + 3}-01-01)",
        f"error TIM-004: a date lies in the future (value {next_year + 3}-01-01)",
    ]
    shot(page, "40-birth-date-in-the-future")
    page.fill("#birth_date", "1850-01-01")  # refused as read, before any rule: no date of the registry is so early
    assert save(page) == 422
    assert page.text_content("#error-birth_date") == (
        "is outside 1900-01-01 to 2100-12-31: a date so far off is a typing error"
    )
    fill(page, {"birth_date": "1970-03-04", "ild_diagnosis_date": "1969-05-01"})  # ILD diagnosed before birth
    assert save(page) == 422
    assert "error PAT-012: a diagnosis or symptom date is not after the birth date (value 1970-03-04)" in beside(
        page, "birth_date"
    )
    assert beside(page, "ild_diagnosis_date") == [
        "error STU-003: ILD diagnosed outside the enrolment window (value 1969-05-01)"
    ]
    fill(page, {"sex": "male", "birth_date": "1975-11-30", "dm_diagnosis_date": "2019-02-11",
                "ild_diagnosis_date": "2019-02-15"})  # fmt: skip  # EX-002's site, sex, birth and DM diagnosis
    assert save(page) == 422
    assert beside(page, "study_id") == [
        "error PAT-018: another patient has the same site, sex, birth date and DM diagnosis date (value EX-300)"
    ]
    shot(page, "41-probable-duplicate-patient")

    page.goto(f"{server}/patients/EX-002/labs/new")  # EX-002 was born on 1975-11-30
    fill(page, {"analyte": "crp", "sample_date": "1970-01-01", "value": "5", "unit": "mg/L"})
    assert save(page) == 422
    assert beside(page, "sample_date") == [
        "error TIM-006: a record is dated before the patient's birth (value 1970-01-01)"
    ]
    page.select_option("#analyte", "ferritin")
    offered = page.eval_on_selector_all("#unit option:not([hidden])", "options => options.map(o => o.value)")
    assert offered == ["ng/mL", "ug/L"]  # mg/dL is no unit of ferritin, nor one converted
    without_script = new_page(browser, java_script_enabled=False)
    sign_in(without_script, server, "cora", "/patients/EX-002/labs/new")
    fill(without_script, {"analyte": "ferritin", "sample_date": "2019-02-20", "value": "64", "unit": "mg/dL"})
    assert save(without_script) == 422
    assert without_script.text_content("#error-unit") == (
        "is not a unit of Serum ferritin the form accepts: choose ng/mL or ug/L"
    )
    shot(without_script, "42-ferritin-in-mg-dl-refused")
    without_script.context.close()

    page.goto(f"{server}/patients/EX-002/hrct/new")
    assert page.text_content("#help-total_score").endswith("(unit: points; plausible: 0-1200)")  # before typing
    extents = {f"{feature}_{zone.value}_pct": extent for feature, extent in (("ggo", "20"), ("consolidation", "10"))
               for zone in LungZone}  # fmt: skip
    fill(page, {"scan_date": "2019-03-02", **extents, "total_score": "999"})  # the extents give at most 360
    assert save(page) == 422
    assert beside(page, "total_score") == [
        "error HRC-013: total score above twice the sum of the zone extents: these extents cannot give it (value 999)"
    ]
    shot(page, "43-hrct-score-the-extents-cannot-give")

    page.goto(f"{server}/patients/EX-002")
    page.click("#follow_up >> text=Edit")
    fill(page, {"last_contact_date": f"{next_year}-01-15", "reason": "phoned the patient"})
    assert save(page) == 422
    assert beside(page, "last_contact_date") == [f"error TIM-004: a date lies in the future (value {next_year}-01-15)"]

    page.goto(f"{server}/patients/EX-002/pfts/new")
    assert page.text_content("#help-fvc_l") == "Forced vital capacity (unit: L; plausible: 0.3-8)"  # before typing
    fill(page, {"test_date": "2019-03-01", "fvc_l": "900"})
    assert save(page) == 422
    assert beside(page, "fvc_l") == ["error PFT-011: result outside the plausible range (value 900)"]
    shot(page, "44-fvc-900-litres")
    page.check("#confirm")
    page.select_option("#confirm_reason", "value verified at source")
    assert save(page) == 303
    assert page.url == f"{server}/patients/EX-002#pfts"
    assert page.text_content("[role=status]") == (
        "Saved: test_date, fvc_l. The checks found 1 confirmed error(s): see the findings below."
    )
    reason = "confirmed at entry: value verified at source"
    review = [row[1:] for row in rows(page, "#history") if row[3].startswith("finding_review ")]
    assert [row[:2] + row[4:] for row in review] == [["cora", "insert", reason]]
    shot(page, "45-confirmed-error-in-the-history")
    with web_registry.connect() as connection:
        logged = connection.execute(
            sa.select(AuditLog.actor, AuditLog.reason, AuditLog.new_values).where(
                AuditLog.table_name == "finding_review"
            )
        ).one()
    assert logged[:2] == ("cora", reason)
    assert {k: logged.new_values[k] for k in ("rule", "field", "value", "reviewed_by")} == {
        "rule": "PFT-011", "field": "fvc_l", "value": "900", "reviewed_by": "cora"
    }  # fmt: skip


def test_a_query_from_a_finding_is_answered_by_a_correction_closed_and_a_signature_voided_by_an_edit(
    server, browser, web_registry
):
    """The data resolution workflow and sign-off in the browser: a data manager opens a query from a finding of the
    checks, the site's coordinator corrects the field (which answers it), the data manager closes it; another site's
    coordinator never sees it; an investigator signs (a wrong password first), and an edit voids the signature."""
    from registry.accounts import create_account
    from registry.audit import audited_session
    from registry.codes import Role

    with audited_session(web_registry, actor="test") as session:
        create_account(session, "ivy", PASSWORD, Role.INVESTIGATOR, ["DEMO"])
        create_account(session, "olga", PASSWORD, Role.COORDINATOR, ["OTHER"])
        session.commit()
    dana = new_page(browser)
    sign_in(dana, server, "dana", "/patients/EX-002/labs/new")
    fill(dana, {"analyte": "ferritin", "sample_date": "2019-02-20", "value": "50000", "unit": "ng/mL"})
    assert save(dana) == 303
    dana.goto(f"{server}/checks")
    dana.click("text=Run the checks now")
    finding = dana.locator("#findings ~ table tbody tr", has_text="LAB-014").filter(has_text="EX-002")
    assert finding.locator("textarea[name=question]").input_value().startswith("LAB-014: ")
    shot(dana, "50-open-a-query-from-a-finding")
    finding.get_by_role("button", name="Open query").click()
    assert dana.text_content("[role=status]") == "Query 1 opened."
    assert finding.locator("td.query").inner_text() == "query 1 open"  # its number instead of the button
    assert finding.get_by_role("button", name="Open query").count() == 0

    cora = new_page(browser)
    sign_in(cora, server, "cora", "/patients/EX-002")
    query = cora.locator("#query-1 td").all_inner_texts()
    assert query[2:4] == ["LAB-014", "open"] and query[1].endswith(", field value")
    lab = cora.locator("#labs tbody tr", has_text="50000")
    assert lab.locator(".query-marker").inner_text() == "query 1 open"
    shot(cora, "51-the-coordinator-sees-the-query")
    lab.locator("text=Edit").click()
    fill(cora, {"value": "500", "reason": "laboratory report reads 500 ng/mL"})
    assert save(cora) == 303
    assert cora.text_content("[role=status]") == "Saved: value. Answers query 1."
    assert cora.locator("#query-1 td.query-status").inner_text() == "answered"
    assert (
        cora.locator("#queries", has_text="value changed from 50000 to 500: laboratory report reads 500 ng/mL").count()
        == 1
    )
    assert cora.locator("#labs .query-marker").inner_text() == "query 1 answered"
    shot(cora, "52-a-correction-answers-the-query")

    dana.goto(f"{server}/patients/EX-002")
    step = dana.locator("form[action='/queries/1/close']")
    step.locator("textarea").fill("Corrected at source: accepted.")
    step.get_by_role("button", name="Close query 1").click()
    assert dana.text_content("[role=status]") == "Query 1 closed."
    assert dana.locator("#query-1 td.query-status").inner_text() == "closed"
    assert dana.locator("#labs .query-marker").count() == 0
    shot(dana, "53-the-data-manager-closes-the-query")

    olga = new_page(browser)
    sign_in(olga, server, "olga", "/queries")
    assert olga.locator("#query-list").count() == 0 and olga.locator("main", has_text="No queries.").count() == 1
    olga.goto(f"{server}/patients/EX-002")
    assert olga.text_content("h1") == "Not found"
    shot(olga, "54-another-sites-coordinator-sees-nothing")

    cora.goto(f"{server}/patients/EX-001")
    cora.get_by_role("button", name="Mark complete").click()
    assert cora.text_content("[role=status]") == "Marked complete."
    assert cora.text_content("#record-status") == "complete"
    ivy = new_page(browser)
    sign_in(ivy, server, "ivy", "/patients/EX-001")
    assert ivy.text_content("#meaning") == "I attest that the data of patient EX-001 are complete and accurate"
    assert ivy.get_attribute("#sign-password", "type") == "password"
    ivy.fill("#sign-password", "not my password")
    ivy.get_by_role("button", name="Sign", exact=True).click()
    assert ivy.text_content("[role=status]") == "Not done: the user name or password is not right: nothing was signed."
    assert ivy.text_content("#record-status") == "complete" and ivy.locator("#signature").count() == 0
    shot(ivy, "55-a-wrong-password-signs-nothing")
    ivy.fill("#sign-password", PASSWORD)
    ivy.get_by_role("button", name="Sign", exact=True).click()
    assert ivy.text_content("[role=status]") == (
        "Signed: I attest that the data of patient EX-001 are complete and accurate."
    )
    assert ivy.text_content("#record-status") == "signed"
    assert ivy.text_content("#signature").startswith("Signed by ivy on ")
    shot(ivy, "56-signed")

    cora.goto(f"{server}/patients/EX-001")
    assert cora.text_content("#record-status") == "signed"
    cora.click("text=Edit patient")
    smoking = "former" if cora.input_value("#smoking") != "former" else "never"
    fill(cora, {"smoking": smoking, "reason": "the patient corrected it"})
    assert save(cora) == 303
    assert cora.text_content("#record-status") == "complete"
    assert cora.locator("#signature").count() == 0
    assert rows(cora, "#voided-signatures")[0][4:] == ["cora", "data changed: the patient corrected it"]
    shot(cora, "57-an-edit-voids-the-signature")
