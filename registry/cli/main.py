"""The ``registry`` command and its groups but the data resolution workflow's (registry/cli/workflow.py)."""

from __future__ import annotations

import contextlib
import gc
import getpass
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
from typer.core import TyperGroup

import registry
from registry.atomic import write_atomically
from registry.codes import Role
from registry.config import Config, ConfigError, load_config
from registry.failures import SecondErrors, explained
from registry.settings import (
    ABSOLUTE_TIMEOUT,
    API_REQUESTS,
    DEFAULT_URL,
    IDLE_TIMEOUT,
    URL_VARIABLE,
    busy_timeout,
    database_url,
)

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa
    from sqlmodel import Session

    from registry.cuts import Cut
    from registry.quality import CheckRun
    from registry.report.build import Report

# Every module that loads SQLAlchemy, pandas, pandera, scipy, matplotlib or weasyprint is imported by the commands
# that use it, so that each command loads only what it needs: `registry --version` starts in a tenth of a second.


class _Commands(TyperGroup):
    """The commands, each of which ends a failure of the machine (a full disk, a read-only or locked database)
    with one plain message and exit code 1, not a traceback (registry.failures)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:
            message = explained(error, ctx.obj or database_url())
            if message is None:
                raise
            typer.echo(message, err=True)
            raise typer.Exit(1) from None


logging.getLogger("psycopg").addFilter(SecondErrors())
app = typer.Typer(
    cls=_Commands,
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
privacy_app = typer.Typer(help="Direct identifiers: scan files before they leave the registry.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
audit_app = typer.Typer(help="The audit trail: a patient's history, and the verification of the chain.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(audit_app, name="audit")
cut_app = typer.Typer(
    help="Data cuts: freeze the analysable data at a cut-off, to report from it identically later.",
    no_args_is_help=True,
)
app.add_typer(cut_app, name="cut")


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
            envvar=URL_VARIABLE,
            help=f"Database URL, e.g. sqlite:///registry.db or postgresql://user@host/db [default: {DEFAULT_URL}]",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = database_url(database)
    try:
        busy_timeout()
    except ValueError as error:
        typer.echo(f"Not run: {error}", err=True)
        raise typer.Exit(2) from None


def _engine(ctx: typer.Context) -> sa.Engine:
    from registry import db

    return db.make_engine(ctx.obj)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or migrate the schema to REVISION (default: the newest).

    Example: registry --database sqlite:///registry.db db upgrade
    """
    from registry import db

    engine = _engine(ctx)
    db.upgrade(engine, revision)
    typer.echo(f"{db.redacted(ctx.obj)}: schema at revision {db.current_revision(engine)}")


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target: a revision id, base (drop all), or -1 after -- (one step).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Drop missing-data codes (below 0008), the audit chain (below 0007) or log (base) that hold entries.",
        ),
    ] = False,
    actor: Actor = "",
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
) -> None:
    """Migrate the schema back to REVISION; 'base' drops every registry table and its data.

    Below revision 0008 the records' missing-data codes are dropped (the coded fields become blanks), and below 0007
    the audit chain (on to base, the audit log too): refused while any is held unless --force, which first logs the
    downgrade and prints the chain's head, to be kept.

    Examples: registry db downgrade base --yes; registry db downgrade --yes -- -1
    """
    from registry import db
    from registry.audit import AuditError

    if not yes:
        typer.confirm(f"Downgrade {db.redacted(ctx.obj)} to {revision}? Data in dropped tables is lost", abort=True)
    engine = _engine(ctx)
    if force:
        _log_forced_downgrade(engine, revision, actor or getpass.getuser(), reason)
    try:
        db.downgrade(engine, revision, force=force)
    except (AuditError, db.DowngradeRefused) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{db.redacted(ctx.obj)}: schema at revision {db.current_revision(engine) or 'base (empty)'}")


def _log_forced_downgrade(engine: sa.Engine, revision: str, actor: str, reason: str | None) -> None:
    """The forced downgrade's own audit entry, and the chain's head on stderr: what the downgrade may drop."""
    from registry import db
    from registry.audit import log_operation
    from registry.audit_chain import chain_head_message, has_chain, verify_chain
    from registry.codes import AuditAction

    before = db.current_revision(engine)
    with engine.begin() as connection:
        if not has_chain(connection):
            return
        log_operation(connection, AuditAction.DOWNGRADE, actor, reason or f"downgrade to {revision} (forced)",
                      {"from_revision": before, "to_revision": revision, "forced": True})  # fmt: skip
    with engine.connect() as connection:
        head = chain_head_message(verify_chain(connection))
    typer.echo(f"Forced downgrade from {before} to {revision}, logged; before it, the {head}", err=True)
    typer.echo("Keep this line (and the last backup): a downgrade to base drops the audit log itself.", err=True)


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision of the database and whether it is the newest.

    Example: registry db current
    """
    from registry import db

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
    from registry.dictionary import data_dictionary, to_csv, to_markdown

    entries = data_dictionary()
    text = to_csv(entries) if fmt is DictionaryFormat.CSV else to_markdown(entries)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomically(output, text.encode("utf-8"))
        typer.echo(f"{len(entries)} columns written to {output}")


def _print_summary(engine: sa.Engine, url: str) -> None:
    import sqlalchemy as sa

    from registry import db
    from registry.models import TABLES

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
    from registry.sites import SiteError, register_site

    try:
        code = register_site(
            _engine(ctx), {"code": code, "name": name, "country": country}, actor=actor or getpass.getuser()
        )
    except SiteError as error:
        typer.echo(f"Not added: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Site {code} added")


@site_app.command("list")
def site_list(ctx: typer.Context) -> None:
    """List the registered sites: code, name, country, and whether signing needs source data verification.

    Example: registry site list
    """
    import sqlalchemy as sa

    from registry.models import Site

    with _engine(ctx).connect() as connection:
        for code, name, country, verified in connection.execute(
            sa.select(Site.code, Site.name, Site.country, Site.verification_required).order_by(Site.code)
        ):
            typer.echo(f"{code}\t{name}\t{country or ''}" + ("\tsource verification required" if verified else ""))


@site_app.command("verification")
def site_verification(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The site's code.")],
    required: Annotated[
        bool, typer.Option("--required/--not-required", help="Whether signing needs source data verification.")
    ],
    actor: Actor = "",
) -> None:
    """Say whether a data manager must verify a patient's source data (registry status verify) before an
    investigator of the site signs.

    Example: registry site verification NJ1 --required
    """
    from registry.signoff import set_verification

    try:
        set_verification(_engine(ctx), code, required, actor=actor or getpass.getuser())
    except LookupError as error:
        typer.echo(f"Not done: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Site {code}: source data verification {'required' if required else 'not required'} before signing")


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
    from registry.accounts import AccountError
    from registry.audit import audited_session

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
    from registry.accounts import create_account

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
    from registry.accounts import set_password

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
    from registry.accounts import disable

    with _account_change(ctx, actor, f"account {username} disabled", f"Account {username} disabled") as s:
        disable(s, username)


@user_app.command("role")
def user_role(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[Role, typer.Option(help="coordinator, data_manager, analyst or admin.")],
    site: Annotated[list[str] | None, typer.Option(help="A site the coordinator works for (repeat for more).")] = None,
    actor: Actor = "",
) -> None:
    """Give an account a new role and exactly the sites listed; its sessions end.

    Example: registry user role alice --role coordinator --site NJ1 --site SH2
    """
    from registry.accounts import set_role

    with _account_change(ctx, actor, f"role of {username} changed", f"Role of {username} is now {role.value}") as s:
        set_role(s, username, role, site or [])


@user_app.command("events")
def user_events(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only the events of this user name.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list instead of lines.")] = False,
) -> None:
    """List sign-ins, failures, refusals, sign-outs and account changes: when (UTC), name, outcome, address, by whom.

    Example: registry user events --user alice --limit 20
    """
    from registry.accounts import sign_in_events

    with _engine(ctx).connect() as connection:
        events = sign_in_events(connection, user, limit)
    if as_json:
        typer.echo(json.dumps([{**e, "at": e["at"].isoformat(), "outcome": e["outcome"].value} for e in events],
                              indent=2))  # fmt: skip
        return
    for e in events:
        fields = (e["at"].strftime("%Y-%m-%d %H:%M:%S"), e["username"], e["outcome"].value, e["client_address"],
                  e["actor"])  # fmt: skip
        typer.echo("\t".join(field or "" for field in fields))


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List the accounts: sign-in name, role, active or disabled, sites.

    Example: registry user list
    """
    import sqlalchemy as sa

    from registry.accounts import site_codes
    from registry.models import Account

    with _engine(ctx).connect() as connection:
        rows = connection.execute(sa.select(Account.id, Account.username, Account.role, Account.active)
                                  .order_by(Account.username))  # fmt: skip
        for account_id, username, role, active in rows:
            sites = ",".join(site_codes(connection, account_id))
            typer.echo(f"{username}\t{role}\t{'active' if active else 'disabled'}\t{sites}")


ConfigOption = Annotated[
    Path, typer.Option("--config", help="Analysis configuration (TOML); defaults if the file is absent.")
]
CutOption = Annotated[
    str | None,
    typer.Option(
        "--cut",
        help="Read the frozen data cut NAME (registry cut list) instead of the live data; its cut-off is data_cutoff.",
    ),
]


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    https: Annotated[bool, typer.Option("--https", help="Served behind HTTPS: Secure session cookies, HSTS.")] = False,
    config_file: ConfigOption = Path("registry.toml"),
    idle_minutes: Annotated[
        int, typer.Option("--idle-minutes", min=1, help="A session unused this long ends.")
    ] = IDLE_TIMEOUT // timedelta(minutes=1),
    session_hours: Annotated[
        int, typer.Option("--session-hours", min=1, help="A session ends this long after sign-in.")
    ] = ABSOLUTE_TIMEOUT // timedelta(hours=1),
    api_requests: Annotated[
        int, typer.Option("--api-requests-per-minute", min=1, help="What one API token may ask in a minute.")
    ] = API_REQUESTS,
) -> None:
    """Start the web application for data entry, and the JSON API (/api/v1, personal tokens: registry token).
    Set REGISTRY_SECRET_KEY so open forms survive restarts.

    Example: REGISTRY_SECRET_KEY=... registry serve --port 8000 --idle-minutes 30 --session-hours 8
    """
    import uvicorn

    from registry.tokens import RateLimit
    from registry.web.app import create_app
    from registry.web.sessions import SessionLimits

    config = _config(config_file)
    limits = SessionLimits(idle=timedelta(minutes=idle_minutes), absolute=timedelta(hours=session_hours))
    web = create_app(_engine(ctx), secret_key=os.environ.get("REGISTRY_SECRET_KEY"), https=https, config=config,
                     session_limits=limits, api_rate_limit=RateLimit(api_requests))  # fmt: skip
    uvicorn.run(web, host=host, port=port, log_level="info")


@app.command()
def template(
    out: Annotated[Path, typer.Argument(help="The .xlsx workbook to write (or a folder for CSV files).")],
) -> None:
    """Write an empty workbook to fill in: one sheet per table, drop-downs, a dictionary sheet.

    Example: registry template cases.xlsx
    """
    from registry import export as export_module

    export_module.template(out)
    typer.echo(f"Template written to {out}")


class ImportFormat(StrEnum):
    workbook = "workbook"
    redcap = "redcap"
    odm = "odm"


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            help="An .xlsx workbook or a folder of CSV files named after the sheets; a CDISC ODM 1.3.2 file (.xml); "
            "with --from redcap, a REDCap records export (CSV)."
        ),
    ],
    from_: Annotated[
        ImportFormat | None,
        typer.Option("--from", help="What PATH is [default: odm for an .xml file, else workbook].", show_default=False),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="With --from redcap: a TOML file naming the project's instruments, fields and "
            "codes that differ from ours (docs/interoperability.md).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, check and report; write nothing (the writes are rolled back).")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse an import that adds error findings of the data-quality rules.")
    ] = False,
    errors: Annotated[
        Path | None, typer.Option("--errors", help="Also write the problems and the findings to this CSV file.")
    ] = None,
    actor: Actor = "",
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail [default: import of FILE]")] = None,
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Import cases: every row is validated; nothing is written unless all are valid.

    The data-quality rules then run for the patients the import touches, and the findings it adds are listed
    (records a patient still lacks, such as a follow-up, are listed as still to enter and never refused).

    Examples: registry import cases.xlsx --dry-run --errors errors.csv; registry import registry.odm.xml;
    registry import --from redcap MDA5_DATA_2026-12-01.csv --mapping redcap-mapping.toml
    """
    from registry.entry_checks import EntryChecks
    from registry.ingest import import_path, write_problems
    from registry.workbook import WorkbookError

    if from_ is None:
        from_ = ImportFormat.odm if path.suffix.lower() == ".xml" else ImportFormat.workbook
    if mapping is not None and from_ is not ImportFormat.redcap:
        typer.echo("Nothing imported: --mapping goes with --from redcap", err=True)
        raise typer.Exit(2)
    options = {"actor": actor or getpass.getuser(), "reason": reason, "dry_run": dry_run, "strict": strict}
    options["checks"] = EntryChecks(_config(config_file), date.today())
    try:
        if from_ is ImportFormat.redcap:
            from registry.interchange.redcap import import_records, read_mapping

            result = import_records(_engine(ctx), path, mapping=mapping and read_mapping(mapping), **options)
        elif from_ is ImportFormat.odm:
            from registry.interchange.odm import import_odm

            result = import_odm(_engine(ctx), path, **options)
        else:
            result = import_path(_engine(ctx), path, **options)
    except WorkbookError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    if result.findings is not None:
        _print_findings(result.findings)
    for problem in result.problems:
        typer.echo(f"{problem.severity}: {problem}", err=True)
    if errors is not None:
        write_problems(errors, result.problems, result.findings)
        found = "" if result.findings is None else f" and {_count(list(result.findings.index), 'finding')}"
        typer.echo(f"{len(result.problems)} problems{found} written to {errors}")
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
        what = {ImportFormat.redcap: "REDCap records export", ImportFormat.odm: "ODM file"}.get(from_, "workbook")
        typer.echo(f"Dry run: the {what} is valid; nothing was written.")
    elif not result.changed:
        typer.echo(f"Nothing changed: the registry already holds every row of {path.name}.")
    else:
        typer.echo(f"Imported {path.name}.")


def _print_findings(findings: pd.DataFrame) -> None:
    """The findings an import adds: a count per rule, then each patient's; the records still to enter by rule."""
    from registry.entry_checks import is_missing_record
    from registry.quality import CATALOGUE
    from registry.quality.output import shareable

    findings = shareable(findings)
    to_enter = findings["rule"].map(is_missing_record).astype(bool)
    added, missing = findings[~to_enter], findings[to_enter]
    errors, warnings = (list(added.index[added["severity"] == severity]) for severity in ("error", "warning"))
    typer.echo(
        f"Checks: the import adds {_count(errors, 'error')} and {_count(warnings, 'warning')}"
        f"; {_count(list(missing.index), 'record')} still to enter."
    )
    if not added.empty:
        typer.echo("By rule:")
    for rule, group in added.groupby("rule"):
        typer.echo(f"  {rule}  {CATALOGUE[rule].severity:<7}  {len(group):>5}  {CATALOGUE[rule].message}")
    if not added.empty:
        typer.echo("By patient:")
    for f in added.sort_values("study_id", kind="stable").itertuples():
        typer.echo(f"  {f.study_id}  {f.rule} {f.severity}: {f.table}.{f.field} = {_shown(f.value)}: {f.message}")
    if not missing.empty:
        typer.echo("Still to enter (a later import or the web form adds them; never refused by --strict):")
    for rule, group in missing.groupby("rule"):
        typer.echo(f"  {rule}  {_count(list(group['study_id']), 'patient')}  {CATALOGUE[rule].message}")


def _nothing_written(reason: object) -> NoReturn:
    """Refuse a command that writes files, saying why, with nothing written (exit code 2)."""
    typer.echo(f"Nothing written: {reason}", err=True)
    raise typer.Exit(2)


class ExportFormat(StrEnum):
    workbook = "workbook"
    redcap = "redcap"
    odm = "odm"
    fhir = "fhir"
    stata = "stata"
    spss = "spss"
    sas = "sas"
    rds = "rds"
    parquet = "parquet"


@app.command()
def export(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Argument(
            help="An .xlsx file, or a folder for one CSV file per sheet; a .csv file for redcap, an .xml file for odm, "
            "a .json file for fhir, a folder for stata, spss, sas, rds and parquet."
        ),
    ],
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="workbook: the import format; redcap: a REDCap records export (raw values); odm: CDISC ODM 1.3.2 "
            "(metadata, clinical data, audit trail); fhir: one FHIR R4 transaction Bundle; stata, spss, sas, rds, "
            "parquet: the analysis dataset and every table for a statistical package.",
        ),
    ] = ExportFormat.workbook,
    pseudonymise: Annotated[
        bool,
        typer.Option("--pseudonymise", help="For collaborators: keyed pseudonyms, shifted dates, no free text."),
    ] = False,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="The secret key of --pseudonymise (32+ bytes; no default).")
    ] = None,
    site: Annotated[str | None, typer.Option("--site", help="With --pseudonymise: only this site's patients.")] = None,
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Export the registry in the import format (direct identifiers are never exported).

    The full export keeps study_ids and birth dates (export -> import is exact): it is for registry staff only.
    --pseudonymise writes what may be shared: see docs/operations.md, "Privacy".

    Examples: registry export registry.xlsx; registry export shared --pseudonymise --key-file registry.key --site NJ1;
    registry export --format redcap records.csv; registry export --format odm registry.odm.xml;
    registry export --format fhir registry.fhir.json; registry export --format stata stata/
    """
    from registry import export as export_module
    from registry.workbook import WorkbookError

    if format_ is not ExportFormat.workbook:
        if pseudonymise or key_file is not None or site is not None:
            _nothing_written("--pseudonymise, --key-file and --site go with the workbook format")
        _export_as(_engine(ctx), out, format_, config_file)
        return
    if not pseudonymise:
        if key_file is not None or site is not None:
            _nothing_written("--key-file and --site go with --pseudonymise")
        try:
            counts = export_module.export(_engine(ctx), out)
        except WorkbookError as error:
            _nothing_written(error)
        typer.echo(f"Exported {sum(counts.values())} rows to {out}")
        return
    from registry.pseudonymise import PseudonymiseError, pseudonymised_export, read_key

    try:
        if key_file is None:
            raise PseudonymiseError("--pseudonymise needs --key-file KEY (there is no default key)")
        made = pseudonymised_export(_engine(ctx), out, read_key(key_file), site)
    except (PseudonymiseError, WorkbookError) as error:
        _nothing_written(error)
    dropped = ", ".join(made.dropped) or "none"
    typer.echo(f"Pseudonymised export of {made.patients} patients ({sum(made.rows.values())} rows) written to {out}")
    typer.echo(f"Columns left out: {dropped}; what was done: {made.notice}")


def _export_as(engine: sa.Engine, out: Path, format_: ExportFormat, config_file: Path) -> None:
    """``registry export --format F`` for every format but the workbook."""
    from registry.workbook import WorkbookError

    try:
        if format_ is ExportFormat.redcap:
            from registry.interchange.redcap import export_records

            typer.echo(f"Exported {export_records(engine, out)} REDCap records rows to {out}")
            return
        if format_ is ExportFormat.odm:
            from registry.interchange.odm import write_odm

            counts, what = write_odm(engine, out), "ODM 1.3.2"
        elif format_ is ExportFormat.fhir:
            from registry.interchange.fhir import write_fhir

            counts, what = write_fhir(engine, out), "FHIR R4 resources"
        else:
            from registry.interchange.statistical import StatisticalExportError, export_statistical

            try:
                counts = export_statistical(engine, out, format_.value, _config(config_file))
            except StatisticalExportError as error:
                _nothing_written(error)
            what = f"{format_.value} files (rows)"
    except WorkbookError as error:
        _nothing_written(error)
    typer.echo(f"Exported {what} to {out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


@privacy_app.command("scan")
def privacy_scan(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (scanned recursively).")],
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", help="The key of pseudonymised exports: check each row against its own patient."),
    ] = None,
) -> None:
    """Scan files for direct identifiers: stored names and hospital numbers, phones, e-mails, identity numbers,
    registered patients' birth dates. Values are shown masked. In a pseudonymised export (dates shifted) a row is
    checked for its own patient's true birth date, which needs the export's key.

    Exit code: 0 nothing found, 1 identifiers found, 2 a file could not be read (or no such path, or a bad key).

    Example: registry privacy scan reports/ results.json shared/ --key-file /etc/registry/export.key
    """
    from registry.privacy import Scanner, registered_identifiers
    from registry.pseudonymise import PseudonymiseError, read_key

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        typer.echo(f"No such file or folder: {', '.join(missing)}", err=True)
        raise typer.Exit(2)
    try:
        key = None if key_file is None else read_key(key_file)
    except PseudonymiseError as error:
        typer.echo(f"Not scanned: {error}", err=True)
        raise typer.Exit(2) from None
    with _engine(ctx).connect() as connection:
        scanner = Scanner(registered_identifiers(connection), key)
    result = scanner.scan(paths)
    for finding in result.findings:
        typer.echo(str(finding))
    for label, count in result.allowed.items():
        typer.echo(f"allowed: {label}: {count} birth dates (the full export, for registry staff only)")
    for label, count in result.unchecked.items():
        typer.echo(f"birth dates not checked: {label}: {count} pseudonymised rows (give the export's --key-file)")
    for problem in result.unreadable:
        typer.echo(f"not scanned: {problem}", err=True)
    typer.echo(f"{_count(result.scanned, 'file')} scanned, {_count(result.findings, 'identifier')} found")
    if result.findings:
        raise typer.Exit(1)
    if result.unreadable:
        raise typer.Exit(2)


@app.command()
def backup(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="A new folder (or an empty one) for the data file and manifest.json.")],
) -> None:
    """Back up the whole database, consistently while others write, to the folder OUT with a checksum manifest.

    The audit chain is verified in the copy and recorded in the manifest. Exit codes: 0 written, 1 not written,
    2 written but the audit log backed up is broken (kept for forensics; the manifest records it).

    Example: registry backup /srv/backups/registry-$(date +%F)
    """
    from registry import backup as backup_module
    from registry import db
    from registry.audit_chain import ChainReport, chain_head_message

    removed: list[Path] = []
    try:
        manifest = backup_module.backup(_engine(ctx), out, removed)
    except backup_module.BackupError as error:
        typer.echo(f"Not backed up: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        for unfinished in removed:
            typer.echo(f"Removed an unfinished backup left by an earlier run: {unfinished}")
    rows, tables = sum(manifest.tables.values()), len(manifest.tables)
    typer.echo(f"Backup of {db.redacted(ctx.obj)} written to {out}")
    typer.echo(f"  schema revision {manifest.schema_revision or 'none'}, {rows:,} rows in {tables} tables")
    for entry in manifest.files:
        typer.echo(f"  {entry.name}  {entry.size:,} bytes  SHA-256 {entry.sha256}")
    typer.echo(f"  {backup_module.MANIFEST}  (made with {manifest.tool})")
    if manifest.audit_chain is None:
        typer.echo("  audit log without a hash chain (schema before 0007: run `registry db upgrade`)")
        return
    chain = ChainReport.from_dict(manifest.audit_chain)
    if chain.intact:
        typer.echo(f"  {chain_head_message(chain)}")
        return
    typer.echo(f"WARNING: the backup's {chain_head_message(chain)}", err=True)
    typer.echo("It is kept, for forensics, and its manifest says so: it restores only with --force.", err=True)
    typer.echo(BROKEN_CHAIN_HELP, err=True)
    raise typer.Exit(2)


@app.command()
def restore(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="A folder written by `registry backup`.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace the database even if it is not empty, or its audit log is broken."),
    ] = False,
    actor: Actor = "",
) -> None:
    """Restore the backup in the folder SOURCE into the database, after verifying its checksums and audit chain.

    The restore is logged in the restored database's audit trail (who, from which backup, over what, forced or not).

    Exit codes: 0 restored and verified, 1 refused (nothing changed), 2 restored but the row counts differ,
    3 restored (--force) but its audit log is broken.

    Example: registry --database sqlite:///restored.db restore /srv/backups/registry-2026-11-27
    """
    from registry import backup as backup_module
    from registry import db

    engine = _engine(ctx)
    try:
        manifest = backup_module.restore(engine, source, force=force, actor=actor or getpass.getuser())
    except backup_module.RestoreMismatch as error:
        typer.echo(f"Restored, but not as backed up: {error}", err=True)
        raise typer.Exit(2) from None
    except backup_module.BackupError as error:
        typer.echo(f"Not restored: {error}", err=True)
        raise typer.Exit(1) from None
    kind = backup_module.KIND_NAMES[manifest.database]
    typer.echo(f"Restored {source} ({kind}, backed up {manifest.created_at}) into {db.redacted(ctx.obj)}")
    width = max(map(len, manifest.tables), default=5)
    typer.echo(f"{'table'.ljust(width)}  {'rows':>11}")
    for name, count in manifest.tables.items():
        typer.echo(f"{name.ljust(width)}  {count:>11,}")
    typer.echo(f"Every table holds the rows the manifest lists: {sum(manifest.tables.values()):,} rows.")
    current, head = db.current_revision(engine), db.head_revision()
    state = "up to date" if current == head else f"newest is {head}: run `registry db upgrade`"
    typer.echo(f"Schema revision {current or 'none'} ({state})")
    typer.echo(_verified_log(engine, exit_code=3, required=False))


@audit_app.command("history")
def audit_history_command(
    ctx: typer.Context, study_id: Annotated[str, typer.Argument(help="The patient's study_id.")]
) -> None:
    """Print the full change history of one patient's records.

    Example: registry audit history P001
    """
    from registry.audit import audit_history

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


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Walk the audit log's hash chain: exit 0 with the count when intact, 1 naming the first broken entry.

    Example: registry audit verify
    """
    typer.echo(_verified_log(_engine(ctx)))


#: Where an operator finds what to do about a broken audit chain.
BROKEN_CHAIN_HELP = "See docs/operations.md, 'When the audit chain is broken'"


def _verified_log(engine: sa.Engine, *, exit_code: int = 1, required: bool = True) -> str:
    """The state of the audit chain, in one line; exit ``exit_code`` when it is broken, or when the schema has none
    and one is ``required``."""
    from registry.audit_chain import chain_head_message, verify_database

    report = verify_database(engine)
    if report is None:
        missing = "The audit log has no hash chain yet: run `registry db upgrade`"
        if required:
            typer.echo(missing, err=True)
            raise typer.Exit(exit_code)
        return missing
    if not report.intact:
        typer.echo(chain_head_message(report), err=True)
        typer.echo(BROKEN_CHAIN_HELP, err=True)
        raise typer.Exit(exit_code)
    return chain_head_message(report)


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
    cut: CutOption = None,
    imputations: Annotated[
        Path | None,
        typer.Option(
            "--imputations",
            help="Also write the multiple imputation's data sets (imputation_NN.csv and manifest.json) to this new or "
            "empty directory, to re-pool them elsewhere (R: mice::pool).",
        ),
    ] = None,
) -> None:
    """Build the cohort and run every configured analysis; write the results as JSON.

    Example: registry analyze --json results.json --config registry.toml --imputations imputed/
    """
    from registry.cohort import COLUMNS

    config = _config(config_file)
    if imputations is not None:
        if "imputation" not in config.sensitivity_analyses:
            typer.echo("--imputations: the configuration's sensitivity_analyses leave out imputation", err=True)
            raise typer.Exit(2)
        if imputations.exists() and (not imputations.is_dir() or any(imputations.iterdir())):
            typer.echo(f"--imputations: {imputations} is not a new or empty directory; nothing was analysed", err=True)
            raise typer.Exit(2)
    _analyze_to(_source(_engine(ctx), config, cut, columns=COLUMNS), json_out, imputations)


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
    cut: CutOption = None,
    site: Annotated[
        str | None, typer.Option("--site", help="Only this site's patients (a coordinator's own checks).")
    ] = None,
) -> None:
    """Run every data-quality rule on the whole database (or a data cut, or one site's patients) and summarise
    the findings.

    The audit log's hash chain is verified first (as `registry audit verify`): a broken chain is an error.

    Exit code: 0 clean (or warnings only), 1 warnings only with --strict, 2 errors (or an unknown data cut, or
    a broken audit chain).

    Example: registry check --json findings.json --html findings.html
    """
    from registry.quality import run_checks
    from registry.quality.output import findings_document, render_html, summary_text

    engine, configured = _engine(ctx), _config(config_file)
    if site is not None and cut is not None:
        typer.echo("--site checks the registry as it is now: it does not go with --cut", err=True)
        raise typer.Exit(2)
    chain = _verified_log(engine, exit_code=2)
    if site is None:
        source = _source(engine, configured, cut)
        config = source.config
        run = run_checks(source.tables, config, source.today)
    else:
        config, run = configured, _site_run(engine, site, configured)
    now = datetime.now(UTC)
    typer.echo(summary_text(run, all_rules=all_rules))
    if cut is None:  # the queries are of the registry as it is now
        from registry.cli.workflow import query_summary, status_summary
        from registry.queries import coordinators, list_queries, summarise
        from registry.signoff import count_by_status

        queries = list_queries(engine, sites=None if site is None else [site])
        typer.echo(query_summary(summarise(queries, coordinators(engine))))
        typer.echo(status_summary(count_by_status(engine, sites=None if site is None else [site])))
    typer.echo(chain)
    if json_out:
        write_atomically(json_out, _json(findings_document(run, config, now)).encode("utf-8"))
        typer.echo(f"Findings written to {json_out}")
    if html_out:
        write_atomically(html_out, render_html(run, now).encode("utf-8"))
        typer.echo(f"Findings page written to {html_out}")
    if run.errors:
        raise typer.Exit(2)
    if strict and run.warnings:
        raise typer.Exit(1)


def _site_run(engine: sa.Engine, code: str, config: Config) -> CheckRun:
    """The checks of the site's patients (exit 2 for a site not registered)."""
    import sqlalchemy as sa

    from registry.models import Site
    from registry.quality.incremental import check_sites

    with engine.connect() as connection:
        sites = list(connection.execute(sa.select(Site.code).order_by(Site.code)).scalars())
        if code not in sites:
            typer.echo(f"Site {code} is not registered (registered: {', '.join(sites) or 'none'})", err=True)
            raise typer.Exit(2)
        return check_sites(connection, [code], config, date.today())


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


def _analyze_to(source: DataSource, json_out: Path, imputations: Path | None = None) -> None:
    """Cohort, analyses, JSON file, and a few lines a person can check at a glance."""
    from registry.analysis.run import analyze as analyze_cohort
    from registry.cohort import build_cohort

    cohort = build_cohort(source.tables, source.config)
    if (why := cohort.why_not_analysable()) is not None:
        typer.echo(why[0].upper() + why[1:], err=True)
        raise typer.Exit(1)
    results = analyze_cohort(cohort, source.config, data_cut=source.cut, imputations=imputations)
    write_atomically(json_out, _json(results).encode("utf-8"))
    _print_results(results)
    typer.echo(f"Results written to {json_out} (data fingerprint {results['data_fingerprint'][:12]})")
    if imputations is not None:
        written = results.get("sensitivity", {}).get("imputation", {}).get("written")
        typer.echo(
            f"{len(written)} imputed data sets written to {imputations}"
            if written
            else f"No imputed data sets written to {imputations}: nothing was imputed (see the results' sensitivity)"
        )


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
    cut: CutOption = None,
) -> None:
    """Check, analyse and render the PDF report (A4; every analysis, methods, data-quality status).

    With --cut NAME the report is made from the frozen data cut NAME and names it; the same cut gives the same numbers.

    Exit codes: 0 written, 1 failed (or a corrupted data cut), 2 bad configuration (or an unknown data cut),
    3 refused (data-quality errors), 4 another run is writing to the archive.

    Example: registry report --out report.pdf --html report.html
    """
    from registry import db
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
            source = _source(_engine(ctx), config, cut, logger)
            made = _build(source, allow_dq_errors, _engine(ctx))
            written = _write_report(made, source.config, out, html_out, archive_dir)
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


@dataclass(frozen=True)
class DataSource:
    """What a check, analysis or report reads: the live tables, or the snapshot of a data cut."""

    tables: dict[str, pd.DataFrame]
    config: Config
    today: date  # the day "in the future" is judged by: today, or the day the cut was made
    cut: dict[str, Any] | None  # the cut's metadata (registry.cuts.Cut.as_dict), for the results and the report


def _load_cut(
    engine: sa.Engine, name: str, config: Config, logger: logging.Logger | None = None
) -> tuple[dict[str, pd.DataFrame], Cut]:
    """The cut's snapshot, verified (its fingerprint under ``config``); exit 2 for an unknown cut, 1 for a corrupted
    one."""
    from registry.cuts import CorruptedCut, CutError, load_cut

    try:
        return load_cut(engine, name, config)
    except CutError as error:
        _fail(logger, str(error), ReportExit.FAILED if isinstance(error, CorruptedCut) else ReportExit.CONFIGURATION)


def _source(
    engine: sa.Engine,
    config: Config,
    cut_name: str | None,
    logger: logging.Logger | None = None,
    columns: Mapping[str, Collection[str]] | None = None,
) -> DataSource:
    """The live data (of ``columns`` only, if given: registry.tables.load_tables), or the data cut ``cut_name``
    analysed at its own cut-off (which overrides the configuration's)."""
    from registry.tables import load_tables

    if cut_name is None:
        return DataSource(load_tables(engine, columns), config, date.today(), None)
    tables, cut = _load_cut(engine, cut_name, config, logger)
    if config.data_cutoff not in (None, cut.cutoff_date):
        typer.echo(
            f"data_cutoff {config.data_cutoff} of the configuration is not used: "
            f"data cut {cut.name} is analysed at its own cut-off, {cut.cutoff_date}",
            err=True,
        )
    read = f"Data cut {cut.name}: cut-off {cut.cutoff_date}, frozen {_when(cut)} by {cut.created_by}"
    typer.echo(read)
    if logger:
        logger.info("%s, snapshot SHA-256 %s verified", read, cut.snapshot_sha256)
    return DataSource(tables, cut.config(config), cut.created_at.date(), cut.as_dict())


def _when(cut: Cut) -> str:
    return f"{cut.created_at:%Y-%m-%d %H:%M:%S} UTC"


def _fail(logger: logging.Logger | None, message: str, code: ReportExit) -> NoReturn:
    typer.echo(message, err=True)
    if logger:
        logger.error("%s (exit %d)", message, code)
    raise typer.Exit(code)


def _build(source: DataSource, allow_dq_errors: bool, engine: sa.Engine) -> Report:
    """The report of ``source``; of live data, with the queries and record statuses of ``engine``'s registry."""
    from registry.report.build import build_report
    from registry.signoff import resolution_counts

    return build_report(
        source.tables, source.config, today=source.today, allow_dq_errors=allow_dq_errors, data_cut=source.cut,
        resolution=resolution_counts(engine) if source.cut is None else None,
    )  # fmt: skip


def _write_report(
    made: Report, config: Config, out: Path | None, html_out: Path | None, archive: Path | None
) -> list[Path]:
    from registry.report.archive import archive_name, store

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
    from registry import db
    from registry.audit import audited_session
    from registry.ingest import import_path
    from registry.models import Site
    from registry.quality.output import summary_text
    from registry.resources import resource_dir

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
    made = _build(_source(engine, Config(), None), allow_dq_errors=False, engine=engine)
    typer.echo("")
    typer.echo(summary_text(made.checks))
    typer.echo("")
    _print_results(made.results)
    write_atomically(directory / "results.json", _json(made.results).encode("utf-8"))
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
    from registry.workbook import WorkbookError

    try:
        made = synth_module.generate(patients, seed, sites)
    except ValueError as error:
        _nothing_written(error)
    try:
        written = synth_module.write(made, out)
    except WorkbookError as error:
        _nothing_written(error)
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


@cut_app.command("create")
def cut_create(
    ctx: typer.Context,
    cutoff: Annotated[str, typer.Option("--date", help="The data cut-off, YYYY-MM-DD.")],
    name: Annotated[str, typer.Option("--name", help="Name of the cut (letters, digits, '.', '_', '-').")],
    reason: Annotated[str | None, typer.Option(help="Why the cut is made, for the audit trail.")] = None,
    signed_only: Annotated[
        bool, typer.Option("--signed-only", help="Freeze only the patients an investigator has signed.")
    ] = False,
    actor: Actor = "",
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Freeze the analysable data as they are now, with cut-off DATE, as the read-only data cut NAME.

    Its data-quality status and data fingerprint are recorded under the configuration with DATE as data_cutoff.
    With --signed-only, only signed patients are frozen, and the cut records how many it left out, by status.

    Example: registry cut create --date 2022-06-30 --name interim-2022 --reason "interim analysis"
    """
    from registry.cuts import CutError, create_cut

    config = _config(config_file)
    if (day := _iso_date(cutoff)) is None:
        typer.echo(f"Not made: --date {cutoff!r} is not a date written YYYY-MM-DD (e.g. 2022-06-30)", err=True)
        raise typer.Exit(2)
    try:
        made = create_cut(_engine(ctx), name, day, actor=actor or getpass.getuser(), reason=reason, config=config,
                          signed_only=signed_only)  # fmt: skip
    except CutError as error:
        typer.echo(f"Not made: {error}", err=True)
        raise typer.Exit(2) from None
    _print_cut(made)
    typer.echo(f"Data cut {made.name} made: registry report --cut {made.name}")


def _iso_date(text: str) -> date | None:
    """``text`` as a date if it is one written YYYY-MM-DD (no other form is guessed)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(text)
    return None


@cut_app.command("list")
def cut_list(ctx: typer.Context) -> None:
    """List the data cuts: name, cut-off, when and by whom frozen, patients, data-quality status.

    Example: registry cut list
    """
    from registry.cuts import list_cuts

    for made in list_cuts(_engine(ctx)):
        typer.echo(
            f"{made.name}\t{made.cutoff_date}\t{_when(made)}\t{made.created_by}\t{made.row_counts['patient']} patients"
            f"\t{made.dq_errors} errors, {made.dq_warnings} warnings"
        )


@cut_app.command("show")
def cut_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cut's name.")],
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Show one data cut and verify its snapshot against the SHA-256, audit entry and fingerprint of its creation.

    Example: registry cut show interim-2022
    """
    _print_cut(_load_cut(_engine(ctx), name, _config(config_file))[1])
    typer.echo("Snapshot verified: it matches its SHA-256")


def _print_cut(made: Cut) -> None:
    typer.echo(f"Data cut     {made.name}")
    typer.echo(f"Cut-off      {made.cutoff_date}")
    typer.echo(f"Frozen       {_when(made)} by {made.created_by}" + (f" ({made.reason})" if made.reason else ""))
    typer.echo(f"SHA-256      {made.snapshot_sha256}")
    typer.echo(f"Fingerprint  {made.data_fingerprint or '(no patient could be analysed)'}")
    typer.echo(f"Data quality {made.dq_errors} error and {made.dq_warnings} warning finding(s) at creation")
    typer.echo("Rows         " + ", ".join(f"{table} {count}" for table, count in made.row_counts.items()))
    if made.signed_only:
        left = made.left_out or {}
        typer.echo(f"Signed only  {sum(left.values())} patient(s) left out, not signed: "
                   + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in left.items()))  # fmt: skip


#: The BLAS libraries' thread counts (OpenBLAS, as numpy's wheels have it; MKL; OpenMP builds), set to 1 by
#: :func:`run` unless already set.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def run() -> None:
    """The ``registry`` console command: :data:`app`, with the garbage collector set for a short-lived process.

    The cyclic collector's default (a pass every 700 new objects) re-scans the few
    hundred thousand objects of pandas, scipy, matplotlib and weasyprint again and
    again; every 10,000 is as safe for memory and takes a second off ``registry demo``.
    Freezing what is alive at the end spares the collections of the interpreter's exit
    (about 0.6 s); what is frozen is not collected, so the database connections are
    closed first, explicitly (by registry.db, if the command loaded it).

    BLAS (numpy's matrix products) runs on one thread: an analysis at scale then runs its pieces in threads of its
    own (registry.analysis.threads), which BLAS's threads beside them only slowed down.
    """
    for variable in BLAS_THREADS:  # before numpy loads; a value set by the user stands
        os.environ.setdefault(variable, "1")
    gc.set_threshold(10_000, 10, 10)
    try:
        app(prog_name="registry")
    finally:
        if (db := sys.modules.get("registry.db")) is not None:
            db.dispose_engines()
        gc.freeze()
