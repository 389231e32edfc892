"""The `registry` command, run as a user runs it."""

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import registry
from registry import db
from registry.cli import app
from registry.models import TABLES
from registry.quality import RULES
from tests.conftest import add_demo_site, drop_append_only_triggers, modules_loaded_by

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("registry")  # the installed console script
runner = CliRunner()


def run(*args: str, database: str | None = None):
    prefix = ["--database", database] if database else []
    return runner.invoke(app, [*prefix, *args], catch_exceptions=False)


@pytest.mark.parametrize("command", [[str(SCRIPT)], [sys.executable, "-m", "registry"]], ids=["script", "module"])
def test_console_script_prints_version_and_passes_exit_codes_on(command):
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout == f"mda5-registry {registry.__version__}\n"
    assert registry.__version__ != "0+unknown"
    usage = subprocess.run([*command, "no-such-command"], capture_output=True, text=True)
    assert usage.returncode == 2 and "No such command 'no-such-command'" in usage.stderr


#: What a command loads only when it needs it (start-up time: the database layer alone takes about 0.4 s).
HEAVY = ("sqlalchemy", "sqlmodel", "pandas", "numpy", "scipy", "pandera", "matplotlib", "weasyprint", "registry.db")


@pytest.mark.parametrize("args", [["--version"], ["rules", "--help"], ["db", "upgrade", "--help"]])
def test_the_command_line_starts_without_the_database_or_analysis_libraries(args):
    """`registry --version` and every command's help load the commands, none of the libraries they use."""
    assert modules_loaded_by(args, HEAVY) == []


@pytest.mark.parametrize(("given", "expected"), [(None, 1), ("2", 2)], ids=["default", "set-by-the-user"])
def test_the_console_command_runs_blas_on_one_thread_unless_told_otherwise(given, expected):
    """registry.cli.run sets BLAS to one thread before numpy loads (the analyses run threads of their own); a thread
    count the user sets stands. Read back by threadpoolctl (installed with scikit-learn, which firthmodels needs)."""
    pytest.importorskip("threadpoolctl")
    probe = (
        "import sys; from registry.cli import run; sys.argv = ['registry', '--version']\n"
        "try: run()\n"
        "except SystemExit: pass\n"
        "import numpy, threadpoolctl\n"
        "print([pool['num_threads'] for pool in threadpoolctl.threadpool_info() if pool['user_api'] == 'blas'])"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                                    "OMP_NUM_THREADS")}  # fmt: skip
    if given:
        environment["OPENBLAS_NUM_THREADS"] = given
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=environment)
    threads = json.loads(done.stdout.splitlines()[-1])
    assert threads and set(threads) == {expected}


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("db", "dictionary", "summary", "demo"):
        assert command in result.output


def test_db_upgrade_current_downgrade(database_url):
    result = run("db", "current", database=database_url)
    assert (result.exit_code, result.output) == (
        1,
        f"base (no schema) (behind: newest is {db.head_revision()}; run `registry db upgrade`)\n",
    )
    result = run("db", "upgrade", database=database_url)
    assert result.exit_code == 0
    assert result.output == f"{db.redacted(database_url)}: schema at revision {db.head_revision()}\n"
    assert run("db", "current", database=database_url).output == f"{db.head_revision()} (up to date)\n"

    result = run("db", "downgrade", "base", "--yes", database=database_url)
    assert result.output == f"{db.redacted(database_url)}: schema at revision base (empty)\n"
    assert sa.inspect(db.make_engine(database_url)).get_table_names() == ["alembic_version"]


def test_a_downgrade_past_the_audit_chain_is_refused_unless_forced_and_then_logged(database_url):
    assert run("db", "upgrade", database=database_url).exit_code == 0
    add_demo_site(db.make_engine(database_url))
    refused = run("db", "downgrade", "base", "--yes", database=database_url)
    assert (refused.exit_code, refused.output) == (1, (
        "Downgrade refused: the audit log holds 1 entry, and migrating below 0007 drops its hash chain (on to "
        "base, the log itself): back the database up first (`registry backup`), then pass --force (the downgrade "
        "is logged)\n"
    ))  # fmt: skip
    assert db.current_revision(db.make_engine(database_url)) == db.head_revision()  # nothing dropped
    verified = run("audit", "verify", database=database_url)
    assert (verified.exit_code, verified.output.split(",")[0]) == (0, "audit log intact: 1 entry")

    forced = run("db", "downgrade", "0006", "--yes", "--force", "--actor", "op", database=database_url)
    assert forced.exit_code == 0
    assert forced.stderr.splitlines()[0].startswith(
        f"Forced downgrade from {db.head_revision()} to 0006, logged; before it, the audit log intact: 2 entries, head 2 "
    )
    with db.make_engine(database_url).connect() as connection:
        logged = connection.execute(sa.text("SELECT actor, action, table_name, reason FROM audit_log ORDER BY id"))
        assert logged.all()[-1] == ("op", "downgrade", "(database)", "downgrade to 0006 (forced)")
    assert run("db", "upgrade", database=database_url).exit_code == 0  # chains the entries again
    verified = run("audit", "verify", database=database_url)  # the two entries sealed together by the upgrade
    assert verified.output.startswith("audit log intact: 2 entries, head 1 ")


def test_audit_verify_names_the_first_broken_entry(database_url):
    assert run("db", "upgrade", database=database_url).exit_code == 0
    add_demo_site(db.make_engine(database_url))
    drop_append_only_triggers(db.make_engine(database_url))
    with db.make_engine(database_url).begin() as connection:
        connection.execute(sa.text("UPDATE audit_log SET reason = 'rewritten' WHERE id = 1"))
    broken = run("audit", "verify", database=database_url)
    message = (
        "audit log BROKEN at audit entry 1 (sealed at chain position 1): its content was changed after it was "
        "written (it no longer gives its stored hash) (0 entries verified before it)\n"
        "See docs/operations.md, 'When the audit chain is broken'\n"
    )
    assert (broken.exit_code, broken.output) == (1, message)
    checked = run("check", database=database_url)
    assert (checked.exit_code, checked.output) == (2, message)


def test_downgrade_asks_before_dropping_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run("db", "upgrade", database=url)
    result = runner.invoke(app, ["--database", url, "db", "downgrade", "base"], input="n\n")
    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert db.current_revision(db.make_engine(url)) == db.head_revision()


def test_database_url_from_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv(db.URL_VARIABLE, url)
    assert run("db", "upgrade").exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_summary_counts_rows_per_table(migrated, database_url):
    result = run("summary", database=database_url)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"Database  {db.redacted(database_url)}"
    assert lines[1] == f"Schema    revision {db.head_revision()} (newest)"
    assert lines[3].split()[:3] == ["table", "rows", "deleted"]
    soft = {model.__table__.name for model in TABLES if "deleted_at" in model.__table__.c}
    assert soft == {"patient", "antibody_test", "lab_result", "pft", "hrct", "treatment", "adverse_event", "follow_up"}
    assert [line.split() for line in lines[4:]] == [
        [model.__table__.name, "0", *(["0"] if model.__table__.name in soft else [])] for model in TABLES
    ]


def test_summary_of_an_empty_database_says_what_to_do(tmp_path):
    result = run("summary", database=f"sqlite:///{tmp_path / 'new.db'}")
    assert result.exit_code == 1
    assert "Schema    not created: run `registry db upgrade`" in result.output


def test_dictionary_csv_lists_every_column(tmp_path):
    result = run("dictionary", "--format", "csv")
    rows = {(r["table"], r["column"]) for r in csv.DictReader(io.StringIO(result.output))}
    assert rows == {(m.__table__.name, c.name) for m in TABLES for c in m.__table__.columns}

    result = run("dictionary", "--output", str(tmp_path / "dictionary.md"))
    assert result.output == f"{len(rows)} columns written to {tmp_path / 'dictionary.md'}\n"
    assert (tmp_path / "dictionary.md").read_text().startswith("# Data dictionary\n")


def test_dictionary_rejects_unknown_format():
    result = runner.invoke(app, ["dictionary", "--format", "pdf"])
    assert result.exit_code == 2
    words = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # unwrap typer's error box
    assert "Invalid value for '--format' / '-f': Value error, 'pdf' is not one of 'markdown', 'csv'." in words


def test_demo_builds_a_fresh_registry(tmp_path):
    done = subprocess.run([str(SCRIPT), "demo", "--dir", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Database  sqlite:///demo/registry.db" in done.stdout
    lines = done.stdout.splitlines()
    counts = {line.split()[0]: line.split()[1:] for line in lines[4:31]}
    assert counts == {
        "site": ["1"], "patient": ["61", "0"], "patient_identifier": ["0"], "antibody_test": ["122", "0"],
        "lab_result": ["732", "0"], "pft": ["61", "0"], "hrct": ["61", "0"], "treatment": ["243", "0"],
        "adverse_event": ["45", "0"], "follow_up": ["61", "0"], "account": ["0"], "account_site": ["0"],
        "finding_review": ["0"], "data_query": ["0"], "query_message": ["0"],
        "patient_status": ["0"], "signature": ["0"], "data_cut": ["0"], "web_session": ["0"], "sign_in_event": ["0"],
        "sign_in_throttle": ["0"], "api_token": ["0"], "api_token_site": ["0"], "api_token_use": ["0"],
        "audit_seal": ["2"], "audit_entry_hash": ["1387"],
        "audit_log": ["1387"],
    }  # fmt: skip
    assert f"{len(RULES)} rules run: 0 error finding(s), 0 warning finding(s)" in lines
    assert "overall mortality at 6 months: tacrolimus 22/35, tofacitinib 10/26; log-rank p = 0.028" in lines
    assert "overall adjusted HR tofacitinib: 0.438 (0.200-0.960), p = 0.039" in lines
    assert (tmp_path / "demo" / "results.json").exists()
    assert lines[-1] == f"Report written to {tmp_path / 'demo' / 'report.pdf'}"
    assert (tmp_path / "demo" / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert sorted(path.name for path in (tmp_path / "demo").iterdir()) == ["registry.db", "report.pdf", "results.json"]
    alone = tmp_path / "copied.db"  # the database file alone holds everything: no write-ahead log left beside it
    alone.write_bytes((tmp_path / "demo" / "registry.db").read_bytes())
    with sqlite3.connect(alone) as copy:
        assert copy.execute("SELECT count(*) FROM patient").fetchone() == (61,)
    copy.close()
    again = subprocess.run([str(SCRIPT), "demo", "--dir", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert again.stdout == done.stdout  # rebuilt from scratch, not appended to; same data, same fingerprint


@pytest.mark.parametrize("command", [["alembic", "upgrade", "head"], ["alembic", "downgrade", "base"]])
def test_plain_alembic_works_from_the_repository_root(tmp_path, command):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    env = {"PATH": str(Path(sys.executable).parent), db.URL_VARIABLE: url}
    subprocess.run(["alembic", "upgrade", "head"], cwd=REPO, env=env, check=True, capture_output=True)
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    expected = db.head_revision() if command[1] == "upgrade" else None
    assert db.current_revision(db.make_engine(url)) == expected


EXAMPLE = REPO / "fixtures" / "example"


@pytest.fixture
def site_registry(migrated, database_url):
    assert (
        run("site", "add", "DEMO", "Demo centre", "--actor", "admin", database=database_url).output
        == "Site DEMO added\n"
    )
    return database_url


@pytest.mark.parametrize(
    ("code", "message"),
    [("DEMO", "site: another record already has the same code"), ("X" * 17, "code is longer than 16 characters")],
)
def test_site_add_refuses_a_duplicate_or_too_long_code(site_registry, code, message):
    result = runner.invoke(app, ["--database", site_registry, "site", "add", code, "Again", "--actor", "admin"])
    assert (result.exit_code, result.output) == (1, f"Not added: {message}\n")
    assert run("site", "list", database=site_registry).output == "DEMO\tDemo centre\t\n"


def test_import_twice_then_audit_history(site_registry, tmp_path):
    first = run("import", str(EXAMPLE), "--actor", "coordinator1", database=site_registry)
    assert first.exit_code == 0
    assert first.output.splitlines()[0] == "Checks: the import adds 0 errors and 0 warnings; 0 records still to enter."
    assert first.output.splitlines()[2].split() == ["patients", "4", "0", "0"]
    assert first.output.splitlines()[-1] == "Imported example."
    again = run("import", str(EXAMPLE), "--actor", "coordinator1", database=site_registry)
    assert again.output.splitlines()[-1] == "Nothing changed: the registry already holds every row of example."

    history = run("audit", "history", "EX-002", database=site_registry).output.splitlines()
    assert history[0].endswith("coordinator1  insert patient 2 (import of example)")
    assert "    sex: (empty) -> male" in history
    assert (
        sum(line.startswith("20") for line in history) == 1 + 2 + 5 + 1 + 1 + 2 + 1 + 1
    )  # one per record, sheet by sheet
    assert run("audit", "history", "EX-404", database=site_registry).exit_code == 1


def test_import_reports_every_error_and_writes_the_table(site_registry, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "labs.csv").write_text("study_id,analyte,sample_date,value,unit\nEX-1,crp,03/04/2019,<5,mg/L\n")
    result = runner.invoke(app, ["--database", site_registry, "import", str(bad), "--errors", str(tmp_path / "e.csv")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        'error: labs.csv row 2, column sample_date: "03/04/2019" is not an ISO 8601 date (YYYY-MM-DD); day and month order is ambiguous and never guessed',
        'error: labs.csv row 2, column value: "<5" is not a number (qualifiers such as < or > cannot be stored: enter the number alone)',
        "2 problems written to " + str(tmp_path / "e.csv"),
        "2 errors, 0 warnings: nothing was written.",
    ]
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 3


DIRTY = REPO / "fixtures" / "dirty" / "sheets"


def test_import_dry_run_lists_the_findings_it_would_add_per_rule_and_patient(site_registry, tmp_path):
    result = run("import", str(DIRTY), "--dry-run", "--errors", str(tmp_path / "e.csv"), database=site_registry)
    lines = result.output.splitlines()
    assert (result.exit_code, lines[:3]) == (0, [
        "Checks: the import adds 62 errors and 16 warnings; 4 records still to enter.",
        "By rule:",
        "  ABT-011  warning      1  grade and value disagree about positivity (value against cut-off)",
    ])  # fmt: skip
    assert "  TIM-002  error        8  a record is dated after the last contact" in lines
    assert "  DM-012  LAB-010 error: lab_result.unit = mg/dL: unit is not the analyte's canonical unit" in lines
    assert (  # a birth date never reaches the screen
        "  DM-027  PAT-010 error: patient.birth_date = (withheld: a birth date, see the patient's record): "
        "age at diagnosis is outside 18-100 years"
    ) in lines
    start = lines.index("Still to enter (a later import or the web form adds them; never refused by --strict):")
    assert lines[start + 1 : start + 3] == ["  ABT-010  1 patient  no anti-MDA5 result",
                                            "  FUP-010  1 patient  no follow-up record (vital status unknown)"]  # fmt: skip
    assert f"0 problems and 82 findings written to {tmp_path / 'e.csv'}" in lines
    assert lines[-1] == "Dry run: the workbook is valid; nothing was written."
    rows = list(csv.reader((tmp_path / "e.csv").open(encoding="utf-8")))
    assert len(rows) == 1 + 82
    assert ["error", "labs", "", "unit", "mg/dL", "LAB-010 DM-012: unit is not the analyte's canonical unit"] in rows
    assert ["error", "patients", "", "antibody", "", "ABT-010 DM-016: still to enter: no anti-MDA5 result"] in rows
    assert run("summary", database=site_registry).output.count(" 0\n") >= 9


def test_import_strict_refuses_an_import_that_adds_errors(site_registry):
    result = run("import", str(DIRTY), "--strict", database=site_registry)
    assert result.exit_code == 1
    assert result.output.splitlines()[-2:] == [
        "error: checks: the import adds 62 error findings (strict): nothing was written",
        "1 error, 0 warnings: nothing was written.",
    ]
    assert run("summary", database=site_registry).output.count(" 0\n") >= 9
    clean = run("import", str(EXAMPLE), "--strict", database=site_registry)
    assert (clean.exit_code, clean.output.splitlines()[-1]) == (0, "Imported example.")


def test_check_site_gives_the_whole_runs_findings_for_that_sites_patients_only(site_registry, tmp_path):
    assert run("import", str(DIRTY), database=site_registry).exit_code == 0
    assert run("site", "add", "NJ1", "Other centre", "--actor", "admin", database=site_registry).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "patients.csv").write_text("study_id,site,sex,birth_date,dm_diagnosis_date,ild_diagnosis_date\n"
                                        "NJ-001,NJ1,male,1960-01-01,2020-01-02,2020-02-03\n")  # fmt: skip
    assert run("import", str(other), database=site_registry).exit_code == 0

    def findings(*args: str) -> list[tuple[str, str]]:
        result = run("check", "--json", str(tmp_path / "f.json"), *args, database=site_registry)
        assert result.exit_code == 2, result.output  # errors
        found = json.loads((tmp_path / "f.json").read_text())["findings"]
        return sorted((f["rule"], f["study_id"]) for f in found)

    whole, demo, nj1 = findings(), findings("--site", "DEMO"), findings("--site", "NJ1")
    assert nj1 == [("ABT-010", "NJ-001"), ("FUP-010", "NJ-001"), ("PAT-015", "NJ-001"), ("PAT-016", "NJ-001"),
                   ("PAT-017", "NJ-001"), ("TRT-010", "NJ-001")]  # fmt: skip
    assert sorted(demo + nj1) == whole and len(demo) == 82
    summary = run("check", "--site", "NJ1", database=site_registry).output.splitlines()
    assert summary[0] == f"{len(RULES)} rules run: 3 error finding(s), 3 warning finding(s)"
    assert summary[2].split() == ["PAT-015", "completeness", "warning", "1", "1", "100.0"]


def test_check_site_refuses_an_unknown_site_and_a_data_cut(site_registry):
    unknown = run("check", "--site", "XX", database=site_registry)
    assert (unknown.exit_code, unknown.output) == (2, "Site XX is not registered (registered: DEMO)\n")
    with_cut = run("check", "--site", "DEMO", "--cut", "c1", database=site_registry)
    assert (with_cut.exit_code, with_cut.output) == (
        2,
        "--site checks the registry as it is now: it does not go with --cut\n",
    )


def test_import_dry_run_and_unreadable_path(site_registry, tmp_path):
    result = run("import", str(EXAMPLE), "--dry-run", database=site_registry)
    assert result.output.splitlines()[-1] == "Dry run: the workbook is valid; nothing was written."
    assert run("summary", database=site_registry).output.count(" 0\n") >= 9
    missing = runner.invoke(app, ["--database", site_registry, "import", str(tmp_path / "nope.xlsx")])
    assert (missing.exit_code, missing.output) == (2, f"{tmp_path / 'nope.xlsx'}: no such file or folder\n")


def test_import_of_a_damaged_workbook_or_an_unreadable_csv_says_so_in_one_line(site_registry, tmp_path, monkeypatch):
    """A sheet cut short gave a ParseError traceback, a CSV cell past the csv module's limit a _csv.Error one
    (issue 17, point 2): now one line each, exit 2, and nothing written."""
    import zipfile

    run("export", str(tmp_path / "out.xlsx"), database=site_registry)
    with zipfile.ZipFile(tmp_path / "out.xlsx") as book:
        parts = {name: book.read(name) for name in book.namelist()}
    parts["xl/worksheets/sheet1.xml"] = parts["xl/worksheets/sheet1.xml"][:-100]
    with zipfile.ZipFile(tmp_path / "cut.xlsx", "w") as book:
        for name, content in parts.items():
            book.writestr(name, content)
    result = runner.invoke(app, ["--database", site_registry, "import", str(tmp_path / "cut.xlsx")])
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"{tmp_path / 'cut.xlsx'}: sheet patients is damaged and cannot be read (")

    monkeypatch.setattr("registry.workbook._CSV_FIELD_LIMIT", 100)
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "patients.csv").write_text(
        f'study_id,site,sex,birth_date\n"{"x" * 101}",DEMO,male,1970-01-01\n', encoding="utf-8"
    )
    result = runner.invoke(app, ["--database", site_registry, "import", str(tmp_path / "cases")])
    assert (result.exit_code, result.output) == (
        2,
        "patients.csv line 2: cannot be read as CSV (field larger than field limit (100); a cell may hold at most "
        "100 characters): nothing was imported\n",
    )
    assert run("summary", database=site_registry).output.count(" 0\n") >= 9  # nothing written


def test_template_and_export_commands(site_registry, tmp_path):
    assert run("template", str(tmp_path / "t.xlsx")).output == f"Template written to {tmp_path / 't.xlsx'}\n"
    run("import", str(EXAMPLE), database=site_registry)
    result = run("export", str(tmp_path / "out.xlsx"), database=site_registry)
    assert result.output == f"Exported 59 rows to {tmp_path / 'out.xlsx'}\n"


def test_analyze_and_report_of_an_empty_registry_say_why(site_registry, tmp_path):
    # An empty registry once crashed the cohort builder (pandas named an empty merge's index patient_id).
    analysed = run("analyze", "--json", str(tmp_path / "r.json"), database=site_registry)
    assert (analysed.exit_code, analysed.stderr) == (1, "No patient can be analysed: the registry holds no patients\n")
    reported = run("report", "--out", str(tmp_path / "r.pdf"), database=site_registry)
    assert (reported.exit_code, reported.stderr) == (1, "no patient can be analysed: the registry holds no patients\n")
    assert not (tmp_path / "r.pdf").exists()
