"""`registry analyze` against the analyst's R script, side by side; and the start-up of the everyday commands.

Run:

    .venv/bin/python -m benchmarks.versus_r --sizes 61,2000,20000 --repeats 5

The peer (issue 20) is an analyst's R script with the survival package doing what `registry analyze` does:
benchmarks/analysis.R, in two forms. From the database, as `registry analyze` starts: it reads the registry's SQLite
file (RSQLite) and builds the analysis table itself, as registry/cohort.py does; the equivalent work. From the
analysis table: the table the registry built (registry.cohort.build_cohort), written to CSV beforehand (untimed);
R's best case, with less work than the registry does. For each size a registry is made (61: the demo cohort, as
`registry demo` builds it; else `registry synth --patients N`, its sites registered and `registry import`ed,
untimed). Then, in rounds so that all see the same machine, each round runs `registry analyze --json` with the R
script's analyses (the default configuration without the sensitivity analyses, which the script has no counterpart
of), `registry analyze` with the default configuration, and the R script in both forms, each a process of its own
timed from start to exit (interpreter start-up, library loading and reading the data included). The figure is the
median of the rounds; the ratio is registry / R (below 1: the registry is faster). R's analysed patients and
adjusted hazard ratio (with its limits) must equal the registry's to 6 decimals, or the row says they differ.
Without Rscript (or RSQLite) on this machine, R's side is not measured and its column says so.

Start-up (61 patients, the demo cohort): `registry --version`, `registry check`, `registry analyze` and `registry
demo`, each the median of as many rounds, against the targets of issue 20. Figures go to docs/benchmarks.md
(section ``versus_r``), measured and never asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import DOCS, REPO, machine, write_section
from benchmarks.scale import code_version, cpu_model, ram_gb, register_sites, registry_command, run, synthesise

SCRIPT = REPO / "benchmarks" / "analysis.R"
#: Targets of issue 20 at 61 patients (seconds, whole process), and the commands they are for.
#: The configuration of `registry analyze` that runs what the R script runs: the default one without the sensitivity
#: analyses (IPTW, overlap weights, multiple imputation, competing risks, E-values), which the script leaves out.
CORE = "sensitivity_analyses = []\n"
STARTUP_TARGETS = {"registry --version": 0.2, "registry check": 1.0, "registry analyze": 1.5, "registry demo": 3.0}


@dataclass
class Timings:
    """The wall times of one command over the rounds (seconds), or why it could not be measured."""

    seconds: list[float] = field(default_factory=list)
    error: str | None = None

    def add(self, result) -> None:  # noqa: ANN001 (benchmarks.scale.Run)
        if result.code != 0:
            self.error = f"exit {result.code}: {result.error()}"
        self.seconds.append(result.seconds)

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and self.error is None else None

    def cell(self) -> str:
        if self.error:
            return f"failed ({self.error})"
        if not self.seconds:
            return "not measured"
        low, high = min(self.seconds), max(self.seconds)
        spread = f" ({low:.2f}-{high:.2f})" if len(self.seconds) > 1 else ""
        return f"{self.median:.2f} s{spread}"


def r_version() -> str | None:
    """R's, survival's and RSQLite's versions (RSQLite: "not installed" if so), or None without Rscript."""
    if shutil.which("Rscript") is None:
        return None
    script = (
        'rsqlite <- if (requireNamespace("RSQLite", quietly = TRUE)) as.character(packageVersion("RSQLite")) '
        'else "not installed"; '
        'survival <- as.character(packageVersion("survival")); '
        'cat(R.version.string, "; survival ", survival, "; RSQLite ", rsqlite, sep = "")'
    )
    done = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def write_analysis_table(url: str, out: Path) -> int:
    """The analysis table the registry analyses, as CSV for R (in a process of its own, untimed)."""
    code = (
        "import sys\nfrom registry import db\nfrom registry.cohort import build_cohort\n"
        "from registry.config import Config\nfrom registry.tables import load_tables\n"
        "table = build_cohort(load_tables(db.make_engine(sys.argv[1])), Config()).table\n"
        "table.to_csv(sys.argv[2], index=False)\nprint(len(table))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, url, str(out)], capture_output=True, text=True, check=True,
                          cwd=REPO)  # fmt: skip
    return int(done.stdout.split()[-1])


def write_settings(out: Path) -> Path:
    """The code lists and default settings the cohort is built with, for the R script's database form."""
    from registry.codes import AdverseEventTerm, Analyte
    from registry.config import Config

    config = Config()
    rows = [("baseline_window_days", config.baseline_window_days), ("enrolment_start", config.enrolment_start),
            ("enrolment_end", config.enrolment_end),
            ("steroid_sparing_window_days", config.steroid_sparing_window_days)]  # fmt: skip
    rows += [("steroid_sparing_drug", drug) for drug in config.steroid_sparing_drugs]
    rows += [("analyte", analyte.value) for analyte in Analyte]
    rows += [("adverse_event_term", term.value) for term in AdverseEventTerm]
    with out.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("setting", "value"), *rows])
    return out


#: What the R script prints: the patients analysed and the adjusted hazard ratio of tofacitinib with its limits.
R_SAYS = re.compile(r"(\d+) patients analysed, adjusted HR tofacitinib ([\d.]+) \(([\d.]+)-([\d.]+)\)")


def registry_says(results: Path) -> tuple[str, ...]:
    document = json.loads(results.read_text())
    term = document["overall"]["cox"]["models"]["adjusted"]["terms"][0]
    analysed = sum(document["flow"]["analysed"].values())
    return (str(analysed), *(f"{term[key]:.6f}" for key in ("hr", "lower", "upper")))


def demo_registry(scratch: Path, repeats: int) -> tuple[Path, dict[str, Timings]]:
    """`registry demo`, timed ``repeats`` times (each into a fresh folder); the last one's registry is kept."""
    demo = Timings()
    for round_ in range(repeats):
        folder = scratch / f"demo-{round_}"
        demo.add(run(registry_command("demo", "--dir", str(folder)), scratch / f"demo-log-{round_}"))
        if round_ < repeats - 1:
            shutil.rmtree(folder, ignore_errors=True)
    return scratch / f"demo-{repeats - 1}" / "registry.db", {"registry demo": demo}


def startup(url: str, scratch: Path, repeats: int) -> dict[str, Timings]:
    commands = {"registry --version": ["--version"], "registry check": ["check"],
                "registry analyze": ["analyze", "--json", str(scratch / "startup.json")]}  # fmt: skip
    timings = {name: Timings() for name in commands}
    for round_ in range(repeats):
        for name, args in commands.items():
            timings[name].add(
                run(registry_command(*args), scratch / f"startup-{round_}", {"REGISTRY_DATABASE_URL": url})
            )
    return timings


@dataclass
class Side:
    patients: int
    analysed: int = 0
    registry: Timings = field(default_factory=Timings)  # the R script's analyses (CORE)
    registry_default: Timings = field(default_factory=Timings)  # the default configuration, sensitivity included
    r_database: Timings = field(default_factory=Timings)
    r_table: Timings = field(default_factory=Timings)
    differences: list[str] = field(default_factory=list)  # where R's numbers are not the registry's
    note: str = ""

    def ratio(self, r: Timings) -> float | None:
        if self.registry.median is None or r.median is None:
            return None
        return self.registry.median / r.median


def side_by_side(patients: int, url: str, scratch: Path, repeats: int, r: str | None) -> Side:
    side = Side(patients)
    table = scratch / f"analysis-{patients}.csv"
    settings = write_settings(scratch / "settings.csv")
    side.analysed = write_analysis_table(url, table)
    database = url.removeprefix("sqlite:///")
    with_rsqlite = r is not None and "RSQLite not installed" not in r
    core = scratch / "core.toml"
    core.write_text(CORE, encoding="utf-8")
    for round_ in range(repeats):
        work = scratch / f"round-{patients}-{round_}"
        at = {"REGISTRY_DATABASE_URL": url}
        side.registry.add(run(registry_command("analyze", "--json", str(work / "results.json"), "--config", str(core)),
                              work, at))  # fmt: skip
        side.registry_default.add(run(registry_command("analyze", "--json", str(work / "default.json")), work, at))
        ours = registry_says(work / "results.json") if side.registry.error is None else None
        forms = [("table", str(table), [], side.r_table)]
        if with_rsqlite:
            forms.insert(0, ("database", database, [str(settings)], side.r_database))
        for form, source, extra, timings in forms:
            done = run(["Rscript", str(SCRIPT), form, source, str(work / f"{form}.rds"), *extra], work / form)
            timings.add(done)
            said = R_SAYS.search(done.output)
            if done.code == 0 and ours and (said is None or said.groups() != ours) and round_ == 0:
                theirs = said.group(0) if said else done.error()
                side.differences.append(
                    f"R from the {form}: {theirs}; the registry: {ours[0]} patients, HR {ours[1]} ({ours[2]}-{ours[3]})"
                )
    if r is None:
        side.r_table.error = side.r_database.error = "Rscript is not installed"
    elif not with_rsqlite:
        side.r_database.error = "RSQLite is not installed"
    return side


def synthetic_registry(patients: int, seed: int, scratch: Path) -> str:
    made = synthesise(patients, seed, scratch)
    if made.error:
        raise RuntimeError(made.error)
    url = f"sqlite:///{scratch / f'registry-{patients}.db'}"
    register_sites(url, made.sites)
    done = run(
        registry_command("import", str(made.folder)), scratch / f"import-{patients}", {"REGISTRY_DATABASE_URL": url}
    )
    if done.code != 0:
        raise RuntimeError(f"`registry import` failed: {done.error()}")
    shutil.rmtree(made.folder, ignore_errors=True)
    return url


def _ratio(side: Side, r: Timings) -> str:
    ratio = side.ratio(r)
    if ratio is None:
        return "n/a"
    return f"{ratio:.2f} (the registry {'faster' if ratio < 1 else 'slower'})"


def report(sides: list[Side], starts: dict[str, Timings], r: str | None, repeats: int, seed: int, code: str,
           notes: list[str]) -> list[str]:  # fmt: skip
    lines = [
        "## `registry analyze` against the R script, and start-up (`benchmarks/versus_r.py`)",
        "",
        f"Machine: {machine()}; {cpu_model()}, {ram_gb()}; SQLite file database; "
        f"{r or 'R not installed'}. Code: {code}. Median of {repeats} round(s) (min-max in brackets), each command "
        "a process of its own, timed from start to exit.",
        "",
        "| patients (analysed) | `registry analyze` (database to JSON), the script's analyses | R from the database "
        "| registry / R | R from the analysis table (CSV) | registry / R | R's numbers | `registry analyze`, "
        "default (with the sensitivity analyses) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side in sides:
        label = f"{side.patients:,} ({side.analysed:,}){side.note}"
        same = "; ".join(side.differences) or (
            "n/a" if side.r_table.median is None else "equal (patients, adjusted HR and limits to 6 decimals)"
        )
        lines.append(
            f"| {label} | {side.registry.cell()} | {side.r_database.cell()} | {_ratio(side, side.r_database)} "
            f"| {side.r_table.cell()} | {_ratio(side, side.r_table)} | {same} | {side.registry_default.cell()} |"
        )
    lines += [
        "",
        "Start-up and the everyday commands at 61 patients (the demo cohort; targets of issue 20):",
        "",
        "| command | seconds | target | |",
        "|---|---|---|---|",
    ]
    for name, target in STARTUP_TARGETS.items():
        timing = starts.get(name, Timings())
        median = timing.median
        verdict = "not measured" if median is None else "met" if median <= target else "**missed**"
        lines.append(f"| `{name}` | {timing.cell()} | <= {target:g} s | {verdict} |")
    lines += [
        "",
        *[f"- {note}" for note in notes],
        "",
        *textwrap.wrap(
            "What was measured: `registry analyze` reads the data tables from the SQLite registry, builds the "
            "analysis table (registry.cohort) and runs the analyses of the default configuration that the R script "
            "runs (Table 1, mortality, Kaplan-Meier, log-rank, 14 Cox models each with cox.zph, safety; overall and "
            "RPILD: `--config` with `sensitivity_analyses = []`), and writes the JSON results; the last column is "
            "the default configuration, the sensitivity analyses included (IPTW and overlap weights, the doubly "
            "robust model, multiple imputation with m = 20, competing risks, E-values), which the script has no "
            "counterpart of. The R script (benchmarks/analysis.R, R's survival package) runs the same "
            "analyses, from the database (RSQLite; it builds the analysis table as registry/cohort.py does: the "
            "equivalent work) or from the analysis table the registry built, written to CSV beforehand (untimed: "
            "R's best case, without the reading and the cohort). 61 patients is the demo cohort; the other sizes "
            "`registry synth` registries. `registry demo` builds the demo registry from scratch (migrations, "
            "import, checks, analyses, the PDF report). Figures are measured, never asserted.",
            width=110,
        ),
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="61,2000,20000", help="comma-separated patient counts (61: the demo)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per figure (the median is reported)")
    parser.add_argument("--seed", type=int, default=1, help="seed of `registry synth`")
    parser.add_argument("--output", type=Path, default=DOCS)
    args = parser.parse_args()
    r = r_version()
    code = code_version()
    notes = [] if r else ["Rscript is not installed here: R's side was not measured."]
    sides = []
    with tempfile.TemporaryDirectory(prefix="registry-versus-r-") as tmp:
        scratch = Path(tmp)
        print("registry demo ...", file=sys.stderr, flush=True)
        demo_db, starts = demo_registry(scratch, args.repeats)
        demo_url = f"sqlite:///{demo_db}"
        starts |= startup(demo_url, scratch, args.repeats)
        for patients in (int(size) for size in args.sizes.split(",") if size.strip()):
            print(f"{patients:,} patients ...", file=sys.stderr, flush=True)
            url = demo_url if patients == 61 else synthetic_registry(patients, args.seed, scratch)
            side = side_by_side(patients, url, scratch, args.repeats, r)
            side.note = " (demo)" if patients == 61 else ""
            sides.append(side)
    if (after := code_version()) != code:
        notes.append(f"**The code changed during the run** (from {code} to {after}): figures mix versions.")
    lines = report(sides, starts, r, args.repeats, args.seed, code, notes)
    write_section("versus_r", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
