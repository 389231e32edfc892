"""Scale: the registry's commands on synthetic registries of 61 to 100,000 patients, SQLite and PostgreSQL.

Run:

    .venv/bin/python -m benchmarks.scale --sizes 61,10000,100000 --databases sqlite,postgresql

For each size, ``registry synth --patients N --seed S`` writes one synthetic registry
(CSV files in the import format) into a temporary folder, used for every database.
For each database, a fresh migrated registry gets the synthetic sites registered
(untimed), then each command runs as its own process, as a user would run it
(``.venv/bin/registry``, the database in REGISTRY_DATABASE_URL so that no password
shows on a command line), timed from start to exit, interpreter start-up included:
``import FOLDER``, ``check``, ``analyze``, ``report``. Beside each, its floor, also in a
process of its own: for the import, a raw DB-API ``executemany`` of the same rows
(read back from the imported registry: same tables, same values; no validation, no
audit) into another fresh migrated database; for the check, ``pandas.read_sql`` of
each data table; for the analysis, lifelines' bare ``CoxPHFitter().fit`` on the
analysis table (:func:`registry.cohort.build_cohort`) of the models the analysis fits.
Peak memory is each command's peak resident set size, from ``/usr/bin/time -v`` (else
the ``wait4`` resource usage of the child). Once per run: ``registry demo`` end to
end and ``registry --version`` (start-up alone). PostgreSQL is the server of
``--postgres-url``, else of REGISTRY_TEST_POSTGRES_URL, else a throwaway one from
tests/postgres.sh. A step that fails is reported with its error and the rest go on.
Figures are printed and written to docs/benchmarks.md (section ``scale``), measured
and never asserted.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from benchmarks.common import DOCS, REPO, machine, write_section
from benchmarks.web_load import postgres, postgres_version
from registry import db

REGISTRY = Path(sys.executable).with_name("registry")
TIME = Path("/usr/bin/time")
STEPS = ("import", "check", "analyze", "report")
#: Tables the import does not fill from the workbook (sites are registered first) or that are not data.
NOT_IMPORTED = ("site", "audit_log")

# Targets of issue 8 (SQLite, 100,000 patients), and the size they are set for.
TARGET_PATIENTS = 100_000
IMPORT_ROWS_PER_S = 100_000
MAX_RATIO = 3.0
CHECK_S = 15.0
ANALYZE_S = 20.0
REPORT_S = 45.0
PEAK_MB = 3 * 1024.0
DEMO_S = 5.0


# -- running one command ------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One command's process: wall time, peak RSS, exit code and the tail of its output."""

    seconds: float
    peak_mb: float | None
    code: int
    output: str
    capped: bool = False

    def error(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return " / ".join(lines[-3:])[-400:] or f"exit code {self.code}"


def memory_method() -> str:
    if TIME.exists():
        return "peak resident set size of each command's process, from `/usr/bin/time -v`"
    return "peak resident set size of each command's process, from the `wait4` resource usage of the child"


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float | None = None) -> Run:
    """``command`` in a process (group) of its own; killed after ``timeout`` seconds."""
    cwd.mkdir(parents=True, exist_ok=True)
    log, times = cwd / "command.log", cwd / "time.txt"
    times.unlink(missing_ok=True)
    wrapped = [str(TIME), "-v", "-o", str(times), *command] if TIME.exists() else command
    capped = threading.Event()
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            wrapped, cwd=cwd, env=os.environ | (env or {}), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

        def cap() -> None:
            capped.set()
            os.killpg(process.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, cap) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss / 1024
    output = log.read_text(errors="replace")
    if TIME.exists():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", times.read_text() if times.exists() else "")
        peak = int(found.group(1)) / 1024 if found else None
        match = re.search(r"Command (?:exited with non-zero status|terminated by signal) (\d+)", output)
        if match:  # time(1) appends its own line to the command's output: keep the command's
            output = output[: match.start()]
    return Run(seconds, peak, process.returncode, output, capped.is_set())


def registry_command(*args: str) -> list[str]:
    return [str(REGISTRY), *args] if REGISTRY.exists() else [sys.executable, "-m", "registry", *args]


def child(mode: str, *args: str) -> dict:
    """One floor measurement in a process of its own (its figures, as JSON on the last line of its output)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", f"--floor-{mode}", *args], capture_output=True, text=True, cwd=REPO
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {"error": " / ".join(lines[-3:])[-400:] or f"exit code {done.returncode}"}
    return json.loads(done.stdout.splitlines()[-1])


# -- the floors (each run in a child: python -m benchmarks.scale --floor-...) --------------------------------------


def floor_insert(source: str, target: str, chunk: int = 50_000) -> dict:
    """Copy the imported rows into a fresh migrated database with raw DB-API executemany; time the inserts."""
    from registry.models import TABLES

    src, dst = db.make_engine(source), db.make_engine(target)
    db.upgrade(dst)
    raw_src, raw_dst = src.raw_connection(), dst.raw_connection()
    marker = "?" if dst.dialect.paramstyle == "qmark" else "%s"
    seconds, rows, per_table = 0.0, 0, {}
    for model in TABLES:
        table = model.__table__
        if table.name == "audit_log":
            continue
        names = ", ".join(f'"{column.name}"' for column in table.columns)
        statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join([marker] * len(table.columns))})'
        read, write = raw_src.cursor(), raw_dst.cursor()
        read.execute(f'SELECT {names} FROM "{table.name}" ORDER BY "id"' if "id" in table.c else f"SELECT {names} "
                     f'FROM "{table.name}"')  # fmt: skip
        count = 0
        while batch := read.fetchmany(chunk):
            started = time.perf_counter()
            write.executemany(statement, batch)
            if table.name != "site":  # registered before the import, not part of it
                seconds += time.perf_counter() - started
                count += len(batch)
        if count:
            per_table[table.name] = count
        rows += count
    started = time.perf_counter()
    raw_dst.commit()
    seconds += time.perf_counter() - started
    raw_src.close()
    raw_dst.close()
    return {"seconds": seconds, "rows": rows, "tables": per_table}


def floor_read(url: str) -> dict:
    """``pandas.read_sql`` of every data table, untyped (after a warm-up of one row each)."""
    import pandas as pd

    from registry.tables import DATA_TABLES

    engine = db.make_engine(url)
    with engine.connect() as connection:
        for table in DATA_TABLES.values():
            pd.read_sql(sa.select(table).limit(1), connection)
        started = time.perf_counter()
        frames = [pd.read_sql(sa.select(table), connection) for table in DATA_TABLES.values()]
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": sum(len(frame) for frame in frames)}


def floor_cox(url: str) -> dict:
    """Bare ``CoxPHFitter().fit`` of the models the analysis fits, on its analysis table (built untimed)."""
    import warnings

    from lifelines import CoxPHFitter

    from registry.analysis.run import EXPOSURE
    from registry.cohort import build_cohort
    from registry.config import Config
    from registry.tables import load_tables

    config = Config()
    started = time.perf_counter()
    tables = load_tables(db.make_engine(url))
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    table = build_cohort(tables, config).table
    cohort_s = time.perf_counter() - started
    horizon = max(config.landmarks.values())
    adjusted_s, all_s, fits, failed = None, 0.0, 0, []
    for subset, rows in (("overall", table), ("rpild", table[table["rpild"].fillna(False).astype(bool)])):
        data = rows.assign(**{EXPOSURE: (rows["group"] == EXPOSURE).astype(int)})
        data["cox_time"] = data["time_days"].clip(upper=horizon)
        data["cox_event"] = (data["event"].astype(bool) & (data["time_days"] <= horizon)).astype(int)
        models = {"unadjusted": [EXPOSURE], "adjusted": [EXPOSURE, *config.covariates]}
        models |= {name: [name] for name in config.covariates}
        for name, covariates in models.items():
            complete = data[["cox_time", "cox_event", *covariates]].dropna().astype(float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    if fits == 0:  # warm-up: lifelines' first call
                        CoxPHFitter().fit(complete, duration_col="cox_time", event_col="cox_event")
                    started = time.perf_counter()
                    CoxPHFitter().fit(complete, duration_col="cox_time", event_col="cox_event")
                except Exception as error:
                    failed.append(f"{subset} {name}: {str(error).splitlines()[0][:120]}")
                    continue
                elapsed = time.perf_counter() - started
            fits += 1
            all_s += elapsed
            if subset == "overall" and name == "adjusted":
                adjusted_s, adjusted_n = elapsed, len(complete)
    return {
        "seconds": adjusted_s, "all_s": all_s, "fits": fits, "failed": failed, "patients": len(table),
        "adjusted_n": adjusted_n if adjusted_s is not None else None, "load_s": load_s, "cohort_s": cohort_s,
    }  # fmt: skip


# -- one registry: import, check, analyze, report and their floors ------------------------------------------------


@dataclass
class Step:
    """A command's figures, or why there are none."""

    seconds: float | None = None
    peak_mb: float | None = None
    error: str | None = None
    note: str = ""


@dataclass
class Measured:
    database: str
    patients: int
    rows: int | None = None  # data rows the import wrote
    steps: dict[str, Step] = field(default_factory=dict)
    floors: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@contextmanager
def fresh_database(kind: str, scratch: Path, server: str | None, name: str) -> Iterator[str]:
    if kind == "sqlite":
        path = scratch / f"{name}.db"
        yield f"sqlite:///{path}"
        for leftover in scratch.glob(f"{name}.db*"):
            leftover.unlink()
    else:
        with db.new_postgres_database(server, f"bench_scale_{name}") as url:
            yield url


def register_sites(url: str, sites: list[str]) -> None:
    from registry.audit import audited_session
    from registry.models import Site

    engine = db.make_engine(url)
    db.upgrade(engine)
    with audited_session(engine, actor="benchmark", reason="synthetic sites") as session:
        for code in sites:
            session.add(Site(code=code, name=f"Synthetic site {code}"))
        session.commit()
    engine.dispose()


def imported_rows(url: str) -> int:
    from registry.models import TABLES

    engine = db.make_engine(url)
    with engine.connect() as connection:
        total = sum(
            connection.execute(sa.select(sa.func.count()).select_from(model.__table__)).scalar_one()
            for model in TABLES
            if model.__table__.name not in NOT_IMPORTED
        )
    engine.dispose()
    return total


def command_step(result: Run, accepted: tuple[int, ...] = (0,)) -> Step:
    if result.capped:
        return Step(result.seconds, result.peak_mb, f"capped: killed after {result.seconds:,.0f} s")
    if result.code not in accepted:
        return Step(result.seconds, result.peak_mb, f"exit {result.code}: {result.error()}")
    return Step(result.seconds, result.peak_mb)


def measure(
    kind: str, label: str, patients: int, folder: Path, sites: list[str], scratch: Path, server: str | None,
    import_timeout: float,
) -> Measured:  # fmt: skip
    """Every step on one database at one size; a failing step is recorded and the others go on."""
    measured = Measured(label, patients)
    steps = measured.steps
    with ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_database(kind, scratch, server, "registry"))
            register_sites(url, sites)
        except Exception as error:
            for step in STEPS:
                steps[step] = Step(error=f"no registry: {type(error).__name__}: {error}")
            return measured
        env = {db.URL_VARIABLE: url}
        work = scratch / "work"
        print(f"  {label}, {patients:,} patients: import ...", file=sys.stderr, flush=True)
        steps["import"] = command_step(
            run(registry_command("import", str(folder), "--actor", "benchmark"), work / "import", env, import_timeout)
        )
        if steps["import"].error:
            for step in STEPS[1:]:
                steps[step] = Step(error="not run: the import did not finish")
            return measured
        measured.rows = imported_rows(url)
        print(f"  {label}, {patients:,} patients: insert floor ...", file=sys.stderr, flush=True)
        try:
            target = stack.enter_context(fresh_database(kind, scratch, server, "floor"))
            measured.floors["insert"] = child("insert", url, target)
        except Exception as error:
            measured.floors["insert"] = {"error": f"{type(error).__name__}: {error}"}
        print(f"  {label}, {patients:,} patients: check ...", file=sys.stderr, flush=True)
        result = run(registry_command("check"), work / "check", env)
        steps["check"] = command_step(result, accepted=(0, 2))
        if result.code == 2:
            steps["check"].note = "exit 2: error-level findings"
            measured.notes.append(f"`registry check` found data-quality errors: {result.error()}")
        measured.floors["read"] = child("read", url)
        print(f"  {label}, {patients:,} patients: analyze ...", file=sys.stderr, flush=True)
        steps["analyze"] = command_step(
            run(registry_command("analyze", "--json", "results.json"), work / "analyze", env)
        )
        measured.floors["cox"] = child("cox", url)
        print(f"  {label}, {patients:,} patients: report ...", file=sys.stderr, flush=True)
        result = run(registry_command("report", "--out", "report.pdf"), work / "report", env)
        if result.code == 3:  # refused on data-quality errors: render anyway, and say so
            first = result.error()
            result = run(registry_command("report", "--out", "report.pdf", "--allow-dq-errors"), work / "report", env)
            steps["report"] = command_step(result)
            steps["report"].note = "with --allow-dq-errors"
            measured.notes.append(f"`registry report` refused without --allow-dq-errors (exit 3: {first})")
        else:
            steps["report"] = command_step(result)
        shutil.rmtree(work, ignore_errors=True)
    return measured


# -- the synthetic registries -------------------------------------------------------------------------------------


@dataclass
class Synth:
    patients: int
    folder: Path
    rows: int = 0
    sites: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def synthesise(patients: int, seed: int, scratch: Path) -> Synth:
    folder = scratch / f"synth-{patients}"
    made = Synth(patients, folder)
    result = run(registry_command("synth", "--patients", str(patients), "--seed", str(seed), "--out", str(folder)),
                 scratch / f"synth-{patients}-log")  # fmt: skip
    made.seconds = result.seconds
    if result.code != 0 or not (folder / "patients.csv").exists():
        made.error = f"`registry synth` failed (exit {result.code}): {result.error()}"
        return made
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            site = header.index("site") if path.name == "patients.csv" else None
            codes = set()
            for row in reader:
                if row:
                    made.rows += 1
                    if site is not None:
                        codes.add(row[site])
            made.sites = sorted(codes) if site is not None else made.sites
    return made


# -- the report ---------------------------------------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.2f} s" if seconds < 100 else f"{seconds:,.0f} s"


def _rate(rows: int | None, seconds: float | None) -> str:
    return "" if not rows or not seconds else f" ({rows / seconds:,.0f} rows/s)"


def _ratio(step: Step, floor: dict) -> str:
    if step.error or step.seconds is None or floor.get("error") or not floor.get("seconds"):
        return "-"
    return f"{step.seconds / floor['seconds']:,.1f}x"


def _cell(step: Step | None, rows: int | None = None) -> str:
    if step is None:
        return "not measured"
    if step.error:
        return "**failed** (see below)" if not step.error.startswith(("not run", "capped")) else step.error
    return _s(step.seconds) + _rate(rows, step.seconds) + (f", {step.note}" if step.note else "")


def _floor(floor: dict | None, rows: bool = False) -> str:
    if floor is None:
        return "not measured"
    if floor.get("error"):
        return "**failed** (see below)"
    return _s(floor["seconds"]) + (_rate(floor.get("rows"), floor["seconds"]) if rows else "")


def table(results: list[Measured], synths: dict[int, Synth]) -> list[str]:
    def row(label: str, cell: Callable[[Measured], str]) -> str:
        return f"| {label} | " + " | ".join(cell(m) for m in results) + " |"

    def peaks(m: Measured) -> str:
        values = [m.steps[s].peak_mb if s in m.steps else None for s in STEPS]
        return " / ".join("-" if v is None else f"{v:,.0f}" for v in values) + " MB"

    def cox(m: Measured) -> str:
        floor = m.floors.get("cox")
        if floor is None:
            return "not measured"
        if floor.get("error") or floor.get("seconds") is None:
            return "**failed** (see below)"
        return f"{_s(floor['seconds'])} (n = {floor['adjusted_n']:,}); all {floor['fits']} models {_s(floor['all_s'])}"

    heading = [f"{m.database}, {m.patients:,} patients ({synths[m.patients].rows:,} rows)" for m in results]
    return [
        "| step | " + " | ".join(heading) + " |",
        "|---|" + "---|" * len(results),
        row("`registry import`", lambda m: _cell(m.steps.get("import"), m.rows)),
        row("floor: raw DB-API `executemany` insert", lambda m: _floor(m.floors.get("insert"), rows=True)),
        row("import / floor", lambda m: _ratio(m.steps.get("import", Step()), m.floors.get("insert", {}))),
        row("`registry check`", lambda m: _cell(m.steps.get("check"), m.rows)),
        row("floor: `pandas.read_sql` of each table", lambda m: _floor(m.floors.get("read"))),
        row("check / floor", lambda m: _ratio(m.steps.get("check", Step()), m.floors.get("read", {}))),
        row("`registry analyze`", lambda m: _cell(m.steps.get("analyze"))),
        row("floor: bare `CoxPHFitter().fit`, adjusted model", cox),
        row("`registry report`", lambda m: _cell(m.steps.get("report"))),
        row("peak memory: import / check / analyze / report", peaks),
    ]


def _subject(results: list[Measured], database: str) -> Measured | None:
    """The registry the targets are read on: this database at 100,000 patients, else its largest size measured."""
    mine = [m for m in results if m.database.startswith(database)]
    exact = [m for m in mine if m.patients == TARGET_PATIENTS]
    return (exact or sorted(mine, key=lambda m: m.patients))[-1] if mine else None


def targets(results: list[Measured], demo: Step) -> list[str]:
    """Each target of the issue beside the figure measured for it: met / missed."""

    def verdict(value: float | None, limit: float, at_least: bool = False) -> str:
        if value is None:
            return "n/a"
        return "met" if (value >= limit if at_least else value <= limit) else "**missed**"

    def figures(m: Measured | None) -> list[tuple[str, str]]:
        if m is None:
            return [("not measured", "n/a")] * 7
        imp, check, analyze, report = (m.steps.get(s, Step(error="-")) for s in STEPS)
        ok = {s: not st.error and st.seconds for s, st in zip(STEPS, (imp, check, analyze, report), strict=True)}
        rate = m.rows / imp.seconds if ok["import"] and m.rows else None
        insert, read = m.floors.get("insert", {}), m.floors.get("read", {})
        import_ratio = imp.seconds / insert["seconds"] if ok["import"] and insert.get("seconds") else None
        check_ratio = check.seconds / read["seconds"] if ok["check"] and read.get("seconds") else None
        peaks = [st.peak_mb for st in (imp, check, analyze, report) if st.peak_mb is not None]
        peak = max(peaks) if peaks else None
        which = STEPS[[st.peak_mb for st in (imp, check, analyze, report)].index(peak)] if peak else ""

        def shown(value: float | None, text: str) -> str:
            return text if value is not None else "failed / not measured"

        return [
            (shown(rate, f"{rate:,.0f} rows/s" if rate else ""), verdict(rate, IMPORT_ROWS_PER_S, at_least=True)),
            (shown(import_ratio, f"{import_ratio:.1f}x" if import_ratio else ""), verdict(import_ratio, MAX_RATIO)),
            (shown(ok["check"] or None, _s(check.seconds)), verdict(check.seconds if ok["check"] else None, CHECK_S)),
            (shown(check_ratio, f"{check_ratio:.1f}x" if check_ratio else ""), verdict(check_ratio, MAX_RATIO)),
            (shown(ok["analyze"] or None, _s(analyze.seconds)),
             verdict(analyze.seconds if ok["analyze"] else None, ANALYZE_S)),
            (shown(ok["report"] or None, _s(report.seconds)),
             verdict(report.seconds if ok["report"] else None, REPORT_S)),
            (shown(peak, f"{peak:,.0f} MB ({which})" if peak else ""), verdict(peak, PEAK_MB)),
        ]  # fmt: skip

    names = [
        f"import >= {IMPORT_ROWS_PER_S:,} rows/s",
        f"import within {MAX_RATIO:g}x of the raw insert floor",
        f"check <= {CHECK_S:g} s",
        f"check within {MAX_RATIO:g}x of the pandas read floor",
        f"analyze <= {ANALYZE_S:g} s",
        f"report <= {REPORT_S:g} s",
        f"peak memory <= 3 GB ({PEAK_MB:,.0f} MB), any command",
    ]
    sqlite_m, pg_m = _subject(results, "SQLite"), _subject(results, "PostgreSQL")
    head = [f"SQLite, {sqlite_m.patients:,} patients" if sqlite_m else "SQLite"]
    head.append(f"PostgreSQL, {pg_m.patients:,} patients (for comparison)" if pg_m else "PostgreSQL (for comparison)")
    lines = [f"| target | {head[0]} | | {head[1]} | |", "|---|---|---|---|---|"]
    for name, (a, b) in zip(names, zip(figures(sqlite_m), figures(pg_m), strict=True), strict=True):
        lines.append(f"| {name} | {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
    demo_value = None if demo.error else demo.seconds
    demo_text = _s(demo.seconds) if demo_value is not None else f"failed: {demo.error}"
    lines.append(f"| demo <= {DEMO_S:g} s (SQLite, once per run) | {demo_text} | {verdict(demo_value, DEMO_S)} | | |")
    if demo.peak_mb is not None:
        lines.append(f"| demo peak memory <= 3 GB | {demo.peak_mb:,.0f} MB | {verdict(demo.peak_mb, PEAK_MB)} | | |")
    return lines


def failures(results: list[Measured], synths: dict[int, Synth]) -> list[str]:
    lines = [f"- {s.patients:,} patients: {s.error}" for s in synths.values() if s.error]
    for m in results:
        where = f"{m.database}, {m.patients:,} patients"
        for name, step in m.steps.items():
            if step.error and not step.error.startswith("not run"):
                lines.append(f"- {where}, `registry {name}`: {step.error}")
        for name, floor in m.floors.items():
            if floor.get("error"):
                lines.append(f"- {where}, {name} floor: {floor['error']}")
        if (cox := m.floors.get("cox")) and cox.get("failed"):
            lines.append(f"- {where}, Cox floor, models lifelines could not fit: {'; '.join(cox['failed'])}")
        if m.rows is not None and m.rows != synths[m.patients].rows:
            lines.append(f"- {where}: the import wrote {m.rows:,} data rows for {synths[m.patients].rows:,} in the CSV")
        lines.extend(f"- {where}: {note}" for note in m.notes)
    return lines


def details(results: list[Measured], synths: dict[int, Synth]) -> list[str]:
    lines = []
    for s in synths.values():
        if not s.error:
            lines.append(f"- {s.patients:,} patients: `registry synth` wrote {s.rows:,} rows in {_s(s.seconds)}, "
                         f"{len(s.sites)} site(s)")  # fmt: skip
    for m in results:
        cox = m.floors.get("cox", {})
        if cox.get("load_s") is not None:
            lines.append(f"- {m.database}, {m.patients:,} patients: analysis table of {cox['patients']:,} patients; "
                         f"in the Cox floor's process `load_tables` took {_s(cox['load_s'])} and `build_cohort` "
                         f"{_s(cox['cohort_s'])} (untimed for the floor)")  # fmt: skip
    return lines


# -- the machine and the code -------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured, and a digest of the product's files (registry/, templates/) to notice edits mid-run."""
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "registry").rglob("*.py"), *(REPO / "templates").rglob("*")]):
        if path.is_file():
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    edited = " with uncommitted edits" if git("status", "--porcelain", "--", "registry", "templates") else ""
    return f"commit {commit}{edited} (product files {digest.hexdigest()[:12]})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def ram_gb() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GB RAM"
    except OSError:
        pass
    return "RAM unknown"


# -- main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="61,10000,100000", help="comma-separated patient counts")
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--postgres-url", help="a PostgreSQL server (else REGISTRY_TEST_POSTGRES_URL, else throwaway)")
    parser.add_argument("--seed", type=int, default=1, help="seed of `registry synth`")
    parser.add_argument("--import-timeout", type=float, default=900.0, help="cap on one import, seconds")
    parser.add_argument("--output", type=Path, default=DOCS)
    parser.add_argument("--floor-insert", nargs=2, metavar=("SOURCE", "TARGET"), help=argparse.SUPPRESS)
    parser.add_argument("--floor-read", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--floor-cox", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_insert or args.floor_read or args.floor_cox:
        figures = (floor_insert(*args.floor_insert) if args.floor_insert
                   else floor_read(args.floor_read) if args.floor_read else floor_cox(args.floor_cox))  # fmt: skip
        print(json.dumps(figures))
        return
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    kinds = [kind.strip() for kind in args.databases.split(",") if kind.strip()]
    unknown = set(kinds) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))} (choose sqlite, postgresql)")
    results: list[Measured] = []
    synths: dict[int, Synth] = {}
    notes: list[str] = []
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    code = code_version()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="registry-scale-") as tmp:
        scratch = Path(tmp)
        print("start-up and demo ...", file=sys.stderr, flush=True)
        startup = command_step(run(registry_command("--version"), scratch / "startup"))
        demo = command_step(run(registry_command("demo", "--dir", str(scratch / "demo")), scratch / "demo-run"))
        shutil.rmtree(scratch / "demo", ignore_errors=True)
        server, pg_label = None, "PostgreSQL"
        if "postgresql" in kinds:
            server, source = stack.enter_context(postgres(args.postgres_url))
            if server is None:
                notes.append(f"PostgreSQL: not measured: {source}.")
            else:
                try:
                    pg_label = f"PostgreSQL {postgres_version(server)}"
                except Exception as error:
                    notes.append(f"PostgreSQL: not measured: {type(error).__name__}: {error}.")
                    server = None
                else:
                    versions.append(pg_label)
                    notes.append(f"PostgreSQL: {source}; a fresh database on it for each registry.")
        for patients in sizes:
            print(f"{patients:,} patients: registry synth ...", file=sys.stderr, flush=True)
            made = synths[patients] = synthesise(patients, args.seed, scratch)
            for kind in kinds:
                label = f"SQLite {sqlite3.sqlite_version}" if kind == "sqlite" else pg_label
                if made.error:
                    results.append(Measured(label, patients, steps={s: Step(error="not run: no synthetic registry")
                                                                    for s in STEPS}))  # fmt: skip
                elif kind == "postgresql" and server is None:
                    continue
                else:
                    workdir = scratch / f"{kind}-{patients}"
                    workdir.mkdir()
                    results.append(measure(kind, label, patients, made.folder, made.sites, workdir, server,
                                           args.import_timeout))  # fmt: skip
                    shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(made.folder, ignore_errors=True)
    if (after := code_version()) != code:
        notes.append(f"**The code changed during the run** (from {code} to {after}): figures mix versions.")
    order = {kind: n for n, kind in enumerate(kinds)}
    results.sort(key=lambda m: (order["sqlite" if m.database.startswith("SQLite") else "postgresql"], m.patients))
    problems = failures(results, synths)
    demo_cell = _cell(demo) + (f", peak {demo.peak_mb:,.0f} MB" if demo.peak_mb is not None else "")
    lines = [
        "## Scale: import, check, analyze, report (`benchmarks/scale.py`)",
        "",
        f"Machine: {machine()}; {cpu_model()}, {ram_gb()}; {' and '.join(versions)}. "
        f"Code: {code}. Registries: `registry synth --seed {args.seed}`, one per size, the same for every database.",
        "",
        *(table(results, synths) if results else ["No registry was measured."]),
        "",
        "Once per run:",
        "",
        f"- `registry demo` (import, check, analyze and report of the 61-patient demo cohort, one process, "
        f"interpreter start-up included): {demo_cell}",
        f"- start-up alone (`registry --version`: the interpreter and the command's imports): {_cell(startup)}"
        + (f", peak {startup.peak_mb:,.0f} MB" if startup.peak_mb is not None else ""),
        "",
        f"Targets (issue 8; set for SQLite at {TARGET_PATIENTS:,} patients, about 2 million rows):",
        "",
        *targets(results, demo),
        "",
        *details(results, synths),
        *[f"- {note}" for note in notes],
        *(["", "Failures and notes:", "", *problems] if problems else []),
        "",
        *textwrap.wrap(
            "What was measured: each figure is one run of the real command in a process of its own "
            "(`.venv/bin/registry`, the database in REGISTRY_DATABASE_URL, the default configuration), wall time "
            "from start to exit, so interpreter start-up and the command's imports (the start-up line above) are "
            "in every figure. `import` reads, validates and writes the synthetic CSV folder in one transaction "
            "with its audit rows, into a fresh migrated registry whose sites were registered beforehand (untimed); "
            "rows/s is over the data rows written. Its floor is a raw DB-API `executemany` (sqlite3 / psycopg) of "
            "the same rows, read back from the imported registry, into the same tables of another fresh migrated "
            "database, in chunks of 50,000, one transaction, no validation, no audit rows (only the inserts and "
            "the commit are timed). `check` is the whole rule catalogue; its floor `pandas.read_sql` of each data "
            "table, untyped, in a process already started. `analyze` builds the cohort and runs every analysis "
            "(JSON out); its floor is lifelines' bare `CoxPHFitter().fit` of the adjusted model on the analysis "
            "table the command builds (complete cases), and beside it the sum of the bare fits of all the Cox "
            "models the analysis fits (unadjusted, adjusted, one per covariate; overall and RPILD), without "
            "`cox.zph`, Firth or anything else. `report` checks, analyses and renders the PDF. Peak memory: "
            f"{memory_method()}. Figures are measured, never asserted; each is one run.",
            width=110,
        ),
        "",
    ]
    write_section("scale", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
