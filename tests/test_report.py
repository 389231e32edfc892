"""The PDF report, rendered for real and read back: numbers, figures, the data-quality gate, the archive.

The demo registry is rendered once; the tests read the PDF's text with pypdf and
compare it, section by section, with the results document the same run produced,
and rasterise the figure pages with poppler's pdftoppm.
"""

import io
import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from conftest import add_demo_site
from PIL import Image
from pypdf import PdfReader
from typer.testing import CliRunner

from registry import db
from registry.cli import ReportExit, app
from registry.config import Config
from registry.ingest import import_path
from registry.quality import RULES
from registry.report.archive import locked
from registry.report.build import ReportRefused, build_report
from registry.report.numbers import format_p, format_percent, format_proportion, format_ratio
from registry.tables import load_tables

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TODAY = date(2026, 11, 25)
runner = CliRunner()


def _registry(folder: Path, path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    add_demo_site(engine)
    assert import_path(engine, folder, actor="test").written
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory) -> str:
    return _registry(FIXTURES / "demo", tmp_path_factory.mktemp("demo") / "registry.db")


@pytest.fixture(scope="module")
def demo(demo_url, tmp_path_factory):
    made = build_report(load_tables(db.make_engine(demo_url)), Config(), today=TODAY)
    path = tmp_path_factory.mktemp("report") / "report.pdf"
    path.write_bytes(made.pdf)
    pages = [page.extract_text() for page in PdfReader(path).pages]
    return made, path, pages


def section(pages: list[str], title: str) -> str:
    """The text of the pages from the one that starts with ``title`` to the next section's."""
    starts = [i for i, text in enumerate(pages) if text.startswith(title + "\n")]
    assert starts, title
    following = [i for i, text in enumerate(pages) if i > starts[0] and text.split("\n")[0] in SECTIONS]
    return "\n".join(pages[starts[0] : following[0] if following else None])


SECTIONS = {
    "Patient flow",
    "Data quality",
    "Baseline characteristics",
    "Mortality",
    "Kaplan–Meier survival",
    "Cox regression",
    "Sensitivity analyses",
    "Safety",
    "Methods and limitations",
}


def test_the_cover_names_the_data_and_its_quality(demo):
    made, _, pages = demo
    cover = pages[0]
    assert made.results["data_fingerprint"] in cover.replace("\n", "")
    assert f"clean: no findings ({len(RULES)} rules)" in cover
    assert "tacrolimus 35, tofacitinib 26 of 61 registered" in cover
    for title in SECTIONS:
        assert title in cover  # the table of contents


def test_every_page_has_the_running_header_and_its_number(demo):
    _, _, pages = demo
    for n, text in enumerate(pages[1:], start=2):
        assert "MDA5-ILD registry Data cut-off: none (last contact)" in text
        assert f"Page {n} of {len(pages)}" in text


def test_patient_flow(demo):
    made, _, pages = demo
    text = section(pages, "Patient flow")
    assert f"Patients in the registry\nn = {made.results['flow']['registered']}" in text
    for group, n in made.results["flow"]["analysed"].items():
        assert f"{group}\nn = {n}" in text
    assert "RPILD: 22" in text and "RPILD: 13" in text


def test_mortality_numbers_equal_the_results(demo):
    made, _, pages = demo
    text = section(pages, "Mortality")
    for subset in ("overall", "rpild"):
        for entry in made.results[subset]["mortality"]:
            first = entry["groups"][0]
            for g in entry["groups"]:
                km = g["km_mortality"]
                limits = ("(not estimable)" if km["lower"] is None or km["upper"] is None
                          else f"({format_proportion(km['lower'])}–{format_proportion(km['upper'])})")  # fmt: skip
                row = f"{g['group']} {g['deaths']}/{g['known']} {format_percent(g['percent'])} {format_proportion(km['value'])} {limits}"
                assert row + (f" {format_p(entry['p'])}" if g is first else "") in text, row
    # the published figures (STUDY.md)
    for published in ("tofacitinib 10/26 38.5%", "tacrolimus 22/35 62.9%", "tofacitinib 11/25 44.0%", "0.028", "0.031"):
        assert published in text
    # every RPILD patient on tacrolimus died within 6 months: KM mortality 100 %, whose log-log interval R gives as NA
    assert "tacrolimus 22/22 100.0% 100.0% (not estimable)" in text


def test_survival_section_holds_log_rank_tests_medians_and_numbers_at_risk(demo):
    made, _, pages = demo
    text = section(pages, "Kaplan–Meier survival")
    for subset in ("overall", "rpild"):
        survival = made.results[subset]["survival"]
        full = survival["log_rank"]["full follow-up"]
        assert f"full follow-up {full['statistic']:.3f} 1 {format_p(full['p'])}" in text
        for group, data in survival["groups"].items():
            assert f"{group} (n = {data['curve']['n']}, deaths {data['curve']['events']})" in text
            numbers = [str(data["at_risk"][day]) for day in ("0", "150", "300")]
            assert "\n".join(numbers) in text  # the at-risk row under the axis, read from the figure
    flowing = " ".join(text.split())  # the caption wraps where the page's width says
    assert "Median survival, tacrolimus: 120 days (42–345)" in flowing  # R: survfit(..., conf.type = "log-log")
    assert "Median survival, tofacitinib: not reached (95% lower limit 134 days)" in flowing  # R: NA (134, NA)
    assert "Median survival, tacrolimus: 38.5 days (16–108)" in flowing  # RPILD; R: the midpoint where S lies at 0.5
    assert 'log-log interval, R\'s survfit(Surv(time, event) ~ group, conf.type = "log-log")' in flowing


def test_cox_numbers_equal_the_results(demo):
    made, _, pages = demo
    text = section(pages, "Cox regression")
    for subset in ("overall", "rpild"):
        models = made.results[subset]["cox"]["models"]
        for model in models.values():
            for t in model["terms"]:
                hr = f"{format_ratio(t['hr'])} ({format_ratio(t['lower'])}–{format_ratio(t['upper'])})"
                assert f"{t['name']} {hr} {format_p(t['p'])}" in text
        for z in models["adjusted"]["zph"]:
            assert f"{z['term']} {z['chisq']:.3f} {z['df']} {format_p(z['p'])}" in text
    assert "tofacitinib 0.438 (0.200–0.960) 0.039" in text  # STUDY.md
    assert "tofacitinib 0.248 (0.068–0.905) 0.035" in text
    assert "5.7 events per variable (< 10): estimates may be overfitted" in text.replace("\n", " ")


def test_sensitivity_section_lays_out_the_results_and_rs_weighted_hazard_ratios(demo):
    made, _, pages = demo
    text = " ".join(section(pages, "Sensitivity analyses").split())
    rows = made.results["sensitivity"]["hazard_ratios"]
    assert [row["method"] for row in rows] == [
        "unadjusted", "adjusted", "adjusted_baseline", "imputed", "iptw", "overlap", "doubly_robust"
    ]  # fmt: skip
    for row in rows:
        hr = f"{format_ratio(row['hr'])} ({format_ratio(row['lower'])}–{format_ratio(row['upper'])}) {format_p(row['p'])}"
        assert f"{row['n']} {row['events']} {hr}" in text, row["method"]
    # R's coxph(Surv(t, e) ~ tofacitinib, weights = w, robust = TRUE) on the demo (tests/r/sensitivity_cox.csv)
    assert "IPTW (stabilised, ATE) 61 34 0.541 (0.245–1.196) 0.129 2.43 (1.00)" in text
    assert "Overlap weights (ATO) 61 34 0.592 (0.270–1.301) 0.192" in text
    assert "Missing values: pft_fvc_pct_pred 21, pft_dlco_pct_pred 21 of 61 patients." in text
    assert "No lung transplantation is recorded among the analysed patients" in text
    for caption in (
        "Absolute standardised mean differences before and after weighting",
        "Distribution of the propensity score by group",
        "Kaplan–Meier curves weighted by IPTW",
    ):
        assert caption in text, caption  # fmt: skip
    methods = " ".join(section(pages, "Methods and limitations").split())
    for statement in (
        "Sensitivity analyses (all analysed patients",
        "coxph(Surv(t, e) ~ group, weights = w, robust = TRUE)",
        "E-values (VanderWeele & Ding 2017)",
        "Multiple imputation: the adjusted model with",
        "mice::pool",
    ):
        assert statement in methods, statement  # fmt: skip


def test_baseline_and_safety_numbers_equal_the_results(demo):
    made, _, pages = demo
    baseline = section(pages, "Baseline characteristics").replace("\n", " ")
    for row in made.results["baseline"]:
        cells = " ".join(row["cells"][g]["text"] for g in ("tacrolimus", "tofacitinib")).strip()
        if cells:
            assert cells in baseline, row["label"]
    safety = section(pages, "Safety")
    for row in made.results["safety"]:
        counts = " ".join(f"{g['patients']}/{g['total']} ({format_percent(g['percent'])})" for g in row["groups"])
        assert f"{row['label']} {counts} {format_p(row['p'])}" in safety.replace("\n", " ")
    assert "19/26 (73.1%)" in safety and "26/35 (74.3%)" in safety


def test_methods_state_the_configuration_and_the_limitations(demo):
    _, _, pages = demo
    text = section(pages, "Methods and limitations").replace("\n", " ")
    assert "adjusted for age, male, ever_smoker, anti_mda5_grade, steroid_sparing" in text
    assert "6 months (183 days) and 1 year (365 days)" in text
    assert "confounding by indication" in text
    assert "numpy" in text and "scipy" in text and "weasyprint" in text and "lifelines" not in text
    assert 'as R\'s coxph(ties = "efron")' in text


def test_figure_pages_are_not_blank(demo, tmp_path):
    _, path, pages = demo
    figure_pages = [n for n, text in enumerate(pages, start=1) if "Number at risk" in text or "log scale" in text]
    assert len(figure_pages) >= 3
    for n in figure_pages:
        subprocess.run(["pdftoppm", "-r", "40", "-gray", "-png", "-f", str(n), "-l", str(n), str(path),
                        str(tmp_path / "page")], check=True)  # fmt: skip
        (image,) = tmp_path.glob("page*.png")
        ink = float((np.asarray(Image.open(image).convert("L")) < 160).mean())
        assert ink > 0.01, (n, ink)
        image.unlink()


def test_fonts_are_embedded(demo):
    _, path, _ = demo
    fonts = {}
    for page in PdfReader(path).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descriptor = font.get("/FontDescriptor") or font["/DescendantFonts"][0].get_object()["/FontDescriptor"]
            fonts[font["/BaseFont"]] = any(
                k in descriptor.get_object() for k in ("/FontFile", "/FontFile2", "/FontFile3")
            )
    assert fonts and all(fonts.values()), fonts


def test_the_same_data_give_the_same_numbers_and_figures(demo, demo_url):
    made, _, pages = demo
    again = build_report(load_tables(db.make_engine(demo_url)), Config(), today=TODAY)
    assert again.figures == made.figures
    strip = lambda r: {k: v for k, v in r.items() if k != "generated_at"}  # noqa: E731
    assert strip(again.results) == strip(made.results)
    text = [page.extract_text() for page in PdfReader(io.BytesIO(again.pdf)).pages]
    differing = [n for n, (a, b) in enumerate(zip(pages, text, strict=True)) if a != b]
    assert differing == [0]  # the cover, which carries the generation time


def test_data_quality_errors_stop_the_report(tmp_path):
    url = _registry(FIXTURES / "dirty" / "sheets", tmp_path / "dirty.db")
    with pytest.raises(ReportRefused, match="64 data-quality error finding"):
        build_report(load_tables(db.make_engine(url)), Config(), today=TODAY)
    result = runner.invoke(app, ["--database", url, "report", "--out", str(tmp_path / "r.pdf")])
    assert result.exit_code == ReportExit.DATA_QUALITY == 3
    assert "PAT-018   plausibility: uniqueness    error" in result.output
    assert "64 data-quality error finding(s): the report is not rendered; fix them" in result.output
    assert not (tmp_path / "r.pdf").exists()
    allowed = runner.invoke(app, ["--database", url, "report", "--out", str(tmp_path / "r.pdf"), "--allow-dq-errors"])
    assert allowed.exit_code == 0, allowed.output
    pages = [page.extract_text() for page in PdfReader(tmp_path / "r.pdf").pages]
    assert all("Based on data with unresolved data-quality errors" in text for text in pages)
    assert "64 error finding(s), 18 warning finding(s)" in pages[0]


def test_archive_runs_write_whole_files_once_at_a_time(demo_url, tmp_path):
    archive = tmp_path / "archive"
    args = ["--database", demo_url, "report", "--archive", str(archive)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    (pdf,) = archive.glob("report-*.pdf")
    fingerprint = json.loads((archive / "latest.json").read_text())["data_fingerprint"]
    assert pdf.name == f"report-{date.today().isoformat()}-{fingerprint[:12]}.pdf"
    assert pdf.with_suffix(".json").read_bytes() == (archive / "latest.json").read_bytes()
    assert (archive / "latest.pdf").read_bytes() == pdf.read_bytes()
    assert sorted(p.name for p in archive.iterdir() if p.name.startswith(".")) == [".pairs", ".report.lock"]
    with locked(archive):
        busy = runner.invoke(app, args)
    assert busy.exit_code == ReportExit.BUSY == 4
    assert "another report run is writing to" in busy.output
    log = (archive / "report.log").read_text()
    assert "report run started" in log and f"wrote {pdf}" in log and "(exit 4)" in log


def test_the_html_report_stands_alone(demo_url, tmp_path):
    result = runner.invoke(app, ["--database", demo_url, "report", "--out", str(tmp_path / "r.pdf"),
                                 "--html", str(tmp_path / "r.html")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Report written to {tmp_path / 'r.pdf'}",
        f"Report written to {tmp_path / 'r.html'}",
    ]
    html = (tmp_path / "r.html").read_text()
    assert "<link" not in html and "@page" in html
    # KM and forest, overall and RPILD; the love plot, the propensity overlap and weighted KM under IPTW and overlap
    # weights (the demo records no transplantation, so no cumulative incidence figure)
    assert html.count('src="data:image/svg+xml;base64,') == 8
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")


def test_a_registry_without_deaths_or_rpild_still_reports_and_says_so(tmp_path):
    sheets = tmp_path / "sheets"
    shutil.copytree(FIXTURES / "example", sheets)
    edits = {
        "follow_up.csv": [
            (",dead,2018-06-20,respiratory_failure_ild,", ",alive,,,"),
            (",dead,2019-11-02,infection,", ",alive,,,"),
        ],
        "patients.csv": [
            (",yes,worsening_1_month,", ",no,worsening_1_month,"),
            ("2018-05-08,no,", ",no,"),
            ("2019-09-20,no,", ",no,"),
        ],
        "treatments.csv": [(",death", ","), ("2018-06-20,", ","), ("2019-11-02,", ",")],
        "adverse_events.csv": [(",fatal,", ",recovered,")],
    }
    for name, replacements in edits.items():
        text = (sheets / name).read_text()
        for old, new in replacements:
            text = text.replace(old, new)
        (sheets / name).write_text(text)
    url = _registry(sheets, tmp_path / "r.db")
    made = build_report(load_tables(db.make_engine(url)), Config(), today=TODAY)
    assert made.results["flow"]["rpild"] == {} and made.checks.errors == 0
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(made.pdf)).pages).replace("\n", " ")
    assert "No patients in this subgroup." in text
    assert "Rapidly progressive ILD (RPILD): no patients in this subgroup." in text
    assert "Unadjusted model: not estimated: no deaths among the patients analysed" in text
