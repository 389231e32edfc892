"""A scan of files for direct identifiers: what must never leave the registry.

Three kinds of evidence are looked for in exports, reports, results and logs:

- the registry's own identifiers: every name and hospital number stored in
  ``patient_identifier``, matched case-insensitively whatever the spacing;
- patterns: phone numbers (international, local with a leading 0, North American,
  Chinese mobile), e-mail addresses, Chinese resident identity numbers (valid check digit);
- the exact birth date of any registered patient, written as ISO, d/m/Y, m/d/Y, Y/m/d,
  "4 March 1961", "March 4, 1961", 1961年3月4日, as a date cell or an Excel serial number.

One place may hold birth dates: the ``birth_date`` column of the patients sheet of the
full export (``registry export`` without ``--pseudonymise``), the restricted round-trip
format for registry staff. The scan counts them there and says so; a pseudonymised
export (its notice file beside it) has no such exception.

Every finding names file, location and kind, and shows the value masked: a scan report
is shared with the people the files are for, so it must not leak what it found.
"""

from __future__ import annotations

import bisect
import csv
import html
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import from_excel
from openpyxl.utils.exceptions import InvalidFileException

from registry.models import Patient, PatientIdentifier

#: The notice a pseudonymised export carries (inside its folder, or beside its workbook as ``NAME.PSEUDONYMISED.txt``).
PSEUDONYMISED_NOTICE = "PSEUDONYMISED.txt"
#: The header of the full export's patients sheet starts so; its birth_date column may hold birth dates.
_FULL_EXPORT_PATIENTS = ("study_id", "site", "sex", "birth_date")
#: ... and so does a REDCap records export's (registry export --format redcap), after REDCap's two repeat columns.
_REDCAP_RECORDS = ("study_id", "redcap_repeat_instrument", "redcap_repeat_instance", "site", "sex", "birth_date")
#: ... and the Value of an ODM export's birth date items (registry export --format odm).
_ODM_BIRTH_DATE = "IT.PATIENTS.BIRTH_DATE"

#: How a table names a cell to a person, from its row number (1 = header), column index and header.
CellName = Callable[[int, int, list[str]], str]

NAME, HOSPITAL_NUMBER = "name", "hospital number"
PHONE, EMAIL, RESIDENT_ID, BIRTH_DATE = "phone number", "e-mail address", "resident identity number", "birth date"


@dataclass(frozen=True)
class Identifiers:
    """What identifies the registry's patients: stored names, hospital numbers and birth dates."""

    names: frozenset[str] = frozenset()
    hospital_numbers: frozenset[str] = frozenset()
    birth_dates: frozenset[date] = frozenset()
    birth_date_of: Mapping[str, date] = field(default_factory=dict)  # study_id -> birth date


def registered_identifiers(connection: sa.Connection) -> Identifiers:
    """Every stored identifier, deleted patients' included (deleted records are still somebody's)."""
    stored = connection.execute(sa.select(PatientIdentifier.full_name, PatientIdentifier.hospital_number)).all()
    births = dict(connection.execute(sa.select(Patient.study_id, Patient.birth_date)).all())
    return Identifiers(
        names=frozenset(name for name, _ in stored if name and name.strip()),
        hospital_numbers=frozenset(number for _, number in stored if number and number.strip()),
        birth_dates=frozenset(births.values()),
        birth_date_of=births,
    )


@dataclass(frozen=True)
class Finding:
    file: Path
    location: str  # "page 2, line 14", "line 7", "patients!D5", "row 3, column name", "$.overall.groups[0]"
    kind: str
    masked: str

    def __str__(self) -> str:
        return f"{self.file}: {self.location}: {self.kind} {self.masked}"


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    scanned: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "file: why", files that could not be read at all
    allowed: dict[str, int] = field(default_factory=dict)  # "file column": birth dates in the full export
    unchecked: dict[str, int] = field(default_factory=dict)  # "file sheet": pseudonymised rows, scanned without the key


def mask(value: str) -> str:
    """The value with all but its first and last characters starred (all of it when short)."""
    value = " ".join(value.split())
    return "*" * len(value) if len(value) < 6 else value[0] + "*" * (len(value) - 2) + value[-1]


# --- patterns --------------------------------------------------------------------------------------------------------
_NOT_NUMBER_BEFORE = r"(?<![\w.+])"
_NOT_NUMBER_AFTER = r"(?!\w|\.\d)"
_PHONES = re.compile(
    _NOT_NUMBER_BEFORE
    + r"(?:"
    + r"\+\d{1,3}(?:[\s-]?\(?\d{1,4}\)?){2,5}"  # international: +86 138 1234 5678, +44 (20) 7946 0958
    + r"|(?:0086|86)?[\s-]?1[3-9]\d(?:[\s-]?\d{4}){2}"  # Chinese mobile: 13812345678, 138-1234-5678
    + r"|\(0\d{1,4}\)\s?\d{3,4}[\s-]?\d{3,4}|0\d{1,4}[\s-]\d{3,4}[\s-]?\d{3,4}"  # local: (025) 8327 1234, 020 7946 0958
    + r"|\(\d{3}\)\s?\d{3}-\d{4}|\d{3}([.-])\d{3}\1\d{4}"  # North American: (212) 555-0123, 212-555-0123
    + r")"
    + _NOT_NUMBER_AFTER
)
#: A UUID (an export's resource id, urn:uuid:...): its all-digit groups are no phone number (0771-5614-9321).
_UUID = re.compile(
    r"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f-])"
)
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_RESIDENT_ID = re.compile(r"(?<!\w)\d{6}\s?\d{8}\s?\d{3}[\dXx](?!\w)")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")  # fmt: skip
_MONTH = r"(?P<month>" + "|".join(f"{m[:3]}(?:{m[3:]})?" for m in _MONTHS) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_DATES = (
    re.compile(r"(?<!\d)(?P<year>\d{4})(?P<sep>[-/.])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<day>\d{1,2})(?P<sep>[-/.])(?P<month>\d{1,2})(?P=sep)(?P<year>\d{4})(?!\d)"),
    re.compile(rf"(?<![A-Za-z0-9]){_DAY}\s+{_MONTH},?\s+(?P<year>\d{{4}})(?!\d)", re.IGNORECASE),
    re.compile(rf"(?<![A-Za-z]){_MONTH}\s+{_DAY},?\s+(?P<year>\d{{4}})(?!\d)", re.IGNORECASE),
    re.compile(r"(?P<year>\d{4})\s*年\s*(?P<month>\d{1,2})\s*月\s*(?P<day>\d{1,2})\s*日"),
)
#: Letters and digits that may not touch a registered name or number (CJK names are matched anywhere).
_WORD = r"0-9A-Za-z\u00C0-\u024F"
_WORD_CHARACTER = re.compile(f"[{_WORD}]")
_WORD_START = re.compile(rf"(?<![{_WORD}])[{_WORD}]|[^\s{_WORD}]")
_SPACE, _NOT_SPACE = re.compile(r"\s"), re.compile(r"\S")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _valid_resident_id(text: str) -> bool:
    number = text.replace(" ", "").upper()
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17]


def _month(text: str) -> int:
    return (
        int(text) if text.isdigit() else _MONTHS.index(next(m for m in _MONTHS if m.startswith(text[:3].lower()))) + 1
    )


def _candidate_dates(match: re.Match[str]) -> Iterator[date]:
    """The dates a match can mean: d/m/Y is read both ways, since m/d/Y is written too."""
    year, month, day = int(match["year"]), _month(match["month"]), int(match["day"])
    pairs = {(month, day), (day, month)} if match.re is _DATES[1] else {(month, day)}
    for m, d in pairs:
        try:
            yield date(year, m, d)
        except ValueError:
            continue


class _Stored:
    """The registry's names and hospital numbers, found whatever the case and spacing.

    One regular expression of every identifier grows too slow with the registry (100,000
    patients: minutes per report), so text is looked up instead: at each place a word
    starts (anywhere, for CJK characters), the squeezed text of each length a stored
    identifier beginning with the same two characters has.
    """

    def __init__(self, identifiers: Identifiers) -> None:
        self.kinds: dict[str, str] = {}  # identifier without whitespace, lower case -> kind
        for kind, values in ((HOSPITAL_NUMBER, identifiers.hospital_numbers), (NAME, identifiers.names)):
            self.kinds.update({_squeezed(v): kind for v in values})
        self.lengths: dict[str, set[int]] = {}  # first two characters -> lengths of identifiers starting so
        for value in self.kinds:
            self.lengths.setdefault(value[:2], set()).add(len(value))

    def find(self, text: str) -> Iterator[tuple[str, str]]:
        if not self.kinds:
            return
        squeezed = _SPACE.sub("", text)
        spaces = [m.start() for m in _SPACE.finditer(text)] if len(squeezed) < len(text) else []
        for start in (m.start() for m in _WORD_START.finditer(text)):
            at = start - bisect.bisect_left(spaces, start)  # the same character in the squeezed text
            for length in self.lengths.get(squeezed[at : at + 2].lower(), ()):
                kind = self.kinds.get(squeezed[at : at + length].lower())
                if kind is None:
                    continue
                end = _end(text, start, length)
                if end is not None and not _WORD_CHARACTER.match(text, end):
                    yield kind, text[start:end]


def _end(text: str, start: int, characters: int) -> int | None:
    """Where ``characters`` non-whitespace characters from ``start`` end in ``text``."""
    for match in _NOT_SPACE.finditer(text, start):
        characters -= 1
        if characters == 0:
            return match.end()
    return None


class Scanner:
    """Finds direct identifiers in text, cells and files.

    In a pseudonymised export every date is shifted, so a cell may fall on some other patient's
    birth date by chance; what must never appear there is a row's own patient's true birth date.
    With the export's ``key`` each row is checked against exactly that date (the pseudonym names
    the patient); without it those rows' birth dates are counted as unchecked, never guessed at.
    """

    def __init__(self, identifiers: Identifiers, key: bytes | None = None) -> None:
        from registry.pseudonymise import pseudonym

        self.birth_dates = identifiers.birth_dates
        self.stored = _Stored(identifiers)
        self.own_birth_date = (
            None if key is None else {pseudonym(key, sid): day for sid, day in identifiers.birth_date_of.items()}
        )

    def in_text(self, text: str, birth_dates: frozenset[date] | None = None) -> Iterator[tuple[str, str]]:
        """(kind, value found) for every identifier in ``text`` (birth dates: ``birth_dates``, else every one)."""
        birth_dates = self.birth_dates if birth_dates is None else birth_dates
        yield from self.stored.find(text)
        uuids = [m.span() for m in _UUID.finditer(text)] if "-" in text else []
        for match in _PHONES.finditer(text):
            inside_uuid = any(start <= match.start() and match.end() <= end for start, end in uuids)
            if 8 <= len(_digits(match[0])) <= 15 and not inside_uuid:
                yield PHONE, match[0].strip()
        for match in _EMAIL.finditer(text):
            yield EMAIL, match[0]
        for match in _RESIDENT_ID.finditer(text):
            if _valid_resident_id(match[0]):
                yield RESIDENT_ID, match[0]
        for pattern in _DATES:
            for match in pattern.finditer(text):
                if any(day in birth_dates for day in _candidate_dates(match)):
                    yield BIRTH_DATE, match[0]

    def in_cell(self, value: Any, birth_dates: frozenset[date] | None = None) -> Iterator[tuple[str, str]]:
        """Identifiers in a spreadsheet cell: text, a date cell, or a number (an Excel date serial, a phone)."""
        birth_dates = self.birth_dates if birth_dates is None else birth_dates
        if isinstance(value, datetime | date):
            day = value.date() if isinstance(value, datetime) else value
            if day in birth_dates:
                yield BIRTH_DATE, day.isoformat()
            return
        if isinstance(value, int | float) and not isinstance(value, bool):
            if float(value).is_integer() and 0 < value < 2_958_466:
                day = from_excel(int(value)).date()
                if day in birth_dates:
                    yield BIRTH_DATE, str(int(value))
            value = str(int(value)) if float(value).is_integer() else str(value)
        if isinstance(value, str):
            yield from self.in_text(value, birth_dates)

    def scan(self, paths: Iterable[Path]) -> ScanResult:
        """Scan files and folders (recursively)."""
        result = ScanResult()
        for path in paths:
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                try:
                    self._scan_file(file, result)
                except (OSError, ValueError, KeyError, zipfile.BadZipFile, InvalidFileException) as error:
                    result.unreadable.append(f"{file}: {error}")
                else:
                    result.scanned.append(file)
        return result

    def _scan_file(self, file: Path, result: ScanResult) -> None:
        suffix = file.suffix.lower()
        if suffix == ".pdf":
            found = self._pdf(file)
        elif suffix == ".xlsx":
            found = self._xlsx(file, result)
        elif suffix == ".csv":
            found = self._csv(file, result)
        elif suffix == ".json":
            found = self._json(file)
        elif suffix in STATISTICAL_FILES:
            found = self._statistical(file, result)
        elif suffix == ".xml":
            found = self._xml(file, result)
        else:
            found = self._lines(_text(file), html_entities=suffix in (".html", ".htm", ".svg"))
        result.findings.extend(Finding(file, where, kind, mask(value)) for where, kind, value in found)

    def _lines(self, text: str, *, html_entities: bool = False, prefix: str = "") -> Iterator[tuple[str, str, str]]:
        for number, line in enumerate(text.splitlines(), start=1):
            for kind, value in self.in_text(html.unescape(line) if html_entities else line):
                yield f"{prefix}line {number}", kind, value

    def _xml(self, file: Path, result: ScanResult) -> Iterator[tuple[str, str, str]]:
        """An XML file's text and attribute values, by line; in an ODM export the Value of a birth date item is the
        full export's birth date, only counted (anywhere else, a birth date is found). A file that does not parse as
        XML is scanned line by line."""
        from lxml import etree

        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        try:
            root = etree.fromstring(_text(file).encode("utf-8"), parser)
        except etree.XMLSyntaxError:
            yield from self._lines(_text(file), html_entities=True)
            return
        for element in root.iter():
            named = isinstance(element.tag, str)  # else a comment or a processing instruction: its text is scanned
            birth_item = named and element.tag.endswith("}ItemData") and element.get("ItemOID") == _ODM_BIRTH_DATE
            texts = list(element.attrib.items()) if named else []
            texts += [("", text) for text in (element.text, element.tail) if text]
            for name, text in texts:
                for kind, value in self.in_text(text):
                    if kind == BIRTH_DATE and birth_item and name == "Value":
                        label = f"{file} ItemData {_ODM_BIRTH_DATE}"
                        result.allowed[label] = result.allowed.get(label, 0) + 1
                        continue
                    yield f"line {element.sourceline}", kind, value

    def _pdf(self, file: Path) -> Iterator[tuple[str, str, str]]:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            # NULs: pypdf reads a font without a usable ToUnicode map as two bytes per character
            pages = [page.extract_text().replace("\0", "") for page in PdfReader(file).pages]
        except PdfReadError as error:
            raise ValueError(f"not a readable PDF ({error})") from error
        for number, text in enumerate(pages, start=1):
            yield from self._lines(text, prefix=f"page {number}, ")

    def _json(self, file: Path) -> Iterator[tuple[str, str, str]]:
        def walk(node: Any, path: str) -> Iterator[tuple[str, str, str]]:
            if isinstance(node, dict):
                for key, value in node.items():
                    yield from ((path, kind, found) for kind, found in self.in_text(key))
                    yield from walk(value, f"{path}.{key}")
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    yield from walk(value, f"{path}[{index}]")
            elif isinstance(node, str) or (isinstance(node, int) and not isinstance(node, bool)):
                yield from ((path, kind, found) for kind, found in self.in_text(str(node)))

        yield from walk(json.loads(_text(file)), "$")

    def _table(
        self, file: Path, sheet: str, rows: list[list[Any]], result: ScanResult, where: CellName
    ) -> Iterator[tuple[str, str, str]]:
        """A sheet's cells, named by ``where``; birth dates in the full export's birth_date column are only counted,
        and a pseudonymised export's rows are checked against their own patient's birth date (see the class)."""
        header = [str(c) if c is not None else "" for c in (rows[0] if rows else [])]
        pseudonym_column = header.index("study_id") if _pseudonymised(file) and "study_id" in header else None
        full_export = (sheet == "patients" and tuple(header[:4]) == _FULL_EXPORT_PATIENTS) or tuple(
            header[:6]
        ) == _REDCAP_RECORDS
        exempt = header.index("birth_date") if full_export and pseudonym_column is None else None
        for r, row in enumerate(rows, start=1):
            births = None
            if pseudonym_column is not None and r > 1:
                name = row[pseudonym_column] if pseudonym_column < len(row) else None
                own = None if self.own_birth_date is None else self.own_birth_date.get(name)
                births = frozenset() if own is None else frozenset({own})
                if own is None:  # no key, or a pseudonym the key does not give: the row's birth date is unknown
                    label = f"{file} {sheet}"
                    result.unchecked[label] = result.unchecked.get(label, 0) + 1
            for c, value in enumerate(row):
                for kind, found in self.in_cell(value, births):
                    if kind == BIRTH_DATE and c == exempt and r > 1:
                        label = f"{file} {sheet} column birth_date"
                        result.allowed[label] = result.allowed.get(label, 0) + 1
                        continue
                    yield where(r, c, header), kind, found

    def _csv(self, file: Path, result: ScanResult) -> Iterator[tuple[str, str, str]]:
        rows = list(csv.reader(io.StringIO(_text(file), newline="")))

        def where(r: int, c: int, header: list[str]) -> str:
            name = header[c] if r > 1 and c < len(header) and header[c] else f"{c + 1}"
            return f"row {r}, column {name}"

        yield from self._table(file, file.stem, rows, result, where)

    def _xlsx(self, file: Path, result: ScanResult) -> Iterator[tuple[str, str, str]]:
        book = load_workbook(file, read_only=True, data_only=True)
        try:
            for ws in book.worksheets:
                rows = [list(row) for row in ws.iter_rows(values_only=True)]

                def where(r: int, c: int, header: list[str], title: str = ws.title) -> str:
                    return f"{title}!{get_column_letter(c + 1)}{r}"

                yield from self._table(file, ws.title, rows, result, where)
        finally:
            book.close()

    def _statistical(self, file: Path, result: ScanResult) -> Iterator[tuple[str, str, str]]:
        """A Stata, SPSS, SAS transport, R or Parquet file, read by the library that writes it: its cells as a CSV
        file's, then its variable, value and file labels. Named by the file's whole name, it is never taken for the
        full export's patients sheet, whose birth_date column alone may hold birth dates."""
        rows, labels = _statistical_table(file)

        def where(r: int, c: int, header: list[str]) -> str:
            name = header[c] if r > 1 and c < len(header) and header[c] else f"{c + 1}"
            return f"row {r}, column {name}"

        yield from self._table(file, file.name, rows, result, where)
        for place, text in labels:
            for kind, found in self.in_text(text):
                yield place, kind, found


def _squeezed(value: str) -> str:
    return "".join(value.split()).lower()


def _text(file: Path) -> str:
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start}), so it cannot be scanned") from error
    if "\0" in text:
        raise ValueError(f"a binary file (NUL at character {text.index(chr(0))}), so it cannot be scanned")
    return text


def _pseudonymised(file: Path) -> bool:
    """Whether ``file`` belongs to a pseudonymised export (its notice is in the folder, or beside the workbook)."""
    notice = file.with_name(f"{file.stem}.{PSEUDONYMISED_NOTICE}") if file.suffix == ".xlsx" else None
    return (file.parent / PSEUDONYMISED_NOTICE).exists() or (notice is not None and notice.exists())


#: The statistical files the scan reads (registry export --format stata|spss|sas|rds|parquet writes them), by suffix.
STATISTICAL_FILES = {".dta": "Stata", ".sav": "SPSS", ".zsav": "SPSS", ".xpt": "SAS transport", ".rds": "R",
                     ".parquet": "Parquet"}  # fmt: skip


def _statistical_table(file: Path) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    """A statistical file's header and rows (cells as :func:`_statistical_cell` gives them), and its labels as
    (where, text); a file its library cannot read is a ValueError (unreadable, never skipped)."""
    import pyarrow
    import pyreadr
    import pyreadstat

    suffix = file.suffix.lower()
    try:
        if suffix == ".parquet":
            return _parquet_table(file)
        if suffix == ".rds":
            frames = pyreadr.read_r(file)
            return _frame_rows(next(iter(frames.values()))) if frames else [], []
        read = {".dta": pyreadstat.read_dta, ".sav": pyreadstat.read_sav, ".zsav": pyreadstat.read_sav,
                ".xpt": pyreadstat.read_xport}[suffix]  # fmt: skip
        frame, meta = read(file)
    except (pyreadstat.ReadstatError, pyreadstat.PyreadstatError, pyreadr.LibrdataError, pyreadr.PyreadrError,
            pyarrow.ArrowException) as error:  # fmt: skip
        raise ValueError(f"not a readable {STATISTICAL_FILES[suffix]} file ({error})") from error
    labels = [("file label", meta.file_label or "")]
    labels += [(f"label of column {name}", label) for name, label in meta.column_names_to_labels.items() if label]
    labels += [(f"value labels of column {name}", label)
               for name, values in (getattr(meta, "variable_value_labels", None) or {}).items()
               for label in values.values()]  # fmt: skip
    return _frame_rows(frame), labels


def _frame_rows(frame: Any) -> list[list[Any]]:
    """A pandas frame as header and rows; row names (an R data frame's) as a first column."""
    import pandas as pd

    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    cells = frame.astype(object).where(frame.notna(), None)
    return [[str(name) for name in frame.columns], *([_statistical_cell(v) for v in row] for row in cells.values)]


def _parquet_table(file: Path) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    import pyarrow.parquet as parquet

    table = parquet.read_table(file)
    columns = [table.column(n).to_pylist() for n in range(table.num_columns)]
    rows = [list(table.column_names), *([_statistical_cell(c[r]) for c in columns] for r in range(table.num_rows))]
    labels = [("file metadata", value.decode(errors="replace")) for value in (table.schema.metadata or {}).values()]
    labels += [(f"metadata of column {f.name}", value.decode(errors="replace"))
               for f in table.schema for value in (f.metadata or {}).values()]  # fmt: skip
    return rows, labels


def _statistical_cell(value: Any) -> Any:
    """A statistical file's cell for :meth:`Scanner.in_cell`: dates as dates, numbers as their text (a number there
    is a measurement, never an Excel date serial, so it is read as a CSV file's would be), text as it is."""
    if value is None or isinstance(value, bool | date):  # a datetime is a date
        return value
    if hasattr(value, "item") and not isinstance(value, str):  # a NumPy scalar
        value = value.item()
    if isinstance(value, int | float):
        if value != value:  # NaN
            return None
        return str(int(value)) if float(value).is_integer() else repr(value)
    return str(value)
