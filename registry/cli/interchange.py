"""``registry redcap``: the registry as a REDCap project (records go in and out through import and export)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry.cli.main import _nothing_written, app

redcap_app = typer.Typer(
    help="REDCap: the data dictionary of a project that holds our forms (records: import --from redcap, "
    "export --format redcap).",
    no_args_is_help=True,
)
app.add_typer(redcap_app, name="redcap")


@redcap_app.command("dictionary")
def redcap_dictionary(
    out: Annotated[Path, typer.Argument(help="The CSV file to write (REDCap: Project Setup > Data Dictionary).")],
) -> None:
    """Write our forms as a REDCap data dictionary: one instrument per table (the records' tables repeating), field
    types, validation, plausible ranges, code lists with labels, help notes.

    Upload it as it is; then enter the missing-data codes it prints in Project Setup > Additional customizations.

    Example: registry redcap dictionary mda5_dictionary.csv
    """
    from registry.interchange.redcap import missing_codes_setting, repeating_instruments, write_dictionary
    from registry.workbook import WorkbookError

    try:
        fields = write_dictionary(out)
    except (OSError, WorkbookError) as error:
        _nothing_written(error)
    typer.echo(f"REDCap data dictionary of {fields} fields written to {out}")
    typer.echo(f"Repeating instruments (Project Setup > Repeating instruments): {', '.join(repeating_instruments())}")
    typer.echo("Missing Data Codes (Project Setup > Additional customizations):")
    typer.echo(missing_codes_setting())
