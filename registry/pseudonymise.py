"""The pseudonymised site-level export: the registry as collaborators may receive it.

The full export (registry.export) is the round-trip format for registry staff and keeps
study_ids and birth dates. This one, for sharing, replaces and shifts them with a
secret key the registry keeps:

- each study_id becomes ``PS-`` and 16 hex digits of HMAC-SHA256(key, study_id): the same
  key gives the same pseudonym, so successive exports link up; without the key they
  cannot be traced back;
- every date of a patient, the birth date included, moves by one whole number of days,
  derived from the key, in +/-MAX_SHIFT_DAYS and never 0: intervals and ages stay exact,
  and no patient's true birth date is in their rows (`registry privacy scan --key-file`
  checks exactly that; a shifted date may fall on another person's birth date by chance,
  which identifies nobody);
- free-text columns, which could carry names or numbers, are left out (TEXT_KEPT lists
  the only text kept and why); codes, numbers and yes/no answers are kept;
- optionally only one site's patients;
- a notice (PSEUDONYMISED.txt) says what was done; the key is never written.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

import registry
from registry.export import notice_path, workbook_sheets, write
from registry.models import Site
from registry.privacy import PSEUDONYMISED_NOTICE
from registry.sheets import SHEETS_BY_NAME
from registry.workbook import SheetData

MIN_KEY_BYTES = 32
#: Every data sheet names its patient in the first column (registry.sheets: study_id leads each table).
_STUDY_ID = 0
MAX_SHIFT_DAYS = 180
#: Text columns kept although they are not codes, and why; every other text column is left out.
TEXT_KEPT = {("labs", "unit"): "the unit of a laboratory value, which the checks compare with the canonical unit"}


class PseudonymiseError(ValueError):
    """The key is missing or too short, or the site is unknown: nothing was written."""


def read_key(path: Path) -> bytes:
    """The secret key in ``path`` (surrounding whitespace ignored); at least MIN_KEY_BYTES bytes."""
    make = f"make one with: openssl rand -hex 32 > {path}"
    if not path.is_file():
        raise PseudonymiseError(f"key file {path}: no such file ({make}, and keep it secret)")
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymiseError(f"key file {path}: {len(key)} bytes; a key needs at least {MIN_KEY_BYTES} ({make})")
    return key


def _digest(key: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()


def pseudonym(key: bytes, study_id: str) -> str:
    return "PS-" + _digest(key, "study_id", study_id).hex()[:16].upper()


def shift_days(key: bytes, study_id: str) -> int:
    """A non-zero number of days in +/-MAX_SHIFT_DAYS, the same for the same key and study_id."""
    drawn = int.from_bytes(_digest(key, "date shift 0", study_id)[:8]) % (2 * MAX_SHIFT_DAYS)
    return drawn - MAX_SHIFT_DAYS if drawn < MAX_SHIFT_DAYS else drawn - MAX_SHIFT_DAYS + 1


def _date_columns(sheet: SheetData) -> list[int]:
    if sheet.name not in SHEETS_BY_NAME:
        return []
    table = SHEETS_BY_NAME[sheet.name]
    return [i for i, name in enumerate(sheet.header) if isinstance(table.column(name).source.type, sa.Date)]


def _dropped_columns(sheet: SheetData) -> list[str]:
    """Free-text columns: text that is neither a code, nor a reference (study_id, site), nor kept on purpose."""
    if sheet.name not in SHEETS_BY_NAME:
        return []
    table = SHEETS_BY_NAME[sheet.name]
    return [
        c.name
        for c in table.columns
        if isinstance(c.source.type, sa.String)
        and not isinstance(c.source.type, sa.Enum)
        and not c.is_reference
        and c.name != "study_id"
        and (sheet.name, c.name) not in TEXT_KEPT
    ]


@dataclass(frozen=True)
class PseudonymisedExport:
    patients: int
    rows: dict[str, int]
    dropped: list[str]  # "sheet.column"
    notice: Path


def pseudonymised_export(engine: sa.Engine, path: Path, key: bytes, site: str | None = None) -> PseudonymisedExport:
    """Write the pseudonymised export of ``site`` (every site when None) to ``path`` and its notice."""
    with engine.connect() as connection:
        sites = list(connection.execute(sa.select(Site.code).order_by(Site.code)).scalars())
        if site is not None and site not in sites:
            raise PseudonymiseError(f"site {site} is not registered (registered: {', '.join(sites) or 'none'})")
        sheets = workbook_sheets(connection)
    patients = sheets[0]
    site_column = patients.header.index("site")
    kept = {row[0] for row in patients.rows if site is None or row[site_column] == site}
    offsets = {study_id: shift_days(key, study_id) for study_id in kept}
    names = {study_id: pseudonym(key, study_id) for study_id in kept}
    if len(set(names.values())) != len(names):  # 64-bit pseudonyms: not expected in any registry's lifetime
        raise PseudonymiseError("two study_ids got the same pseudonym; nothing was written")

    written, dropped = [], []
    for sheet in sheets:
        drop = _dropped_columns(sheet)
        dropped += [f"{sheet.name}.{name}" for name in drop]
        keep = [i for i, name in enumerate(sheet.header) if name not in drop]
        if sheet.name not in SHEETS_BY_NAME:  # the dictionary: without the entries of dropped columns
            rows = [row for row in sheet.rows if f"{row[0]}.{row[1]}" not in dropped]
            written.append(replace(sheet, rows=rows))
            continue
        columns = set(_date_columns(sheet))
        rows = []
        for row in sheet.rows:
            study_id = row[_STUDY_ID]
            if study_id not in kept:
                continue
            shift = timedelta(days=offsets[study_id])
            moved = [names[study_id] if i == _STUDY_ID else (_shifted(sheet, i, row, shift) if i in columns else v)
                     for i, v in enumerate(row)]  # fmt: skip
            rows.append([moved[i] for i in keep])
        rows.sort(key=lambda r: tuple("" if v is None else str(v) for v in r))
        header = [sheet.header[i] for i in keep]
        written.append(replace(sheet, header=header, rows=rows, choices=_subset(sheet.choices, header),
                               notes=_subset(sheet.notes, header)))  # fmt: skip
    write(path, written, (PSEUDONYMISED_NOTICE, notice_text(site, len(kept), dropped)))
    return PseudonymisedExport(len(kept), {s.name: len(s.rows) for s in written if s.name in SHEETS_BY_NAME},
                               dropped, notice_path(path, PSEUDONYMISED_NOTICE))  # fmt: skip


def _shifted(sheet: SheetData, column: int, row: list, shift: timedelta) -> date | str | None:
    """The row's date in ``column`` moved by ``shift`` (a missing-data code, ``[unknown]``, as it is); refused where
    the calendar ends (a year-1 or year-9999 date, stored before entry refused them), rather than shared unshifted."""
    value = row[column]
    try:
        return value if value is None or isinstance(value, str) else value + shift
    except OverflowError:
        raise PseudonymiseError(
            f"{sheet.name}: {sheet.header[column]} {value} of {row[_STUDY_ID]} cannot be shifted by {shift.days} days "
            "(the calendar ends at years 1 and 9999): correct the date first"
        ) from None


def _subset(mapping: dict, header: list[str]) -> dict:
    return {name: value for name, value in mapping.items() if name in header}


def notice_text(site: str | None, patients: int, dropped: list[str]) -> str:
    """What a collaborator needs to know about the files: method, shift range, columns left out. Never the key."""
    kept = "; ".join(f"{sheet}.{column}: {why}" for (sheet, column), why in TEXT_KEPT.items())
    return "\n".join(
        [
            "PSEUDONYMISED EXPORT of an MDA5-ILD registry: no names, hospital numbers, study_ids or true dates.",
            "",
            f"Made by `registry export --pseudonymise` (mda5-registry {registry.__version__}).",
            f"Site: {site or 'every site'}; patients: {patients}.",
            "",
            "Study ids: each replaced by PS- and 16 hex digits of HMAC-SHA256(secret key, study_id). The same key",
            "always gives the same pseudonym, so later exports link up; without the key they cannot be reversed.",
            "Dates: every date of a patient, the birth date included, is shifted by one whole number of days,",
            f"between -{MAX_SHIFT_DAYS} and +{MAX_SHIFT_DAYS} and never 0, drawn for each patient from the key.",
            "Intervals between a patient's dates, and ages, are exact; calendar dates are not, and no row holds",
            "its patient's true birth date. Calendar-based selections (enrolment window, data cut-off)",
            f"must be widened by {MAX_SHIFT_DAYS} days on each side.",
            f"Columns left out (free text that could carry identifiers): {', '.join(dropped) or 'none'}.",
            f"Text kept: codes, and {kept}.",
            "In CSV files, a text cell a spreadsheet would run as a formula (starting with = + - @, a tab or a",
            "carriage return) is written with a ' before it; so is one starting with ' and then such a character.",
            "To read the true text, take one ' off each cell that starts with one or more ' and then one of them.",
            "The key is not part of this export; the registry keeps it.",
            "",
        ]
    )
