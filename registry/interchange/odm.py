"""CDISC ODM 1.3.2: the study's metadata, its clinical data and the audit trail in one XML file, and back.

The path data takes between EDCs (OpenClinica, Medidata Rave, REDCap's ODM export) and to a sponsor. The file is
a Snapshot: one SubjectData per patient (SubjectKey: the study_id), one form per sheet and one ItemGroupData per
row, numbered by ItemGroupRepeatKey; the MetaDataVersion describes every item with its data type, length, unit,
plausible range (soft RangeChecks) and code list, with Aliases to the REDCap field and the SDTM domain. A
missing-data code is an ItemData IsNull="Yes" flagged with the code (CodeList CL.MISSING_CODE), an empty field an
ItemData IsNull="Yes" alone: every item of a row is written, so that a reader can tell an empty field from one the
file does not hold (which an import leaves as it is). The audit trail is
ClinicalData's AuditRecords, one per audited change of an exported patient's record: who, when, why, and (in
SourceID: ODM's AuditRecord has no element of its own for them) the values before and after, a birth date withheld
there.

Every file written, and every file read, is validated against the ODM 1.3.2 schema CDISC publishes (shipped in
the defineutils package); a file is parsed without entities, DTDs or network access.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import registry
from registry.atomic import replacing
from registry.codes import MissingCode
from registry.dictionary import type_name
from registry.ingest import ImportResult, Problem, import_sheets
from registry.interchange import plain_text
from registry.interchange.redcap import FIELDS as REDCAP_FIELDS
from registry.interchange.redcap import SINGLE
from registry.missing import Missing
from registry.models import AuditLog
from registry.sheets import SHEETS, SHEETS_BY_NAME, Sheet, SheetColumn, rows_by_patient, sheet_dictionary, snapshot
from registry.workbook import RawSheet, WorkbookError

NS = "http://www.cdisc.org/ns/odm/v1.3"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
STUDY_OID, METADATA_OID, EVENT_OID = "ST.MDA5-REGISTRY", "MDV.1", "SE.REGISTRY"
MISSING_CODE_LIST, YES_NO_LIST = "CL.MISSING_CODE", "CL.YES_NO"
REGISTRY_LOCATION = "LOC.REGISTRY"  # where a change of a patient no longer at a known site was made
#: The SDTM domain each sheet's rows belong to (ItemGroupDef Domain); hrct has none of its own.
SDTM_DOMAINS = {
    "patients": "DM",
    "antibody_tests": "LB",
    "labs": "LB",
    "pfts": "RE",
    "treatments": "CM",
    "adverse_events": "AE",
    "follow_up": "DS",
}
#: The schema CDISC publishes, as the defineutils package ships it (with the W3C schemas it imports).
SCHEMA = ("defineutils", "validate/schema/cdisc-odm-1.3.2/ODM1-3-2.xsd")


class OdmError(WorkbookError):
    """An ODM file the registry cannot read (or would not write) as ODM 1.3.2: nothing is imported or written."""


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


@cache
def odm_schema() -> Any:
    """The ODM 1.3.2 schema (xmlschema), loaded once: about a second."""
    import xmlschema

    return xmlschema.XMLSchema(str(files(SCHEMA[0]) / SCHEMA[1]))


def _token(text: str) -> str:
    return re.sub(r"[^A-Z0-9_-]", "_", text.upper())


def group_oid(sheet: Sheet) -> str:
    return f"IG.{_token(sheet.name)}"


def form_oid(sheet: Sheet) -> str:
    return f"F.{_token(sheet.name)}"


def item_oid(sheet: Sheet, column: SheetColumn) -> str:
    return f"IT.{_token(sheet.name)}.{_token(column.name)}"


def _code_list_oid(column: SheetColumn) -> str | None:
    kind = column.source.type
    if isinstance(kind, sa.Enum):
        return f"CL.{_token(kind.enum_class.__name__ if kind.enum_class else column.name)}"
    if isinstance(kind, sa.Boolean):
        return YES_NO_LIST
    return None


#: ODM's data types of our column types (a yes/no is an integer with CL.YES_NO; codes are text).
_DATA_TYPES = ((sa.Boolean, "integer"), (sa.Integer, "integer"), (sa.Float, "float"), (sa.Date, "date"))


def _data_type(column: SheetColumn) -> str:
    return type_name(column.source, _DATA_TYPES, "text")


def _unit_oid(unit: str) -> str:
    return f"MU.{_token(unit)}"


def _items(sheet: Sheet) -> list[SheetColumn]:
    """The sheet's columns an item group holds: every one (patients' study_id is the SubjectKey, and the records'
    is their subject's)."""
    return [c for c in sheet.columns if c.name != "study_id"]


# Writing --------------------------------------------------------------------------------------------------------


def _element(parent: Any, tag: str, attributes: dict[str, Any] | None = None, text: str | None = None) -> Any:
    from lxml import etree

    node = etree.SubElement(parent, _q(tag), {k: str(v) for k, v in (attributes or {}).items() if v is not None})
    if text is not None:
        node.text = text
    return node


def _translated(parent: Any, tag: str, text: str) -> None:
    _element(_element(parent, tag), "TranslatedText", {XML_LANG: "en"}, text)


def _metadata(study: Any) -> None:
    entries = {(e.table, e.column): e for e in sheet_dictionary()}
    redcap = {(f.form, f.column.name): f.name for f in REDCAP_FIELDS}
    units = sorted({e.unit for e in entries.values() if e.unit})
    basic = _element(study, "BasicDefinitions")
    for unit in units:
        _translated(_element(basic, "MeasurementUnit", {"OID": _unit_oid(unit), "Name": unit}), "Symbol", unit)
    version = _element(study, "MetaDataVersion", {"OID": METADATA_OID, "Name": f"mda5-registry {registry.__version__}"})
    protocol = _element(version, "Protocol")
    _element(protocol, "StudyEventRef", {"StudyEventOID": EVENT_OID, "OrderNumber": 1, "Mandatory": "Yes"})
    event = _element(version, "StudyEventDef", {"OID": EVENT_OID, "Name": "Registry", "Repeating": "No",
                                                "Type": "Common"})  # fmt: skip
    for number, sheet in enumerate(SHEETS, start=1):
        _element(event, "FormRef", {"FormOID": form_oid(sheet), "OrderNumber": number,
                                    "Mandatory": "Yes" if sheet.name == "patients" else "No"})  # fmt: skip
    for sheet in SHEETS:
        form = _element(version, "FormDef", {"OID": form_oid(sheet), "Name": sheet.name, "Repeating": "No"})
        _element(form, "ItemGroupRef", {"ItemGroupOID": group_oid(sheet), "Mandatory": "Yes"})
    for sheet in SHEETS:
        repeating = "No" if sheet.name in SINGLE else "Yes"
        domain = SDTM_DOMAINS.get(sheet.name)
        attributes = {"OID": group_oid(sheet), "Name": sheet.name, "Repeating": repeating, "Domain": domain}
        group = _element(version, "ItemGroupDef", attributes)
        for number, column in enumerate(_items(sheet), start=1):
            _element(group, "ItemRef", {"ItemOID": item_oid(sheet, column), "OrderNumber": number,
                                        "Mandatory": "Yes" if column.required else "No"})  # fmt: skip
        if sheet.name in SDTM_DOMAINS:
            _element(group, "Alias", {"Context": "SDTM", "Name": SDTM_DOMAINS[sheet.name]})
    code_lists: dict[str, SheetColumn] = {}
    for sheet in SHEETS:
        for column in _items(sheet):
            entry = entries[sheet.name, column.name]
            length = getattr(column.source.type, "length", None)
            item = _element(version, "ItemDef", {"OID": item_oid(sheet, column), "Name": column.name,
                                                 "DataType": _data_type(column), "Length": length})  # fmt: skip
            _translated(item, "Description", entry.description or entry.label)
            _translated(item, "Question", entry.label)
            if entry.unit:
                _element(item, "MeasurementUnitRef", {"MeasurementUnitOID": _unit_oid(entry.unit)})
            plausible = column.source.info.get("plausible")
            if plausible is not None and _data_type(column) in ("float", "integer"):
                for comparator, bound in (("GE", plausible.low), ("LE", plausible.high)):
                    check = _element(item, "RangeCheck", {"Comparator": comparator, "SoftHard": "Soft"})
                    _element(check, "CheckValue", text=f"{bound:g}")
            if (code_list := _code_list_oid(column)) is not None:
                _element(item, "CodeListRef", {"CodeListOID": code_list})
                code_lists.setdefault(code_list, column)
            _element(item, "Alias", {"Context": "REDCap", "Name": redcap[sheet.name, column.name]})
    for oid, column in code_lists.items():
        if oid == YES_NO_LIST:
            continue
        kind = column.source.type
        listed = _element(version, "CodeList", {"OID": oid, "Name": kind.enum_class.__name__, "DataType": "text"})
        for member in kind.enum_class:
            _translated(_element(listed, "CodeListItem", {"CodedValue": member.value}), "Decode", member.label)
    yes_no = _element(version, "CodeList", {"OID": YES_NO_LIST, "Name": "YesNo", "DataType": "integer"})
    for value, label in (("1", "Yes"), ("0", "No")):
        _translated(_element(yes_no, "CodeListItem", {"CodedValue": value}), "Decode", label)
    missing = _element(version, "CodeList", {"OID": MISSING_CODE_LIST, "Name": "MissingCode", "DataType": "text"})
    for code in MissingCode:
        _translated(_element(missing, "CodeListItem", {"CodedValue": code.value}), "Decode", code.label)


def _item_data(group: Any, oid: str, value: Any) -> None:
    """One item of a row: its value, a null flagged with its missing-data code, or a plain null (no value): every
    item of the group is written, so that a reader tells "no value" from "not in this file"."""
    if value is None:
        _element(group, "ItemData", {"ItemOID": oid, "IsNull": "Yes"})
        return
    if isinstance(value, Missing):
        item = _element(group, "ItemData", {"ItemOID": oid, "IsNull": "Yes"})
        flag = _element(_element(item, "Annotation", {"SeqNum": 1}), "Flag")
        _element(flag, "FlagValue", {"CodeListOID": MISSING_CODE_LIST}, value.code.value)
        return
    _element(group, "ItemData", {"ItemOID": oid, "Value": plain_text(value)})


def _stamp(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def _user_oid(actor: str) -> str:
    return f"USR.{_token(actor)}"


def odm_document(connection: sa.Connection, created: datetime | None = None) -> Any:
    """The registry as an ODM 1.3.2 Snapshot (an lxml element), its patients as deleted ones are left out."""
    from lxml import etree

    created = created or datetime.now(UTC)
    root = etree.Element(_q("ODM"), nsmap={None: NS}, attrib={
        "FileType": "Snapshot", "Granularity": "All", "FileOID": f"F.MDA5-REGISTRY.{created:%Y%m%dT%H%M%S}",
        "CreationDateTime": _stamp(created), "ODMVersion": "1.3.2", "Originator": "mda5-registry",
        "SourceSystem": "mda5-registry", "SourceSystemVersion": registry.__version__,
    })  # fmt: skip
    study = _element(root, "Study", {"OID": STUDY_OID})
    globals_ = _element(study, "GlobalVariables")
    _element(globals_, "StudyName", text="MDA5-ILD registry")
    _element(globals_, "StudyDescription", text="Anti-MDA5 dermatomyositis with interstitial lung disease")
    _element(globals_, "ProtocolName", text="mda5-registry")
    _metadata(study)

    rows = rows_by_patient(connection)
    subjects = list(rows)
    site_of = {study_id: rows[study_id]["patients"][0]["site"] for study_id in subjects}
    log = AuditLog.__table__.c
    clinical_tables = [sheet.table.name for sheet in SHEETS]  # never patient_identifier's, nor accounts'
    audit = connection.execute(
        sa.select(AuditLog.__table__)
        .where(log.study_id.in_(subjects) if subjects else sa.false(), log.table_name.in_(clinical_tables))
        .order_by(log.id)
    ).all()

    admin = _element(root, "AdminData", {"StudyOID": STUDY_OID})
    for actor in sorted({entry.actor for entry in audit}):
        _element(_element(admin, "User", {"OID": _user_oid(actor)}), "LoginName", text=actor)
    for code in [*sorted(set(site_of.values())), None]:
        oid, name = (f"LOC.{_token(code)}", code) if code else (REGISTRY_LOCATION, "registry")
        location = _element(admin, "Location", {"OID": oid, "Name": name, "LocationType": "Site" if code else "Other"})
        _element(location, "MetaDataVersionRef", {"StudyOID": STUDY_OID, "MetaDataVersionOID": METADATA_OID,
                                                  "EffectiveDate": created.date().isoformat()})  # fmt: skip

    clinical = _element(root, "ClinicalData", {"StudyOID": STUDY_OID, "MetaDataVersionOID": METADATA_OID})
    for study_id in subjects:
        subject = _element(clinical, "SubjectData", {"SubjectKey": study_id})
        _element(subject, "SiteRef", {"LocationOID": f"LOC.{_token(site_of[study_id])}"})
        event = _element(subject, "StudyEventData", {"StudyEventOID": EVENT_OID})
        for sheet in SHEETS:
            records = rows[study_id].get(sheet.name, [])
            if not records:
                continue
            form = _element(event, "FormData", {"FormOID": form_oid(sheet)})
            for number, values in enumerate(records, start=1):
                repeat = number if sheet.name not in SINGLE else None
                group = _element(
                    form, "ItemGroupData", {"ItemGroupOID": group_oid(sheet), "ItemGroupRepeatKey": repeat}
                )
                for column in _items(sheet):
                    _item_data(group, item_oid(sheet, column), values[column.name])
    if audit:
        records = _element(clinical, "AuditRecords")
        for entry in audit:
            site = site_of.get(entry.study_id)
            record = _element(records, "AuditRecord", {"ID": f"AR.{entry.id}", "EditPoint": "DBAudit"})
            _element(record, "UserRef", {"UserOID": _user_oid(entry.actor)})
            _element(record, "LocationRef", {"LocationOID": f"LOC.{_token(site)}" if site else REGISTRY_LOCATION})
            _element(record, "DateTimeStamp", text=_stamp(entry.changed_at))
            if entry.reason:
                _element(record, "ReasonForChange", text=entry.reason)
            change = {"old": _withheld(entry.old_values), "new": _withheld(entry.new_values)}
            _element(record, "SourceID", text=f"{entry.action} {entry.table_name} {entry.record_key} of "
                     f"{entry.study_id}: {json.dumps(change, sort_keys=True, default=str)}")  # fmt: skip
    return root


def _withheld(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Audited values as the file's audit trail gives them: a birth date only as the item itself (the privacy scan
    allows it there, and nowhere else)."""
    return None if values is None else {k: "[withheld]" if k == "birth_date" else v for k, v in values.items()}


def _refuse_invalid(tree: Any, name: str) -> None:
    errors = list(odm_schema().iter_errors(tree))
    if errors:
        first = errors[0]
        line = getattr(first.elem, "sourceline", None)
        where = f" line {line}" if line else ""
        raise OdmError(f"{name}{where}: not valid ODM 1.3.2 ({len(errors)} schema error(s); first: {first.reason} "
                       f"at {first.path})")  # fmt: skip


def write_odm(engine: sa.Engine, out: Path, created: datetime | None = None) -> dict[str, int]:
    """Write the registry as ODM 1.3.2 to ``out`` (validated first; whole or not at all); returns what it holds."""
    from lxml import etree

    with snapshot(engine) as connection:
        root = odm_document(connection, created)
    _refuse_invalid(root, out.name)
    with replacing(out) as temporary:
        temporary.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
    return {
        "subjects": len(root.findall(f"{_q('ClinicalData')}/{_q('SubjectData')}")),
        "item groups": len(root.findall(f".//{_q('ItemGroupData')}")),
        "audit records": len(root.findall(f".//{_q('AuditRecord')}")),
    }


# Reading --------------------------------------------------------------------------------------------------------


def _parse(path: Path) -> Any:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.parse(str(path), parser)
    except OSError:
        raise OdmError(f"{path}: no such file") from None
    except etree.XMLSyntaxError as error:
        raise OdmError(f"{path.name}: not XML ({error})") from None


def _names(tree: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The file's own metadata: ItemGroupOID -> group Name, ItemOID -> item Name (another EDC names OIDs its way)."""
    groups = {g.get("OID"): g.get("Name") for g in tree.iter(_q("ItemGroupDef"))}
    items = {i.get("OID"): i.get("Name") for i in tree.iter(_q("ItemDef"))}
    return groups, items


def _is_item(element: Any) -> bool:
    """ItemData, or one of ODM 1.3.2's typed ItemData elements (ItemDataString, ItemDataDate, ...)."""
    return isinstance(element.tag, str) and element.tag.startswith(_q("ItemData"))


def _cell(item: Any) -> str:
    """An item's value as a cell: its Value (a typed item's text), ``[code]`` for a flagged null, blank for a null."""
    if item.get("IsNull") == "Yes":
        flag = item.find(f"{_q('Annotation')}/{_q('Flag')}/{_q('FlagValue')}")
        return f"[{flag.text.strip()}]" if flag is not None and flag.text else ""
    return (item.get("Value") if item.tag == _q("ItemData") else item.text) or ""


def _sheets(tree: Any, name: str) -> tuple[list[RawSheet], list[Problem]]:
    """Our sheets, each with the items the file gives for it. An item a file leaves out of every row is left alone in
    the registry; one a row leaves out while others give it is refused (it would empty a value unasked)."""
    groups, items = _names(tree)
    problems: list[Problem] = []
    read: dict[str, list[tuple[int, dict[str, str]]]] = {sheet.name: [] for sheet in SHEETS}
    for subject in tree.iter(_q("SubjectData")):
        study_id = subject.get("SubjectKey")
        for group in subject.iter(_q("ItemGroupData")):
            sheet = SHEETS_BY_NAME.get(groups.get(group.get("ItemGroupOID"), ""))
            if sheet is None:
                message = "is not one of our item groups (the file's ItemGroupDef names none of our sheets)"
                problems.append(Problem(name, group.sourceline, "ItemGroupOID", group.get("ItemGroupOID"), message))
                continue
            known = {c.name for c in sheet.columns}
            cells = {"study_id": study_id}
            for item in filter(_is_item, group):
                column = items.get(item.get("ItemOID"))
                if column not in known or column == "study_id":
                    message = f"is not an item of {sheet.name} (the file's ItemDef names none of its columns)"
                    problems.append(Problem(name, item.sourceline, "ItemOID", item.get("ItemOID"), message))
                elif column in cells:
                    message = "is given twice in one item group: give each item once"
                    problems.append(Problem(name, item.sourceline, "ItemOID", item.get("ItemOID"), message))
                else:
                    cells[column] = _cell(item)
            read[sheet.name].append((group.sourceline, cells))
    sheets = []
    for sheet in SHEETS:
        given = {column for _, cells in read[sheet.name] for column in cells}
        header = [c.name for c in sheet.columns if c.name in given]
        for line, cells in read[sheet.name]:
            for column in header:
                if column not in cells:
                    message = (f"lacks the item {column} that other item groups of {sheet.name} give: give it "
                               '(IsNull="Yes" for no value), so that nothing is emptied unasked')  # fmt: skip
                    problems.append(Problem(name, line, column, None, message))
        if read[sheet.name]:
            rows = [(line, [cells.get(column) for column in header]) for line, cells in read[sheet.name]]
            sheets.append(RawSheet(sheet.name, sheet.name, header, rows))
    return sheets, problems


def _located(problem: Problem, name: str) -> Problem:
    """A problem of the import, named by the file and the line of the ItemGroupData it came from."""
    if problem.source not in SHEETS_BY_NAME:
        return problem
    line = f" line {problem.row}" if problem.row is not None else ""
    return replace(problem, source=f"{name}{line} ({problem.source})", row=None)


def read_odm(path: Path) -> tuple[list[RawSheet], list[Problem]]:
    """Our sheets from an ODM 1.3.2 file (validated against the schema first), and what in it is not ours."""
    tree = _parse(path)
    _refuse_invalid(tree, path.name)
    if tree.getroot().get("FileType") != "Snapshot":
        raise OdmError(f"{path.name}: FileType {tree.getroot().get('FileType')}: only Snapshot files are imported "
                       "(a Transactional file records changes, not the data as it stands)")  # fmt: skip
    return _sheets(tree, path.name)


def import_odm(engine: sa.Engine, path: Path, *, actor: str, reason: str | None = None, **options: Any) -> ImportResult:
    """Import an ODM file as a workbook is imported (``options``: dry_run, checks, strict)."""
    sheets, problems = read_odm(path)
    if problems:
        return ImportResult(problems)
    result = import_sheets(engine, sheets, actor=actor, reason=reason or f"import of {path.name} (ODM)", **options)
    result.problems = [_located(p, path.name) for p in result.problems]
    return result
