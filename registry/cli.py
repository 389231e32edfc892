"""The ``registry`` command: one thin layer over the library modules."""

from __future__ import annotations

import shutil
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

import registry
from registry import db
from registry.audit import audited_session
from registry.dictionary import data_dictionary, to_csv, to_markdown
from registry.models import TABLES, Site

app = typer.Typer(
    help="Clinical registry for anti-MDA5 dermatomyositis with interstitial lung disease.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Create and migrate the database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
        counts = {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (model.__table__ for model in TABLES)
        }
    width = max(map(len, counts))
    typer.echo(f"\n{'table'.ljust(width)}  rows")
    for name, count in counts.items():
        typer.echo(f"{name.ljust(width)}  {count:>4}")


@app.command()
def summary(ctx: typer.Context) -> None:
    """Print the database, its schema revision and the number of rows in each table.

    Example: registry --database sqlite:///registry.db summary
    """
    _print_summary(_engine(ctx), ctx.obj)


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to build the demo (replaced if it exists).")] = Path(
        "demo"
    ),
) -> None:
    """Build the demo registry from scratch on SQLite and summarise it.

    Example: registry demo --dir demo
    """
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    url = f"sqlite:///{directory / 'registry.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    with audited_session(engine, actor="registry demo", reason="demo registry") as session:
        session.add(Site(code="DEMO", name="Demo centre (synthetic data)"))
        session.commit()
    _print_summary(engine, url)
