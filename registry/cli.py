"""The ``registry`` command: one thin layer over the library modules."""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import sqlalchemy as sa
import typer
from sqlmodel import Session

import registry
from registry import db
from registry import export as export_module
from registry.accounts import AccountError, create_account, disable, set_password, site_codes
from registry.audit import audit_history, audited_session
from registry.codes import Role
from registry.config import Config, ConfigError, load_config
from registry.dictionary import data_dictionary, to_csv, to_markdown
from registry.ingest import import_path, write_problems
from registry.models import TABLES, Account, Site
from registry.resources import resource_dir
from registry.violations import explain
from registry.workbook import WorkbookError

if TYPE_CHECKING:
    from registry.quality import CheckRun
    from registry.report.build import Report

# The data-quality, analysis and report modules (pandas, pandera, lifelines, matplotlib,
# weasyprint) are imported by the commands that use them, so that the others start quickly.

app = typer.Typer(
    help="Clinical registry for anti-MDA5 dermatomyositis with interstitial lung disease.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Create and migrate the database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
site_app = typer.Typer(help="Register and list recruiting sites.", no_args_is_help=True)
app.add_typer(site_app, name="site")
user_app = typer.Typer(
    help="Accounts of the web application: add, list, disable, change passwords.", no_args_is_help=True
)
app.add_typer(user_app, name="user")


Actor = Annotated[
    str,
    typer.Option(
        "--actor", envvar="REGISTRY_ACTOR", help="Who makes the change, for the audit trail [default: your login]"
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mda5-registry {registry.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            "-d",
            envvar=db.URL_VARIABLE,
            help=f"Database URL, e.g. sqlite:///registry.db or postgresql://user@host/db [default: {db.DEFAULT_URL}]",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = db.database_url(database)


def _engine(ctx: typer.Context) -> sa.Engine:
    return db.make_engine(ctx.obj)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or migrate the schema to REVISION (default: the newest).

    Example: registry --database sqlite:///registry.db db upgrade
    """
    engine = _engine(ctx)
    db.upgrade(engine, revision)
    typer.echo(f"{db.redacted(ctx.obj)}: schema at revision {db.current_revision(engine)}")


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target: a revision id, base (drop all), or -1 after -- (one step).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Migrate the schema back to REVISION; 'base' drops every registry table and its data.

    Examples: registry db downgrade base --yes; registry db downgrade --yes -- -1
    """
    if not yes:
        typer.confirm(f"Downgrade {db.redacted(ctx.obj)} to {revision}? Data in dropped tables is lost", abort=True)
    engine = _engine(ctx)
    db.downgrade(engine, revision)
    typer.echo(f"{db.redacted(ctx.obj)}: schema at revision {db.current_revision(engine) or 'base (empty)'}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision of the database and whether it is the newest.

    Example: registry db current
    """
    current, head = db.current_revision(_engine(ctx)), db.head_revision()
    state = "up to date" if current == head else f"behind: newest is {head}; run `registry db upgrade`"
    typer.echo(f"{current or 'base (no schema)'} ({state})")
    if current != head:
        raise typer.Exit(1)


class DictionaryFormat(StrEnum):
    MARKDOWN = "markdown"
    CSV = "csv"


@app.command()
def dictionary(
    fmt: Annotated[DictionaryFormat, typer.Option("--format", "-f", help="Output format.")] = DictionaryFormat.MARKDOWN,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
) -> None:
    """Print the data dictionary (every column of every table) generated from the models.

    Example: registry dictionary --format csv --output dictionary.csv
    """
    entries = data_dictionary()
    text = to_csv(entries) if fmt is DictionaryFormat.CSV else to_markdown(entries)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"{len(entries)} columns written to {output}")


def _print_summary(engine: sa.Engine, url: str) -> None:
    current, head = db.current_revision(engine), db.head_revision()
    typer.echo(f"Database  {db.redacted(url)}")
    if current is None:
        typer.echo("Schema    not created: run `registry db upgrade`")
        raise typer.Exit(1)
    typer.echo(f"Schema    revision {current}" + (" (newest)" if current == head else f" (newest is {head})"))
    with engine.connect() as connection:
        counts = {}
        for table in (model.__table__ for model in TABLES):
            deleted = sa.func.count(table.c.deleted_at) if "deleted_at" in table.c else sa.null()
            counts[table.name] = connection.execute(sa.select(sa.func.count(), deleted).select_from(table)).one()
    width = max(map(len, counts))
    typer.echo(f"\n{'table'.ljust(width)}  rows  deleted (kept, restorable)")
    for name, (count, deleted) in counts.items():
        typer.echo(f"{name.ljust(width)}  {count:>4}" + (f"  {deleted:>7}" if deleted is not None else ""))


@app.command()
def summary(ctx: typer.Context) -> None:
    """Print the database, its schema revision and the number of rows in each table.

    Example: registry --database sqlite:///registry.db summary
    """
    _print_summary(_engine(ctx), ctx.obj)


@site_app.command("add")
def site_add(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Short site code, as the patients sheet names it.")],
    name: Annotated[str, typer.Argument(help="Hospital or centre name.")],
    country: Annotated[str | None, typer.Option(help="ISO 3166-1 alpha-2 country code.")] = None,
    actor: Actor = "",
) -> None:
    """Register a recruiting site.

    Example: registry site add NJ1 "University hospital" --country CN
    """
    with audited_session(_engine(ctx), actor=actor or getpass.getuser(), reason="site registered") as session:
        session.add(Site(code=code, name=name, country=country))
        try:
            session.commit()
        except sa.exc.IntegrityError as error:
            typer.echo(f"Not added: {explain(error).message}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"Site {code} added")


@site_app.command("list")
def site_list(ctx: typer.Context) -> None:
    """List the registered sites.

    Example: registry site list
    """
    with _engine(ctx).connect() as connection:
        for code, name, country in connection.execute(
            sa.select(Site.code, Site.name, Site.country).order_by(Site.code)
        ):
            typer.echo(f"{code}\t{name}\t{country or ''}")


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input (scripts) instead of a prompt.")
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@contextlib.contextmanager
def _account_change(ctx: typer.Context, actor: str, reason: str, done: str) -> Iterator[Session]:
    """An audited session for an account change; a refused change is reported and nothing is written."""
    with audited_session(_engine(ctx), actor=actor or getpass.getuser(), reason=reason) as session:
        try:
            yield session
            session.commit()
        except AccountError as error:
            typer.echo(f"Not done: {error}", err=True)
            raise typer.Exit(1) from None
    typer.echo(done)


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[Role, typer.Option(help="coordinator, data_manager, analyst or admin.")],
    site: Annotated[list[str] | None, typer.Option(help="A site the coordinator works for (repeat for more).")] = None,
    password_stdin: PasswordStdin = False,
    actor: Actor = "",
) -> None:
    """Create an account (password asked twice, or read from stdin with --password-stdin).

    Example: registry user add alice --role coordinator --site NJ1
    """
    password = _password(password_stdin)
    with _account_change(ctx, actor, f"account {username} created", f"Account {username} ({role.value}) added") as s:
        create_account(s, username, password, role, site or [])


@user_app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    password_stdin: PasswordStdin = False,
    actor: Actor = "",
) -> None:
    """Set a new password for an account.

    Example: registry user passwd alice
    """
    password = _password(password_stdin)
    with _account_change(ctx, actor, f"password of {username} changed", f"Password of {username} changed") as s:
        set_password(s, username, password)


@user_app.command("disable")
def user_disable(
    ctx: typer.Context, username: Annotated[str, typer.Argument(help="Sign-in name.")], actor: Actor = ""
) -> None:
    """Disable an account: it can no longer sign in (accounts are never deleted).

    Example: registry user disable alice
    """
    with _account_change(ctx, actor, f"account {username} disabled", f"Account {username} disabled") as s:
        disable(s, username)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List the accounts: sign-in name, role, active or disabled, sites.

    Example: registry user list
    """
    with _engine(ctx).connect() as connection:
        rows = connection.execute(sa.select(Account.id, Account.username, Account.role, Account.active)
                                  .order_by(Account.username))  # fmt: skip
        for account_id, username, role, active in rows:
            sites = ",".join(site_codes(connection, account_id))
            typer.echo(f"{username}\t{role}\t{'active' if active else 'disabled'}\t{sites}")


ConfigOption = Annotated[
    Path, typer.Option("--config", help="Analysis configuration (TOML); defaults if the file is absent.")
]


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    https: Annotated[bool, typer.Option("--https", help="Served behind HTTPS: session cookies marked Secure.")] = False,
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Start the web application for data entry. Set REGISTRY_SECRET_KEY so sessions survive restarts.

    Example: REGISTRY_SECRET_KEY=... registry serve --port 8000
    """
    import uvicorn

    from registry.web.app import create_app

    config = _config(config_file)
    web = create_app(_engine(ctx), secret_key=os.environ.get("REGISTRY_SECRET_KEY"), https=https, config=config)
    uvicorn.run(web, host=host, port=port, log_level="info")


@app.command()
def template(
    out: Annotated[Path, typer.Argument(help="The .xlsx workbook to write (or a folder for CSV files).")],
) -> None:
    """Write an empty workbook to fill in: one sheet per table, drop-downs, a dictionary sheet.

    Example: registry template cases.xlsx
    """
    export_module.template(out)
    typer.echo(f"Template written to {out}")


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="An .xlsx workbook or a folder of CSV files named after the sheets.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and report; write nothing.")] = False,
    errors: Annotated[Path | None, typer.Option("--errors", help="Also write the problems to this CSV file.")] = None,
    actor: Actor = "",
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail [default: import of FILE]")] = None,
) -> None:
    """Import cases: every row is validated; nothing is written unless all are valid.

    Example: registry import cases.xlsx --dry-run --errors errors.csv
    """
    try:
        result = import_path(_engine(ctx), path, actor=actor or getpass.getuser(), reason=reason, dry_run=dry_run)
    except WorkbookError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    for problem in result.problems:
        typer.echo(f"{problem.severity}: {problem}", err=True)
    if errors is not None:
        write_problems(errors, result.problems)
        typer.echo(f"{len(result.problems)} problems written to {errors}")
    if result.errors:
        typer.echo(
            f"{_count(result.errors, 'error')}, {_count(result.warnings, 'warning')}: nothing was written.", err=True
        )
        raise typer.Exit(1)
    width = max(map(len, result.counts), default=5)
    typer.echo(f"{'sheet'.ljust(width)}  inserted  updated  unchanged")
    for sheet, counts in result.counts.items():
        typer.echo(f"{sheet.ljust(width)}  {counts.inserted:>8}  {counts.updated:>7}  {counts.unchanged:>9}")
    if dry_run:
        typer.echo("Dry run: the workbook is valid; nothing was written.")
    elif not result.changed:
        typer.echo("Nothing changed: the registry already holds every row of this workbook.")
    else:
        typer.echo(f"Imported {path.name}.")


@app.command()
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="An .xlsx file, or a folder for one CSV file per sheet.")],
) -> None:
    """Export the registry in the import format (direct identifiers are never exported).

    Example: registry export registry.xlsx
    """
    counts = export_module.export(_engine(ctx), out)
    typer.echo(f"Exported {sum(counts.values())} rows to {out}")


@app.command()
def audit(ctx: typer.Context, study_id: Annotated[str, typer.Argument(help="The patient's study_id.")]) -> None:
    """Print the full change history of one patient's records.

    Example: registry audit P001
    """
    entries = audit_history(_engine(ctx), study_id)
    if not entries:
        typer.echo(f"No audit entries for {study_id}", err=True)
        raise typer.Exit(1)
    for entry in entries:
        when = entry.changed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        why = f" ({entry.reason})" if entry.reason else ""
        typer.echo(f"{when}  {entry.actor}  {entry.action.value} {entry.table_name} {entry.record_key}{why}")
        for name in entry.fields():
            old, new = (entry.old_values or {}).get(name), (entry.new_values or {}).get(name)
            typer.echo(f"    {name}: {_shown(old)} -> {_shown(new)}")


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _shown(value: object) -> str:
    return "(empty)" if value is None else str(value)


@app.command()
def analyze(
    ctx: typer.Context,
    json_out: Annotated[Path, typer.Option("--json", help="Where to write every result as JSON.")] = Path(
        "results.json"
    ),
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Build the cohort and run every configured analysis; write the results as JSON.

    Example: registry analyze --json results.json --config registry.toml
    """
    _analyze_to(_engine(ctx), _config(config_file), json_out)


def _config(config_file: Path) -> Config:
    try:
        return load_config(config_file)
    except ConfigError as error:
        typer.echo(f"Configuration not used: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def check(
    ctx: typer.Context,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every finding as JSON.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write a browsable HTML page of findings.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when there are warnings (and no errors).")] = False,
    all_rules: Annotated[
        bool, typer.Option("--all", help="List every rule in the summary, not only failing ones.")
    ] = False,
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Run every data-quality rule on the whole database and summarise the findings.

    Exit code: 0 clean (or warnings only), 1 warnings only with --strict, 2 errors.

    Example: registry check --json findings.json --html findings.html
    """
    config = _config(config_file)
    from registry.quality.output import findings_document, render_html, summary_text

    run = _run_checks(_engine(ctx), config)
    now = datetime.now(UTC)
    typer.echo(summary_text(run, all_rules=all_rules))
    if json_out:
        json_out.write_text(json.dumps(findings_document(run, config, now), indent=2) + "\n", encoding="utf-8")
        typer.echo(f"Findings written to {json_out}")
    if html_out:
        html_out.write_text(render_html(run, now), encoding="utf-8")
        typer.echo(f"Findings page written to {html_out}")
    if run.errors:
        raise typer.Exit(2)
    if strict and run.warnings:
        raise typer.Exit(1)


def _run_checks(engine: sa.Engine, config: Config) -> CheckRun:
    from registry.quality import run_checks
    from registry.tables import load_tables

    return run_checks(load_tables(engine), config, date.today())


class RulesFormat(StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"


@app.command()
def rules(
    output_format: Annotated[RulesFormat, typer.Option("--format", help="text or markdown.")] = RulesFormat.TEXT,
) -> None:
    """List the data-quality rule catalogue: id, table, category, severity, message.

    Example: registry rules --format markdown > docs/rules.md
    """
    if output_format is RulesFormat.MARKDOWN:
        from registry.quality.output import catalogue_markdown

        typer.echo(catalogue_markdown(), nl=False)
        return
    from registry.quality import RULES

    for rule in RULES:
        typer.echo(f"{rule.id}  {rule.severity:<7}  {rule.category:<26}  {rule.table:<13}  {rule.message}")


def _analyze_to(engine: sa.Engine, config: Config, json_out: Path) -> None:
    """Cohort, analyses, JSON file, and a few lines a person can check at a glance."""
    from registry.analysis.run import analyze as analyze_cohort
    from registry.cohort import build_cohort
    from registry.tables import load_tables

    cohort = build_cohort(load_tables(engine), config)
    if cohort.table.empty:
        typer.echo("No patient can be analysed: " + json.dumps(cohort.exclusion_counts()), err=True)
        raise typer.Exit(1)
    results = analyze_cohort(cohort, config)
    json_out.write_text(_json(results), encoding="utf-8")
    _print_results(results)
    typer.echo(f"Results written to {json_out} (data fingerprint {results['data_fingerprint'][:12]})")


def _json(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


def _print_results(results: dict) -> None:
    flow = results["flow"]
    typer.echo(f"{flow['registered']} patients registered, {sum(flow['excluded'].values())} excluded")
    typer.echo("analysed: " + ", ".join(f"{g} {n}" for g, n in flow["analysed"].items()))
    for subset in ("overall", "rpild"):
        for entry in results[subset].get("mortality", []):
            groups = ", ".join(f"{g['group']} {g['deaths']}/{g['known']}" for g in entry["groups"])
            p = "n/a" if entry["p"] is None else f"{entry['p']:.3f}"
            typer.echo(f"{subset} mortality at {entry['landmark']}: {groups}; log-rank p = {p}")
        adjusted = results[subset].get("cox", {}).get("models", {}).get("adjusted", {})
        if "terms" in adjusted:
            t = adjusted["terms"][0]
            typer.echo(
                f"{subset} adjusted HR {t['name']}: {t['hr']:.3f} ({t['lower']:.3f}-{t['upper']:.3f}), p = {t['p']:.3f}"
            )


class ReportExit(IntEnum):
    """Exit codes of `registry report`, for schedulers."""

    OK = 0
    FAILED = 1  # nothing to analyse, or an unexpected error (see the log)
    CONFIGURATION = 2
    DATA_QUALITY = 3  # error-level findings and no --allow-dq-errors
    BUSY = 4  # another run holds the archive's lock


@app.command()
def report(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", help="Write the PDF here.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the report as HTML here too.")] = None,
    archive_dir: Annotated[
        Path | None,
        typer.Option("--archive", help="Unattended: write report-<cut-off|date>-<fingerprint>.pdf, .json, latest.*"),
    ] = None,
    allow_dq_errors: Annotated[
        bool, typer.Option("--allow-dq-errors", help="Render despite data-quality errors (every page says so).")
    ] = False,
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Check, analyse and render the PDF report (A4; every analysis, methods, data-quality status).

    Exit codes: 0 written, 1 failed, 2 bad configuration, 3 refused (data-quality errors),
    4 another run is writing to the archive.

    Example: registry report --out report.pdf --html report.html
    """
    from registry.quality.output import summary_text
    from registry.report.archive import ArchiveBusy, archive_logger, locked, recover
    from registry.report.build import NothingToAnalyse, ReportRefused

    if out is None and html_out is None and archive_dir is None:
        out = Path("report.pdf")
    config = _config(config_file)
    logger = archive_logger(archive_dir) if archive_dir else None
    try:
        with locked(archive_dir) if archive_dir else contextlib.nullcontext() as unfinished:
            if archive_dir and logger:
                logger.info("report run started (%s)", db.redacted(ctx.obj))
                if unfinished:
                    logger.warning("the previous run (%s) did not finish (killed or crashed)", unfinished)
                if leftovers := recover(archive_dir):
                    logger.warning("removed what an unfinished run left: %s", ", ".join(leftovers))
            made = _build(_engine(ctx), config, allow_dq_errors)
            written = _write_report(made, config, out, html_out, archive_dir)
    except ArchiveBusy as error:
        _fail(logger, str(error), ReportExit.BUSY)
    except ReportRefused as refused:
        typer.echo(summary_text(refused.checks), err=True)
        _fail(logger, f"{refused}; fix them (registry check) or pass --allow-dq-errors", ReportExit.DATA_QUALITY)
    except NothingToAnalyse as error:
        _fail(logger, str(error), ReportExit.FAILED)
    except Exception as error:
        if logger:
            logger.exception("report run failed")
        raise error
    for path in written:
        typer.echo(f"Report written to {path}")
        if logger:
            logger.info("wrote %s (data fingerprint %s)", path, made.fingerprint[:12])


def _fail(logger: logging.Logger | None, message: str, code: ReportExit) -> NoReturn:
    typer.echo(message, err=True)
    if logger:
        logger.error("%s (exit %d)", message, code)
    raise typer.Exit(code)


def _build(engine: sa.Engine, config: Config, allow_dq_errors: bool) -> Report:
    from registry.report.build import build_report
    from registry.tables import load_tables

    return build_report(load_tables(engine), config, today=date.today(), allow_dq_errors=allow_dq_errors)


def _write_report(
    made: Report, config: Config, out: Path | None, html_out: Path | None, archive: Path | None
) -> list[Path]:
    from registry.report.archive import archive_name, store, write_atomically

    written = []
    if out:
        write_atomically(out, made.pdf)
        written.append(out)
    if html_out:
        write_atomically(html_out, made.html.encode("utf-8"))
        written.append(html_out)
    if archive:
        stem = archive_name((config.data_cutoff or date.today()).isoformat(), made.fingerprint)
        written.append(store(archive, stem, made.pdf, _json(made.results).encode("utf-8")))
    return written


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to build the demo (replaced if it exists).")] = Path(
        "demo"
    ),
) -> None:
    """Build the demo registry from scratch on SQLite, check and analyse it, and render its PDF report.

    The synthetic 61-patient demo cohort (fixtures/demo) reproduces the published study.

    Example: registry demo --dir demo
    """
    from registry.quality.output import summary_text
    from registry.report.archive import write_atomically

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    url = f"sqlite:///{directory / 'registry.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    with audited_session(engine, actor="registry demo", reason="demo registry") as session:
        session.add(Site(code="DEMO", name="Demo centre (synthetic data)"))
        session.commit()
    cohort = resource_dir("fixtures/demo", "_fixtures/demo", "patients.csv")
    result = import_path(engine, cohort, actor="registry demo", reason="demo registry")
    if result.errors:  # the bundled cohort is kept valid by the tests
        raise RuntimeError("\n".join(map(str, result.errors)))
    _print_summary(engine, url)
    made = _build(engine, Config(), allow_dq_errors=False)
    typer.echo("")
    typer.echo(summary_text(made.checks))
    typer.echo("")
    _print_results(made.results)
    (directory / "results.json").write_text(_json(made.results), encoding="utf-8")
    write_atomically(directory / "report.pdf", made.pdf)
    typer.echo(f"Results written to {directory / 'results.json'} (data fingerprint {made.fingerprint[:12]})")
    typer.echo(f"Report written to {(directory / 'report.pdf').resolve()}")


@app.command()
def synth(
    patients: Annotated[int, typer.Option("--patients", min=1, help="Number of patients.")],
    out: Annotated[Path, typer.Option("--out", help="A folder for one CSV file per sheet, or an .xlsx workbook.")],
    seed: Annotated[int, typer.Option(min=0, help="Random seed: same patients and seed, same bytes.")] = 1,
    sites: Annotated[
        int | None, typer.Option(min=1, help="Number of sites, SYN01... (default: one per 2,000 patients).")
    ] = None,
) -> None:
    """Write a synthetic registry (SYNTHETIC DATA: no real person) in the import format, with SYNTHETIC.txt.

    For demonstrations, tests and benchmarks at any size: it imports and passes every error-level data-quality rule.

    Register its sites before importing it.

    Example: registry synth --patients 10000 --seed 7 --out synthetic && registry import synthetic
    """
    from registry import synth as synth_module

    try:
        made = synth_module.generate(patients, seed, sites)
    except ValueError as error:
        typer.echo(f"Nothing written: {error}", err=True)
        raise typer.Exit(2) from None
    written = synth_module.write(made, out)
    width = max(map(len, made.rows))
    typer.echo(f"Synthetic registry: {patients:,} patients, seed {seed}, {sum(made.rows.values()):,} rows")
    typer.echo(f"{'sheet'.ljust(width)}  {'rows':>9}")
    for sheet, count in made.rows.items():
        typer.echo(f"{sheet.ljust(width)}  {count:>9,}")
    typer.echo(f"Written to {out} (notice: {written[-1].name})")
    typer.echo(f"Sites: {', '.join(made.sites)}")
    typer.echo("Register the sites before importing (registry site add CODE NAME), e.g.:")
    typer.echo(f'  for code in {" ".join(made.sites)}; do registry site add "$code" "Synthetic site $code"; done')
    typer.echo(f"  registry import {out}")
