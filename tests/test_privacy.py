"""Privacy: nothing the package writes holds a direct identifier, the scan proves it (and can fail),
and the pseudonymised export keeps every interval while hiding study_ids and true dates.

Every name, hospital number and phone number here is SYNTHETIC: made up for these tests, nobody's.
"""

import csv
import hashlib
import hmac
import json
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site
from openpyxl import Workbook, load_workbook
from typer.testing import CliRunner
from weasyprint import HTML

from registry import db
from registry.audit import audited_session
from registry.cli import app
from registry.ingest import import_path
from registry.models import Patient, PatientIdentifier
from registry.privacy import (
    BIRTH_DATE,
    EMAIL,
    HOSPITAL_NUMBER,
    NAME,
    PHONE,
    RESIDENT_ID,
    Identifiers,
    Scanner,
    registered_identifiers,
)
from registry.sheets import SHEETS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"  # synthetic test key
OTHER_KEY = "a" * 64
#: Calendar selections widened by the largest shift, so the same patients are analysed before and after.
WIDE_WINDOW = "enrolment_start = 2017-04-01\nenrolment_end = 2021-07-01\n"
runner = CliRunner()

# SYNTHETIC identities: 8 x 8 made-up names, made-up hospital numbers and phone numbers.
SURNAMES = ("Zhang", "Wang", "Li", "Liu", "Chen", "Yang", "Huang", "Zhao")
GIVEN = ("Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Tao", "Hui")


def synthetic_identity(i: int) -> tuple[str, str, str]:
    """(name, hospital number, mobile phone) of the i-th synthetic patient."""
    return f"{SURNAMES[i // 8]} {GIVEN[i % 8]}", f"H{2300000 + 37 * i}", f"139{i:08d}"


def run(url: str, *args: str):
    return runner.invoke(app, ["--database", url, *args], catch_exceptions=False)


def _store_identities(engine: sa.Engine) -> None:
    with audited_session(engine, actor="test", reason="synthetic identifiers") as session:
        ids = session.exec(sa.select(Patient.id).order_by(Patient.study_id)).scalars().all()
        for i, patient_id in enumerate(ids):
            name, number, _ = synthetic_identity(i)
            session.add(PatientIdentifier(patient_id=patient_id, full_name=name, hospital_number=number))
        session.commit()


def _demo_registry(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    add_demo_site(engine)
    assert import_path(engine, FIXTURES / "demo", actor="test").written
    _store_identities(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The demo registry with synthetic identifiers, and everything the package writes from it, in ``out``."""
    base = tmp_path_factory.mktemp("privacy")
    url = _demo_registry(base / "registry.db")
    out = base / "out"
    out.mkdir()
    (base / "key").write_text(KEY + "\n")
    commands = {
        "check": ["check", "--json", str(out / "findings.json"), "--html", str(out / "findings.html")],
        "analyze": ["analyze", "--json", str(out / "results.json")],
        "report": ["report", "--out", str(out / "report.pdf"), "--html", str(out / "report.html"),
                   "--archive", str(out / "archive")],
        "export-csv": ["export", str(out / "full")],
        "export-xlsx": ["export", str(out / "full.xlsx")],
        "export-shared": ["export", str(out / "shared"), "--pseudonymise", "--key-file", str(base / "key")],
        "export-shared-xlsx": ["export", str(out / "shared.xlsx"), "--pseudonymise", "--key-file", str(base / "key")],
    }  # fmt: skip
    for name, args in commands.items():
        result = runner.invoke(app, ["--database", url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        (out / f"{name}.stdout.txt").write_text(result.stdout)
        (out / f"{name}.stderr.txt").write_text(result.stderr)
    return {"url": url, "out": out, "base": base}


def test_nothing_the_package_writes_holds_an_identifier(written):
    out = written["out"]
    kinds = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert kinds >= {".pdf", ".html", ".json", ".csv", ".xlsx", ".log", ".txt"}
    result = run(written["url"], "privacy", "scan", str(out), "--key-file", str(written["base"] / "key"))
    files = sum(1 for p in out.rglob("*") if p.is_file())
    assert result.stdout.splitlines() == [
        f"allowed: {out / 'full' / 'patients.csv'} patients column birth_date: 61 birth dates (the full export, for registry staff only)",
        f"allowed: {out / 'full.xlsx'} patients column birth_date: 61 birth dates (the full export, for registry staff only)",
        f"{files} files scanned, 0 identifiers found",
    ]
    assert result.exit_code == 0


def _plant(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))


def test_identifiers_planted_in_real_outputs_are_found_masked(written, tmp_path):
    """The scan can fail: a name in the log, a hospital number in the results, a birth date outside the full export's
    birth_date column, a true birth date in the pseudonymised export."""
    out = tmp_path / "out"
    shutil.copytree(written["out"], out)
    name, number, _ = synthetic_identity(5)  # the 6th patient by study_id: DM-006
    with (out / "archive" / "report.log").open("a") as log:
        log.write(f"2026-11-27 06:00:01 INFO request by {name.upper()}\n")
    results = json.loads((out / "results.json").read_text())
    results["overall"]["note"] = f"see {number}"
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _plant(out / "full" / "patients.csv", "DM-001,DEMO,female,1942-08-30,never,2018-05-27",
           "DM-001,DEMO,female,1942-08-30,never,30/08/1942")  # fmt: skip
    shared = (out / "shared" / "patients.csv").read_text().splitlines()
    row = next(i for i, line in enumerate(shared) if line.startswith(_reference_pseudonym(KEY, "DM-002") + ","))
    shared[row] = ",".join([*shared[row].split(",")[:3], "1971-05-18", *shared[row].split(",")[4:]])  # DM-002's birth
    (out / "shared" / "patients.csv").write_text("\n".join(shared) + "\n")

    result = run(written["url"], "privacy", "scan", str(out), "--key-file", str(written["base"] / "key"))
    assert result.exit_code == 1
    found = [line for line in result.stdout.splitlines() if not line.startswith("allowed:")]
    log_lines = (out / "archive" / "report.log").read_text().count("\n")
    assert found[:-1] == [
        f"{out / 'archive' / 'report.log'}: line {log_lines}: name Z*******N",
        f"{out / 'full' / 'patients.csv'}: row 2, column dm_diagnosis_date: birth date 3********2",
        f"{out / 'results.json'}: $.overall.note: hospital number H******5",
        f"{out / 'shared' / 'patients.csv'}: row {row + 1}, column birth_date: birth date 1********8",
    ]
    assert found[-1].endswith("files scanned, 4 identifiers found")
    for raw in (name.upper(), number, "30/08/1942", "1971-05-18"):
        assert raw not in result.output


def test_an_identifier_in_the_configuration_is_found_in_the_real_report(written, tmp_path):
    """The report's title comes from registry.toml: a name and a phone put there reach the PDF (title, running
    header), the HTML and the results JSON, and the scan must find them in each, read from the files as written."""
    name, _, phone = synthetic_identity(9)
    config = tmp_path / "registry.toml"
    config.write_text(f'registry_name = "Registry of {name}, tel {phone}"\n')
    url = written["url"]
    out = tmp_path / "out"
    out.mkdir()
    args = ["--config", str(config)]
    assert run(url, "report", "--out", str(out / "r.pdf"), "--html", str(out / "r.html"), *args).exit_code == 0
    assert run(url, "analyze", "--json", str(out / "r.json"), *args).exit_code == 0
    with db.make_engine(url).connect() as connection:
        findings = Scanner(registered_identifiers(connection)).scan([out]).findings
    masked = {"name": "W*******g", "phone number": "1*********9"}  # Wang Fang, 13900000009
    for file in ("r.pdf", "r.html", "r.json"):
        kinds = {(f.kind, f.masked) for f in findings if f.file.name == file}
        assert kinds == set(masked.items()), file
    pdf_pages = {f.location.split(",")[0] for f in findings if f.file.name == "r.pdf"}
    assert {"page 1", "page 2"} <= pdf_pages  # the cover and a running header
    assert {f.location for f in findings if f.file.name == "r.json"} == {"$.configuration.registry_name"}


def test_data_quality_findings_about_birth_dates_withhold_the_value(tmp_path):
    """The dirty fixture's wrong birth dates are findings; the JSON and HTML name them without the date."""
    url = f"sqlite:///{tmp_path / 'dirty.db'}"
    assert run(url, "db", "upgrade").exit_code == 0
    assert run(url, "site", "add", "DEMO", "Demo centre (synthetic data)").exit_code == 0
    assert run(url, "import", str(FIXTURES / "dirty" / "sheets")).exit_code == 0
    out = tmp_path / "out"
    out.mkdir()
    assert run(url, "check", "--json", str(out / "f.json"), "--html", str(out / "f.html")).exit_code == 2
    births = [f for f in json.loads((out / "f.json").read_text())["findings"] if f["field"] == "birth_date"]
    assert {f["study_id"] for f in births} == {"DM-017", "DM-027", "DM-028", "DM-049"}
    assert {f["value"] for f in births} == {"(withheld: a birth date, see the patient's record)"}
    result = run(url, "privacy", "scan", str(out))
    assert (result.exit_code, result.stdout) == (0, "2 files scanned, 0 identifiers found\n")


def test_registered_identifiers_are_read_from_the_database(migrated):
    add_demo_site(migrated)
    assert import_path(migrated, FIXTURES / "example", actor="test").written
    _store_identities(migrated)
    with migrated.connect() as connection:
        identifiers = registered_identifiers(connection)
    births = {r["study_id"]: date.fromisoformat(r["birth_date"])
              for r in csv.DictReader((FIXTURES / "example" / "patients.csv").open())}  # fmt: skip
    assert identifiers == Identifiers(
        names=frozenset({"Zhang Wei", "Zhang Fang", "Zhang Min", "Zhang Jing"}),
        hospital_numbers=frozenset({"H2300000", "H2300037", "H2300074", "H2300111"}),
        birth_dates=frozenset(births.values()),
        birth_date_of=births,
    )


# --- the scanner on each file kind: each kind of identifier planted, with look-alikes that are not identifiers ------
SCANNER = Scanner(Identifiers(names=frozenset({"Zhang Wei", "张伟"}), hospital_numbers=frozenset({"H2300037"}),
                              birth_dates=frozenset({date(1961, 3, 4)})))  # fmt: skip
PLANTED = [  # text, kind, masked
    ("ZHANG  wei", NAME, "Z*******i"),
    ("Zhangwei", NAME, "Z******i"),
    ("患者张伟", NAME, "**"),
    ("H 2300037", HOSPITAL_NUMBER, "H*******7"),
    ("+86 138 1234 5678", PHONE, "+***************8"),
    ("(025) 8327 1234", PHONE, "(*************4"),
    ("13912345678", PHONE, "1*********8"),
    ("212-555-0123", PHONE, "2**********3"),
    ("wei.zhang@hospital.example.cn", EMAIL, "w***************************n"),
    ("11010519491231002X", RESIDENT_ID, "1****************X"),
    ("1961-03-04", BIRTH_DATE, "1********4"),
    ("04/03/1961", BIRTH_DATE, "0********1"),
    ("1961/3/4", BIRTH_DATE, "1******4"),
    ("4 March 1961", BIRTH_DATE, "4**********1"),
    ("March 4, 1961", BIRTH_DATE, "M***********1"),
]
LOOK_ALIKES = [
    "Zhang Weiming",  # a longer name
    "p = 0.13912345678, HR 0.44 (0.21-0.93)",  # decimals
    "110105194912310021",  # wrong check digit
    "1961-03-05, 2019-03-04, 05/03/1961",  # not a registered birth date
    "n at risk 61 58 40 35; fingerprint 19c857618956a561",
    "H23000370",  # another number
    "fullUrl urn:uuid:3f2a1c9e-0771-5614-9321-5d6e7f8a9b0c",  # a FHIR export's resource ids: digits, not a phone
    "12345678-0771-5614-9321-123456789012",
]


def _expected(location) -> list[tuple[str, str, str]]:
    return [(location(i), kind, masked) for i, (_, kind, masked) in enumerate(PLANTED)]


def _found(path: Path) -> list[tuple[str, str, str]]:
    result = SCANNER.scan([path])
    assert result.unreadable == []
    return [(f.location, f.kind, f.masked) for f in result.findings]


def _lines() -> list[str]:
    return [text for text, _, _ in PLANTED] + LOOK_ALIKES


def test_found_in_logs_and_text(tmp_path):
    log = tmp_path / "report.log"
    log.write_text("\n".join(_lines()) + "\n")
    assert _found(log) == _expected(lambda i: f"line {i + 1}")


def test_found_in_html_with_entities(tmp_path):
    page = tmp_path / "page.html"
    body = "\n".join(f"<p>{line.replace('@', '&#64;')}</p>" for line in _lines())
    page.write_text(f"<!doctype html><html><body>\n{body}\n</body></html>\n")
    assert _found(page) == _expected(lambda i: f"line {i + 2}")


def test_found_in_json_with_its_path(tmp_path):
    document = tmp_path / "results.json"
    document.write_text(json.dumps({"notes": _lines(), "n": 61}))
    assert _found(document) == _expected(lambda i: f"$.notes[{i}]")


def test_found_in_csv_by_row_and_column(tmp_path):
    table = tmp_path / "notes.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([["study_id", "note"], *(["DM-001", line] for line in _lines())])
    assert _found(table) == _expected(lambda i: f"row {i + 2}, column note")


def test_found_in_xlsx_cells_dates_and_serials(tmp_path):
    book = Workbook()
    sheet = book.active
    sheet.title = "notes"
    for line in _lines():
        sheet.append([line])
    sheet.append([datetime(1961, 3, 4)])  # a date cell
    sheet.append([22344])  # 1961-03-04 as an Excel serial
    sheet.append([13912345678])  # a phone kept as a number
    sheet.append([22345, 3.5, datetime(2019, 3, 4)])  # look-alikes
    book.save(tmp_path / "notes.xlsx")
    n = len(_lines())
    assert _found(tmp_path / "notes.xlsx") == [
        *_expected(lambda i: f"notes!A{i + 1}"),
        (f"notes!A{n + 1}", BIRTH_DATE, "1********4"),
        (f"notes!A{n + 2}", BIRTH_DATE, "*****"),
        (f"notes!A{n + 3}", PHONE, "1*********8"),
    ]


def test_found_in_pdf_by_page_and_line(tmp_path):
    """The CJK name is left out: without a CJK font (CI has none) it is drawn as empty boxes, unreadable to anyone.
    Its missing glyphs make pypdf read the page's text as two bytes per character, which the scan undoes."""
    lines = [line for line in _lines() if line != "患者张伟"]
    paragraphs = "".join(f"<p>{line}</p>" for line in [*lines, "张"])
    pdf = tmp_path / "report.pdf"
    HTML(string=f"<p>Cover</p><div style='break-before: page'>{paragraphs}</div>").write_pdf(pdf)
    expected = [e for e in _expected(lambda i: f"page 2, line {i + 1}") if e[1:] != (NAME, "**")]
    assert _found(pdf) == [(f"page 2, line {i + 1}", kind, masked) for i, (_, kind, masked) in enumerate(expected)]


def test_birth_dates_only_allowed_in_the_full_exports_birth_date_column(tmp_path):
    header = ["study_id", "site", "sex", "birth_date", "smoking"]
    for folder, notice in (("full", None), ("shared", "PSEUDONYMISED.txt")):
        (tmp_path / folder).mkdir()
        with (tmp_path / folder / "patients.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([header, ["DM-001", "DEMO", "female", "1961-03-04", "1961-03-04"]])
        if notice:
            (tmp_path / folder / notice).write_text("pseudonymised\n")
    result = SCANNER.scan([tmp_path])
    assert [str(f) for f in result.findings] == [
        f"{tmp_path / 'full' / 'patients.csv'}: row 2, column smoking: birth date 1********4",
    ]
    assert result.allowed == {f"{tmp_path / 'full' / 'patients.csv'} patients column birth_date": 1}
    assert result.unchecked == {f"{tmp_path / 'shared' / 'patients.csv'} patients": 1}  # no key: cannot tell whose


def test_scan_command_exit_codes_and_unreadable_files(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run(url, "db", "upgrade")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("call 13912345678\n")
    result = run(url, "privacy", "scan", str(tmp_path / "files"))
    assert (result.exit_code, result.stdout) == (
        1, f"{tmp_path / 'files' / 'a.txt'}: line 1: phone number 1*********8\n1 file scanned, 1 identifier found\n")  # fmt: skip
    (tmp_path / "files" / "a.txt").write_text("nothing\n")
    (tmp_path / "files" / "b.bin").write_bytes(b"binary\x00\x01")
    shutil.copy(tmp_path / "r.db", tmp_path / "files" / "registry.db")  # a database must not be shared either
    result = run(url, "privacy", "scan", str(tmp_path / "files"))
    assert result.exit_code == 2
    assert result.stderr == (
        f"not scanned: {tmp_path / 'files' / 'b.bin'}: a binary file (NUL at character 6), so it cannot be scanned\n"
        f"not scanned: {tmp_path / 'files' / 'registry.db'}: a binary file (NUL at character 15), so it cannot be scanned\n"
    )
    assert result.stdout == "1 file scanned, 0 identifiers found\n"
    result = run(url, "privacy", "scan", str(tmp_path / "nowhere"))
    assert (result.exit_code, result.stderr) == (2, f"No such file or folder: {tmp_path / 'nowhere'}\n")


# --- the pseudonymised export --------------------------------------------------------------------------------------
def _reference_pseudonym(key: str, study_id: str) -> str:
    """HMAC-SHA256 of the study_id with the key, as the notice describes it (written out independently here)."""
    return "PS-" + hmac.new(key.encode(), f"study_id\0{study_id}".encode(), hashlib.sha256).hexdigest()[:16].upper()


def _read(folder: Path, sheet: str) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / f"{sheet}.csv").open(encoding="utf-8")))


def test_pseudonymised_export_shifts_each_patients_dates_by_one_offset(written):
    full, shared = written["out"] / "full", written["out"] / "shared"
    original_ids = [r["study_id"] for r in _read(full, "patients")]
    by_pseudonym = {_reference_pseudonym(KEY, s): s for s in original_ids}
    shifted_births = {by_pseudonym[r["study_id"]]: r["birth_date"] for r in _read(shared, "patients")}
    assert sorted(shifted_births) == sorted(original_ids)
    offsets = {r["study_id"]: (date.fromisoformat(shifted_births[r["study_id"]]) - date.fromisoformat(r["birth_date"])).days
               for r in _read(full, "patients")}  # fmt: skip
    assert all(offset != 0 and -180 <= offset <= 180 for offset in offsets.values())
    assert len(set(offsets.values())) > 20  # per patient, not one for all

    for sheet in SHEETS:
        dates = [c.name for c in sheet.columns if isinstance(c.source.type, sa.Date)]
        expected = []
        for row in _read(full, sheet.name):
            shift = timedelta(days=offsets[row["study_id"]])
            moved = {k: (str(date.fromisoformat(v) + shift) if k in dates and v else v) for k, v in row.items()}
            moved["study_id"] = _reference_pseudonym(KEY, row["study_id"])
            moved.pop("term_detail", None)
            expected.append(moved)
        got = _read(shared, sheet.name)
        assert sorted(map(sorted, (r.items() for r in got))) == sorted(map(sorted, (r.items() for r in expected)))
        assert list(got[0]) == [c.name for c in sheet.columns if c.name != "term_detail"]


def test_pseudonymised_export_holds_no_study_id_birth_date_or_key(written):
    out = written["out"]
    own_birth = {_reference_pseudonym(KEY, r["study_id"]): r["birth_date"] for r in _read(out / "full", "patients")}
    ids = [r["study_id"] for r in _read(out / "full", "patients")]
    for file in [*(out / "shared").iterdir(), out / "shared.xlsx", out / "shared.PSEUDONYMISED.txt"]:
        if file.suffix == ".xlsx":
            book = load_workbook(file, read_only=True)
            rows = [[str(v)[:10] for v in row] for ws in book.worksheets for row in ws.iter_rows(values_only=True)]
            book.close()
            text = "\n".join("\t".join(row) for row in rows)
        else:
            text = file.read_text()
            rows = list(csv.reader(text.splitlines())) if file.suffix == ".csv" else []
        assert not [s for s in ids if s in text], file
        assert not [row for row in rows if row and row[0] in own_birth and own_birth[row[0]] in row], file
        assert KEY not in text
        assert "term_detail" not in text or file.name.endswith("PSEUDONYMISED.txt")  # the notice names it
    key = str(written["base"] / "key")
    result = run(written["url"], "privacy", "scan", str(out / "shared"), str(out / "shared.xlsx"), "--key-file", key)
    assert result.exit_code == 0 and "allowed" not in result.stdout and "not checked" not in result.stdout
    notice = (out / "shared" / "PSEUDONYMISED.txt").read_text()
    assert notice == (out / "shared.PSEUDONYMISED.txt").read_text()
    for words in ("HMAC-SHA256", "between -180 and +180 and never 0, drawn for each patient from the key", "adverse_events.term_detail",
                  "Site: every site; patients: 61."):  # fmt: skip
        assert words in notice
    stdout = (out / "export-shared.stdout.txt").read_text()
    assert stdout == (
        f"Pseudonymised export of 61 patients (1386 rows) written to {out / 'shared'}\n"
        f"Columns left out: adverse_events.term_detail; what was done: {out / 'shared' / 'PSEUDONYMISED.txt'}\n"
    )


def test_same_key_same_bytes_other_key_other_pseudonyms(written, tmp_path):
    (tmp_path / "key").write_text(KEY)
    (tmp_path / "other").write_text(OTHER_KEY)
    url = written["url"]
    assert (
        run(url, "export", str(tmp_path / "again"), "--pseudonymise", "--key-file", str(tmp_path / "key")).exit_code
        == 0
    )
    first = written["out"] / "shared"
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in (tmp_path / "again").iterdir())
    for file in first.iterdir():
        assert file.read_bytes() == (tmp_path / "again" / file.name).read_bytes(), file.name
    assert (
        run(url, "export", str(tmp_path / "x.xlsx"), "--pseudonymise", "--key-file", str(tmp_path / "key")).exit_code
        == 0
    )
    assert (tmp_path / "x.xlsx").read_bytes() == (written["out"] / "shared.xlsx").read_bytes()
    assert (
        run(url, "export", str(tmp_path / "o"), "--pseudonymise", "--key-file", str(tmp_path / "other")).exit_code == 0
    )
    ours = {r["study_id"] for r in _read(first, "patients")}
    theirs = {r["study_id"] for r in _read(tmp_path / "o", "patients")}
    assert len(theirs) == 61 and not ours & theirs


def _flat(node, path=""):
    """A JSON document as {path: leaf}, so that approx compares every number in it."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{path}.{key}").items()}
    if isinstance(node, list):
        return {k: v for i, value in enumerate(node) for k, v in _flat(value, f"{path}[{i}]").items()}
    return {path: node}


def test_reimported_pseudonymised_export_gives_the_same_results(written, tmp_path):
    config = tmp_path / "wide.toml"
    config.write_text(WIDE_WINDOW)
    url = f"sqlite:///{tmp_path / 'collaborator.db'}"
    assert run(url, "db", "upgrade").exit_code == 0
    assert run(url, "site", "add", "DEMO", "Demo centre (synthetic data)").exit_code == 0
    imported = run(url, "import", str(written["out"] / "shared"))
    assert imported.exit_code == 0, imported.output
    for name, database in (("original", written["url"]), ("shared", url)):
        assert (
            run(database, "analyze", "--json", str(tmp_path / f"{name}.json"), "--config", str(config)).exit_code == 0
        )
    original, shared = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("original", "shared"))
    assert shared["flow"] == original["flow"] and original["flow"]["excluded"] == {}
    for subset in ("overall", "rpild"):
        assert shared[subset]["mortality"] == original[subset]["mortality"]
        assert shared[subset]["survival"] == original[subset]["survival"]
        # the same model on patients in another order: equal up to floating-point rounding
        got, want = _flat(shared[subset]["cox"]), _flat(original[subset]["cox"])
        assert got.keys() == want.keys()
        numbers = {k for k, v in want.items() if isinstance(v, float)}
        assert {k: got[k] for k in numbers} == pytest.approx({k: want[k] for k in numbers}, rel=1e-9, abs=1e-12)
        assert {k: got[k] for k in got.keys() - numbers} == {k: want[k] for k in want.keys() - numbers}
    assert [m["deaths"] for m in original["overall"]["mortality"][0]["groups"]] != [0, 0]


def test_pseudonymised_export_of_one_site(migrated, tmp_path):
    with audited_session(migrated, actor="test") as session:
        from registry.models import Site

        session.add_all([Site(code="DEMO", name="Demo"), Site(code="OTHER", name="Other")])
        session.commit()
    sheets = tmp_path / "sheets"
    shutil.copytree(FIXTURES / "example", sheets)
    _plant(sheets / "patients.csv", "EX-004,DEMO", "EX-004,OTHER")
    assert import_path(migrated, sheets, actor="test").written
    key = tmp_path / "key"
    key.write_text(KEY)
    url = migrated.url.render_as_string(hide_password=False)
    result = run(url, "export", str(tmp_path / "other"), "--pseudonymise", "--key-file", str(key), "--site", "OTHER")
    assert result.exit_code == 0, result.output
    assert [r["study_id"] for r in _read(tmp_path / "other", "patients")] == [_reference_pseudonym(KEY, "EX-004")]
    for sheet in SHEETS[1:]:
        assert {r["study_id"] for r in _read(tmp_path / "other", sheet.name)} <= {_reference_pseudonym(KEY, "EX-004")}
    assert "Site: OTHER; patients: 1." in (tmp_path / "other" / "PSEUDONYMISED.txt").read_text()
    result = run(url, "export", str(tmp_path / "none"), "--pseudonymise", "--key-file", str(key), "--site", "NOPE")
    assert (result.exit_code, result.stderr) == (
        2,
        "Nothing written: site NOPE is not registered (registered: DEMO, OTHER)\n",
    )
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("key_text", "args", "message"),
    [
        (None, ["--pseudonymise"], "--pseudonymise needs --key-file KEY (there is no default key)"),
        (None, ["--pseudonymise", "--key-file", "{key}"],
         "key file {key}: no such file (make one with: openssl rand -hex 32 > {key}, and keep it secret)"),
        ("short-key\n", ["--pseudonymise", "--key-file", "{key}"],
         "key file {key}: 9 bytes; a key needs at least 32 (make one with: openssl rand -hex 32 > {key})"),
        (KEY, ["--key-file", "{key}"], "--key-file and --site go with --pseudonymise"),
    ],
)  # fmt: skip
def test_a_missing_or_short_key_is_refused_and_nothing_written(tmp_path, key_text, args, message):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run(url, "db", "upgrade")
    key = tmp_path / "key"
    if key_text is not None:
        key.write_text(key_text)
    result = run(url, "export", str(tmp_path / "out"), *(a.format(key=key) for a in args))
    assert (result.exit_code, result.stderr) == (2, f"Nothing written: {message.format(key=key)}\n")
    assert not (tmp_path / "out").exists()


def test_every_data_sheet_names_its_patient_first():
    """The pseudonymised export replaces the first column of each data sheet."""
    assert {sheet.columns[0].name for sheet in SHEETS} == {"study_id"}


def test_a_pseudonymised_row_is_checked_against_its_own_patients_birth_date(tmp_path):
    """A shifted date may fall on another patient's birth date by chance, which identifies nobody; a row holding
    its own patient's true birth date is a leak. With the key the scan tells the two apart; without it, it says
    the rows went unchecked."""
    identifiers = Identifiers(birth_dates=frozenset({date(1961, 3, 4), date(1950, 1, 1)}),
                              birth_date_of={"DM-001": date(1961, 3, 4), "DM-002": date(1950, 1, 1)})  # fmt: skip
    one, two = _reference_pseudonym(KEY, "DM-001"), _reference_pseudonym(KEY, "DM-002")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "PSEUDONYMISED.txt").write_text("pseudonymised\n")
    with (tmp_path / "shared" / "labs.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["study_id", "analyte", "sample_date", "value", "unit"],
                                      [one, "crp", "1950-01-01", "5", "mg/L"],  # DM-002's birth date: nobody's leak
                                      [two, "crp", "1950-01-01", "5", "mg/L"],  # DM-002's own: a leak
                                      ["PS-0000000000000000", "crp", "1961-03-04", "5", "mg/L"]])  # fmt: skip
    keyed = Scanner(identifiers, KEY.encode()).scan([tmp_path])
    assert [str(f) for f in keyed.findings] == [
        f"{tmp_path / 'shared' / 'labs.csv'}: row 3, column sample_date: birth date 1********1"
    ]
    assert keyed.unchecked == {f"{tmp_path / 'shared' / 'labs.csv'} labs": 1}  # a pseudonym the key does not give
    unkeyed = Scanner(identifiers).scan([tmp_path])
    assert (unkeyed.findings, unkeyed.unchecked) == ([], {f"{tmp_path / 'shared' / 'labs.csv'} labs": 3})
