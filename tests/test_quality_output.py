"""`registry check` and `registry rules`: the summary, exit codes, JSON, HTML, the catalogue docs."""

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from registry.cli import app
from registry.quality import RULES

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "fixtures" / "example"


def registry_with(url: str, folder: Path):
    for args in (["site", "add", "DEMO", "Demo", "--actor", "t"], ["import", str(folder), "--actor", "t"]):
        result = runner.invoke(app, ["--database", url, *args])
        assert result.exit_code == 0, result.output
    return lambda *args: runner.invoke(app, ["--database", url, *args])


def test_rules_markdown_is_the_catalogue_in_docs():
    result = runner.invoke(app, ["rules", "--format", "markdown"])
    assert result.exit_code == 0
    assert result.output == (REPO / "docs" / "rules.md").read_text(encoding="utf-8")


def test_rules_lists_every_rule_once():
    lines = runner.invoke(app, ["rules"]).output.splitlines()
    assert [line.split()[0] for line in lines] == [rule.id for rule in RULES]
    assert lines[0].split()[:2] == ["SIT-001", "error"]


def test_a_clean_registry_exits_0(migrated, database_url, tmp_path):
    check = registry_with(database_url, EXAMPLE)
    result = check("check", "--strict", "--json", str(tmp_path / "f.json"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"{len(RULES)} rules run: 0 error finding(s), 0 warning finding(s)"
    document = json.loads((tmp_path / "f.json").read_text())
    assert (document["status"], document["findings"], len(document["summary"])) == ("clean", [], len(RULES))


def test_warnings_exit_1_only_when_strict(migrated, database_url, tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "sheets")
    patients = tmp_path / "sheets" / "patients.csv"
    patients.write_text(
        patients.read_text().replace("EX-002,DEMO,male,1975-11-30,former,", "EX-002,DEMO,male,1975-11-30,,")
    )
    check = registry_with(database_url, tmp_path / "sheets")
    relaxed, strict = check("check"), check("check", "--strict")
    assert (relaxed.exit_code, strict.exit_code) == (0, 1)
    *summary, chain = relaxed.output.splitlines()
    assert summary == [
        f"{len(RULES)} rules run: 0 error finding(s), 1 warning finding(s)",
        "   rule     category severity  checked  failing percent",
        "PAT-015 completeness  warning        4        1    25.0",
        "Queries: 0 open (awaiting the site), 0 answered (awaiting a data manager), 0 closed",
        "Record status: 4 in progress, 0 complete, 0 verified, 0 signed",
    ]
    assert re.fullmatch(r"audit log intact: \d+ entries, head \d+ [0-9a-f]{64}", chain)


def test_errors_exit_2_and_every_finding_is_written(migrated, database_url, tmp_path):
    check = registry_with(database_url, REPO / "fixtures" / "dirty" / "sheets")
    result = check("check", "--json", str(tmp_path / "f.json"), "--html", str(tmp_path / "f.html"))
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == f"{len(RULES)} rules run: 64 error finding(s), 18 warning finding(s)"
    document = json.loads((tmp_path / "f.json").read_text())
    assert document["status"] == "errors" and document["counts"] == {"error": 64, "warning": 18}
    assert len(document["findings"]) == 82
    lab = next(f for f in document["findings"] if f["rule"] == "LAB-010")
    assert lab == {
        "rule": "LAB-010", "severity": "error", "category": "conformance: value", "table": "lab_result",
        "record": lab["record"], "study_id": "DM-012", "field": "unit", "value": "mg/dL",
        "message": "unit is not the analyte's canonical unit",
    }  # fmt: skip
    failing = {row["rule"]: row["failing"] for row in document["summary"]}
    assert failing["TIM-002"] == 8  # 4 records and the 4 last contacts they follow


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.ids += [v for k, v in attrs if k == "id"]

    def handle_data(self, data):
        self.text.append(data)


def test_the_html_page_groups_by_rule_and_patient_and_escapes_values(migrated, database_url, tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "sheets")
    labs = tmp_path / "sheets" / "labs.csv"
    labs.write_text(labs.read_text().replace("EX-001,crp,2018-05-03,18.5,mg/L", "EX-001,crp,2018-05-03,18.5,<b>mg</b>"))
    check = registry_with(database_url, tmp_path / "sheets")
    assert check("check", "--html", str(tmp_path / "f.html")).exit_code == 2
    page = (tmp_path / "f.html").read_text()
    assert "<b>mg</b>" not in page and "&lt;b&gt;mg&lt;/b&gt;" in page
    parsed = _Text()
    parsed.feed(page)
    assert {"summary", "by-rule", "by-patient", "LAB-010", "patient-EX-001"} <= set(parsed.ids)
    assert "<b>mg</b>" in parsed.text


def test_a_bad_configuration_stops_the_check(tmp_path):
    (tmp_path / "registry.toml").write_text("enrolment_start = 2017\n")
    result = runner.invoke(app, ["--database", f"sqlite:///{tmp_path / 'r.db'}", "check", "--config",
                                 str(tmp_path / "registry.toml")])  # fmt: skip
    assert result.exit_code == 2
    assert "enrolment_start: 2017 is not a date" in result.output
