"""The benchmark scripts keep working (their figures are measured, never asserted)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import write_section
from benchmarks.entry_checks import CHANGES

REPO = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], check=True, capture_output=True, cwd=REPO)


def test_import_benchmark_runs_on_a_small_workbook(tmp_path):
    out = tmp_path / "benchmarks.md"
    _run("import_workbook", "--patients", "20", "--output", str(out))
    assert "Synthetic CSV workbook: 20 patients, 295 rows over 8 sheets." in out.read_text()


def test_pipeline_benchmark_runs_on_the_demo_cohort(tmp_path):
    out = tmp_path / "benchmarks.md"
    _run("pipeline", "--sizes", "61,122", "--output", str(out))
    text = out.read_text()
    assert "| step | 61 patients (1,387 rows) | 122 patients (2,774 rows) |" in text
    for step in ("read floor", "load tables", "checks", "cohort + analyses", "report figures", "report PDF"):
        assert f"| {step} | " in text
    assert "| findings (error / warning) | 0 / 0 | 0 / 0 |" in text


def test_each_benchmark_rewrites_only_its_own_section(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nIntro.\n")
    write_section("a", ["first"], out)
    write_section("b", ["second"], out)
    write_section("a", ["third"], out)
    assert out.read_text() == (
        "# Benchmarks\n\nIntro.\n\n<!-- begin a -->\nthird\n<!-- end a -->\n\n<!-- begin b -->\nsecond\n<!-- end b -->\n"
    )


def test_check_benchmark_runs_on_a_small_registry(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n<!-- begin import_workbook -->\nkept\n<!-- end import_workbook -->\n")
    _run("check_registry", "--patients", "40", "--output", str(out))
    text = out.read_text()
    assert "<!-- begin import_workbook -->\nkept\n<!-- end import_workbook -->" in text
    section = text.split("<!-- begin check_registry -->\n", 1)[1].split("<!-- end check_registry -->", 1)[0]
    assert "| step | 40 patients (591 rows) |" in section
    assert "- 40 patients: site 1, patient 40, antibody_test 80, lab_result 200," in section
    for step in ("read floor", "`load_tables`", "`run_checks` (whole catalogue)", "load + checks", "peak memory"):
        assert f"| {step}" in section
    assert "| findings (error / warning) | 0 / 0 |" in section


def test_web_load_benchmark_runs_against_a_real_server(tmp_path):
    out = tmp_path / "benchmarks.md"
    _run("web_load", "--clients", "2", "--seconds", "2", "--no-postgres", "--output", str(out))
    section = out.read_text().split("<!-- begin web_load -->\n", 1)[1].split("<!-- end web_load -->", 1)[0]
    assert "| database | request | count | requests/s | median ms | p95 ms | p99 ms | max ms | errors |" in section
    for request in ("GET /patients (list of 61)", "POST /patients/{id}/edit (save)", "POST /patients/{id}/labs/new"):
        assert f" | {request}" in section
    assert "PostgreSQL: not measured (`--no-postgres`)." in section


def test_scale_benchmark_runs_on_the_smallest_registry(tmp_path):
    out = tmp_path / "benchmarks.md"
    _run("scale", "--sizes", "61", "--databases", "sqlite", "--output", str(out))
    section = out.read_text().split("<!-- begin scale -->\n", 1)[1].split("<!-- end scale -->", 1)[0]
    assert "## Scale: import, check, analyze, report (`benchmarks/scale.py`)" in section
    assert re.search(r"^\| step \| SQLite [\d.]+, 61 patients \([\d,]+ rows\) \|$", section, re.MULTILINE)
    for step in ("`registry import`", "floor: raw DB-API `executemany` insert", "import / floor", "`registry check`",
                 "floor: `pandas.read_sql` of each table", "check / floor", "`registry analyze`",
                 "floor: bare `CoxPHFitter().fit`, adjusted model", "`registry report`", "peak memory"):  # fmt: skip
        assert f"| {step}" in section
    assert "| target | SQLite, 61 patients |" in section
    assert "`registry demo`" in section and "start-up alone" in section


def test_entry_checks_benchmark_runs_on_a_small_registry(tmp_path):
    out = tmp_path / "benchmarks.md"
    _run("entry_checks", "--patients", "40", "--new", "8", "--output", str(out))
    text = out.read_text()
    assert "copied to 40 clean patients" in text
    for change in CHANGES:
        assert re.search(rf"\| a save's checks, {re.escape(change)}: median of 20 patients .* \| \d+ ms \|", text)
    assert "the ILD diagnosis a day later (a date 17 rules read)" in CHANGES
    assert re.search(
        r"\| import of 8 new patients \(every sheet\), without the checks: median of 3 \(.*\) \| [\d.]+ s \|", text
    )
    assert re.search(
        r"\| the same import with the checks \(`--strict`\): median of 3 \(.*\), 0 findings \| [\d.]+ s \([+-]\d+ %\)",
        text,
    )
    assert re.search(r"\| the import's check of its 8 patients, timed alone: median of 3 \| [\d.]+ s", text)


def test_versus_r_benchmark_runs_on_the_demo_cohort(tmp_path):
    out = tmp_path / "benchmarks.md"
    _run("versus_r", "--sizes", "61", "--repeats", "1", "--output", str(out))
    section = out.read_text().split("<!-- begin versus_r -->\n", 1)[1].split("<!-- end versus_r -->", 1)[0]
    assert "## `registry analyze` against the R script, and start-up (`benchmarks/versus_r.py`)" in section
    row = re.search(r"^\| 61 \(61\) \(demo\) \| ([\d.]+) s \| (.*) \| (.*) \| (.*) \| (.*) \| (.*) \| [\d.]+ s \|$", section,
                    re.M)  # fmt: skip
    assert row, section
    database, database_ratio, table, table_ratio, numbers = row.groups()[1:]
    measured = r"[\d.]+ \(the registry (faster|slower)\)"
    if shutil.which("Rscript"):
        assert re.fullmatch(r"[\d.]+ s", table) and re.fullmatch(measured, table_ratio)
        assert numbers == "equal (patients, adjusted HR and limits to 6 decimals)"
        assert re.fullmatch(measured, database_ratio) or (database, database_ratio) == (
            "failed (RSQLite is not installed)",
            "n/a",
        )
    else:
        assert (database, database_ratio, table, table_ratio, numbers) == (
            "failed (Rscript is not installed)",
            "n/a",
            "failed (Rscript is not installed)",
            "n/a",
            "n/a",
        )
    for command in ("registry --version", "registry check", "registry analyze", "registry demo"):
        assert re.search(
            rf"^\| `{command}` \| [\d.]+ s \| <= [\d.]+ s \| (met|\*\*missed\*\*) \|$", section, re.MULTILINE
        )


def test_before_after_benchmark_runs_against_a_commit(tmp_path):
    out = tmp_path / "benchmarks.md"
    _run("before_after", "--before", "HEAD", "--patients", "61", "--repeats", "1", "--output", str(out))
    section = out.read_text().split("<!-- begin before_after -->\n", 1)[1].split("<!-- end before_after -->", 1)[0]
    assert "## Before and after a change, side by side (`benchmarks/before_after.py`)" in section
    cell = r"[\d.]+ s, [\d,]+ MB"
    for command in ("`registry --version`", "`registry check`, 61 patients", "`registry analyze`, 61 patients",
                    "`registry report`, 61 patients", "`registry demo (61 patients, from scratch)`"):  # fmt: skip
        assert re.search(rf"^\| {re.escape(command)} \| {cell} \| {cell} \| [\d.]+ \(.+\) \|$", section, re.M), command
    listed = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, cwd=REPO).stdout
    assert "registry-before-" not in listed  # the temporary worktree is gone
