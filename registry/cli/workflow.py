"""``registry query`` and ``registry status``: the data resolution workflow and sign-off on the command line."""

from __future__ import annotations

import contextlib
import getpass
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from registry.cli.main import Actor, ConfigOption, PasswordStdin, _config, _engine, _json, app
from registry.codes import QueryStatus, RecordStatus
from registry.config import Config

if TYPE_CHECKING:
    import sqlalchemy as sa

query_app = typer.Typer(
    help="Queries about patients' data: a data manager asks, the site answers, the data manager closes.",
    no_args_is_help=True,
)
app.add_typer(query_app, name="query")
status_app = typer.Typer(
    help="Record status and sign-off: complete (the site), verified (a data manager), signed (an investigator).",
    no_args_is_help=True,
)
app.add_typer(status_app, name="status")


Message = Annotated[str, typer.Option("--message", "-m", help="The message, for the query's thread.")]
QueryId = Annotated[int, typer.Argument(help="The query's number (registry query list).")]


@contextlib.contextmanager
def _workflow_step(done: str = "") -> Iterator[None]:
    """A query or status command: a refusal is reported (exit 1) and nothing is written; else ``done`` (if any) is
    printed."""
    from registry.queries import QueryError
    from registry.signoff import SignOffError

    try:
        yield
    except (QueryError, SignOffError, LookupError) as error:
        typer.echo(f"Not done: {error}", err=True)
        raise typer.Exit(1) from None
    if done:
        typer.echo(done)


@query_app.command("list")
def query_list(
    ctx: typer.Context,
    site: Annotated[list[str] | None, typer.Option("--site", help="Only this site's queries (repeatable).")] = None,
    status: Annotated[QueryStatus | None, typer.Option("--status", help="Only queries of this status.")] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Only this patient's (study_id).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The queries and the summary as one JSON document.")] = False,
) -> None:
    """List the queries, oldest first, and summarise them: by status; the open ones (awaiting the site) by age, by
    rule, by site and by coordinator.

    Example: registry query list --site NJ1 --status open
    """
    from registry.queries import coordinators, list_queries, summarise

    engine = _engine(ctx)
    queries = list_queries(engine, sites=site or None, status=status, study_id=patient)
    summary = summarise(queries, coordinators(engine))
    if as_json:
        rows = queries.assign(opened_at=queries["opened_at"].map(lambda at: at.isoformat(timespec="seconds")),
                              last_at=queries["last_at"].map(lambda at: at.isoformat(timespec="seconds")))  # fmt: skip
        records = [{k: None if v != v else v for k, v in row.items()} for row in rows.to_dict("records")]
        typer.echo(_json({"queries": records, "summary": summary}))
        return
    for q in queries.itertuples():
        about = "patient" if q.table is None else f"{q.table} {q.record}" + (f" {q.field}" if q.field else "")
        typer.echo(f"{q.query}\t{q.study_id}\t{q.site}\t{about}\t{q.rule or '-'}\t{q.status}\t"
                   f"{q.opened_at:%Y-%m-%d} {q.opened_by}\t{q.age_days} d\t{q.last_action} by {q.last_by}")  # fmt: skip
    typer.echo(query_summary(summary))


def query_summary(summary: dict[str, Any]) -> str:
    """The summary of :func:`registry.queries.summarise` in a few lines."""
    counts = summary["by_status"]
    lines = [f"Queries: {counts['open']} open (awaiting the site), {counts['answered']} answered (awaiting a data "
             f"manager), {counts['closed']} closed"]  # fmt: skip
    if counts["open"]:
        for title, part in (("by age", "open_by_age"), ("by rule", "open_by_rule"), ("by site", "open_by_site"),
                            ("by coordinator", "open_by_coordinator")):  # fmt: skip
            lines.append(f"  open {title}: " + ", ".join(f"{key} {n}" for key, n in summary[part].items()))
    return "\n".join(lines)


@query_app.command("show")
def query_show(ctx: typer.Context, query_id: QueryId) -> None:
    """Print a query and its thread, oldest message first.

    Example: registry query show 3
    """
    from registry.queries import About, list_queries, thread

    engine = _engine(ctx)
    with _workflow_step():
        messages = thread(engine, query_id)
    (q,) = list_queries(engine).query(f"query == {query_id}").itertuples()
    typer.echo(
        f"Query {q.query} on {About(q.table, q.record, q.field).describe()} of {q.study_id} (site {q.site}): {q.status}"
    )
    if q.rule:
        typer.echo(f"From finding {q.rule}" + (f", value {q.value}" if q.value is not None else ""))
    for message in messages:
        typer.echo(f"{message.written_at:%Y-%m-%d %H:%M} UTC  {message.written_by}  {message.action.value} "
                   f"-> {message.status.value}")  # fmt: skip
        typer.echo(f"    {message.body}")


@query_app.command("open")
def query_open(
    ctx: typer.Context,
    study_id: Annotated[str, typer.Argument(help="The patient's study_id.")],
    message: Message,
    table: Annotated[str | None, typer.Option("--table", help="The table of the record asked about.")] = None,
    record: Annotated[str | None, typer.Option("--record", help="The record's key (as the findings show it).")] = None,
    field: Annotated[str | None, typer.Option("--field", help="The field asked about.")] = None,
    rule: Annotated[
        str | None, typer.Option("--rule", help="Open it on the patient's finding of this rule (the checks run).")
    ] = None,
    actor: Actor = "",
    config_file: ConfigOption = Path("registry.toml"),
) -> None:
    """Open a query on a patient, a record (--table, --record) or a field (--field) of theirs; or, with --rule, on
    the patient's current finding of that rule (narrowed by --table, --record, --field when the rule finds several).

    Example: registry query open DM-012 --rule LAB-010 -m "CRP in mg/dL? Please check the laboratory report"
    """
    from registry.queries import About, open_query

    engine, about, finding = _engine(ctx), About(table, record, field), None
    if rule is not None:
        finding = _finding_of(engine, study_id, rule, about, _config(config_file))
    with _workflow_step():
        opened = open_query(engine, study_id, message, actor=actor or getpass.getuser(),
                            about=about if finding is None else About(), finding=finding)  # fmt: skip
    typer.echo(f"Query {opened} opened")


def _finding_of(engine: sa.Engine, study_id: str, rule: str, about: Any, config: Config) -> dict[str, Any]:
    """The one current finding of ``rule`` about the patient (and ``about``'s table, record, field where given)."""
    import sqlalchemy as sa

    from registry.models import Patient
    from registry.quality import CATALOGUE
    from registry.quality.incremental import check_patients

    if rule not in CATALOGUE:
        typer.echo(f"Not done: {rule} is not a rule of the catalogue (registry rules lists them)", err=True)
        raise typer.Exit(1)
    with engine.connect() as connection:
        patient_id = connection.execute(sa.select(Patient.id).where(Patient.study_id == study_id)).scalar()
        if patient_id is None:
            typer.echo(f"Not done: no patient {study_id}", err=True)
            raise typer.Exit(1)
        findings = check_patients(connection, [patient_id], config, date.today())
    wanted = (findings["rule"] == rule) & (findings["study_id"] == study_id)
    for name, value in (("table", about.table), ("record", about.record), ("field", about.field)):
        if value is not None:
            wanted &= findings[name] == value
    found = findings[wanted].to_dict("records")
    if len(found) != 1:
        where = "; ".join(f"--table {f['table']} --record {f['record']} --field {f['field']}" for f in found)
        typer.echo(f"Not done: {rule} finds {len(found)} finding(s) about {study_id}"
                   + (f": name one ({where})" if found else ""), err=True)  # fmt: skip
        raise typer.Exit(1)
    return found[0]


@query_app.command("answer")
def query_answer(ctx: typer.Context, query_id: QueryId, message: Message, actor: Actor = "") -> None:
    """Answer a query (the site): it becomes answered, for a data manager to close or re-open.

    Correcting the field the query is about (a form, an import) answers it too, with the change in its thread.

    Example: registry query answer 3 -m "Checked the laboratory report: the unit was mg/L, corrected"
    """
    from registry.queries import answer

    with _workflow_step(f"Query {query_id} answered"):
        answer(_engine(ctx), query_id, message, actor=actor or getpass.getuser())


@query_app.command("close")
def query_close(ctx: typer.Context, query_id: QueryId, message: Message, actor: Actor = "") -> None:
    """Close a query (data managers): the answer is accepted, or the question withdrawn.

    Example: registry query close 3 -m "Correction confirmed against the laboratory report"
    """
    from registry.queries import close

    with _workflow_step(f"Query {query_id} closed"):
        close(_engine(ctx), query_id, message, actor=actor or getpass.getuser())


@query_app.command("reopen")
def query_reopen(ctx: typer.Context, query_id: QueryId, message: Message, actor: Actor = "") -> None:
    """Re-open an answered or closed query (data managers), saying what is still wanted.

    Example: registry query reopen 3 -m "The report gives 12 mg/L, not 1.2: please check again"
    """
    from registry.queries import reopen

    with _workflow_step(f"Query {query_id} re-opened"):
        reopen(_engine(ctx), query_id, message, actor=actor or getpass.getuser())


StudyId = Annotated[str, typer.Argument(help="The patient's study_id.")]


def status_summary(counts: dict[str, int]) -> str:
    return "Record status: " + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())


@status_app.command("list")
def status_list(
    ctx: typer.Context,
    site: Annotated[list[str] | None, typer.Option("--site", help="Only this site's patients (repeatable).")] = None,
    status: Annotated[RecordStatus | None, typer.Option("--status", help="Only patients of this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The patients and the counts as one JSON document.")] = False,
) -> None:
    """List the patients with their record status (who set it, when; who signed), and count them by status.

    Example: registry status list --site NJ1 --status complete
    """
    from registry.signoff import count_by_status, list_states

    engine = _engine(ctx)
    states = list_states(engine, sites=site or None, status=status)
    counts = count_by_status(engine, sites=site or None)
    if as_json:
        rows = [{**row, "status": row["status"].value,
                 **{k: row[k].isoformat(timespec="seconds") if row[k] else None for k in ("changed_at", "signed_at")}}
                for row in states]  # fmt: skip
        typer.echo(_json({"patients": rows, "by_status": counts}))
        return
    for row in states:
        set_by = f"{row['changed_at']:%Y-%m-%d} {row['changed_by']}" if row["changed_at"] else "-"
        signed = f"\tsigned {row['signed_at']:%Y-%m-%d %H:%M} UTC by {row['signer']}" if row["signer"] else ""
        typer.echo(f"{row['study_id']}\t{row['site']}\t{row['status'].value}\t{set_by}{signed}")
    typer.echo(status_summary(counts))


@status_app.command("show")
def status_show(ctx: typer.Context, study_id: StudyId) -> None:
    """Print a patient's record status and every signature of their data, standing or voided.

    Example: registry status show DM-012
    """
    from registry.signoff import state_of

    with _workflow_step():
        state = state_of(_engine(ctx), study_id)
    line = f"Patient {state.study_id} (site {state.site}): {state.status.value}"
    if state.changed_at:
        line += f", set {state.changed_at:%Y-%m-%d %H:%M} UTC by {state.changed_by}"
    typer.echo(line)
    if state.verification_required:
        typer.echo(f"Site {state.site} requires source data verification before signing")
    for signature in state.signatures:
        typer.echo(f'Signed {signature.signed_at:%Y-%m-%d %H:%M} UTC by {signature.signer}: "{signature.meaning}"')
        if signature.voided_at:
            typer.echo(f"    voided {signature.voided_at:%Y-%m-%d %H:%M} UTC by {signature.voided_by}: "
                       f"{signature.void_reason}")  # fmt: skip


@status_app.command("complete")
def status_complete(
    ctx: typer.Context, study_id: StudyId, actor: Actor = "", config_file: ConfigOption = Path("registry.toml")
) -> None:
    """Mark a patient complete (the site): refused while a required form (antibody test, treatment, follow-up) is
    missing, an error finding stands that no closed query answers, or a query awaits the site.

    Example: registry status complete DM-012
    """
    from registry.signoff import mark_complete

    config = _config(config_file)
    with _workflow_step(f"Patient {study_id} marked complete"):
        mark_complete(_engine(ctx), study_id, actor=actor or getpass.getuser(), config=config)


@status_app.command("verify")
def status_verify(ctx: typer.Context, study_id: StudyId, actor: Actor = "") -> None:
    """Mark a complete patient's source data verified (data managers).

    Example: registry status verify DM-012
    """
    from registry.signoff import mark_verified

    with _workflow_step(f"Patient {study_id} marked verified"):
        mark_verified(_engine(ctx), study_id, actor=actor or getpass.getuser())


@status_app.command("sign")
def status_sign(
    ctx: typer.Context,
    study_id: StudyId,
    user: Annotated[str, typer.Option("--user", help="The investigator's account (user name).")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Sign a patient's data as an investigator of their site, re-entering the account's password (an electronic
    signature: signer, time and meaning are kept; any later change to the data voids it).

    Example: registry status sign DM-012 --user dr.li
    """
    from registry.signoff import MEANING, sign

    typer.echo(f'Signing as {user}: "{MEANING.format(study_id=study_id)}"')
    password = (
        sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("Password", hide_input=True)
    )  # fmt: skip
    with _workflow_step():
        made = sign(_engine(ctx), study_id, username=user, password=password)
    typer.echo(f"Patient {study_id} signed {made.signed_at:%Y-%m-%d %H:%M} UTC by {made.signer}")


@status_app.command("reopen")
def status_reopen(
    ctx: typer.Context,
    study_id: StudyId,
    reason: Annotated[str, typer.Option("--reason", "-m", help="Why, for the audit trail.")],
    actor: Actor = "",
) -> None:
    """Return a patient to in progress (more to enter or correct), voiding any signature.

    Example: registry status reopen DM-012 -m "Follow-up visit of March to enter"
    """
    from registry.signoff import reopen

    with _workflow_step(f"Patient {study_id} re-opened: in progress"):
        reopen(_engine(ctx), study_id, actor=actor or getpass.getuser(), reason=reason)
