"""CDISC ODM 1.3.2: valid against CDISC's schema, metadata from the dictionary, audit trail, round trip."""

import filecmp
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site
from lxml import etree
from test_ingest import snapshot
from typer.testing import CliRunner

from registry.audit import audited_session
from registry.cli import app
from registry.export import export
from registry.ingest import import_path
from registry.interchange import odm
from registry.models import AuditLog, Patient, PatientIdentifier
from registry.privacy import Scanner, registered_identifiers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE, DEMO = ROOT / "fixtures" / "example", ROOT / "fixtures" / "demo"
NS = {"odm": odm.NS}
CREATED = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def example(migrated):
    add_demo_site(migrated)
    assert import_path(migrated, EXAMPLE, actor="coordinator").written
    return migrated


def _written(engine, path: Path) -> etree._ElementTree:
    odm.write_odm(engine, path, CREATED)
    return etree.parse(str(path))


def test_the_export_is_valid_odm_1_3_2(example, tmp_path):
    """Validated by xmlschema against the schema CDISC publishes (not by our own writer's say-so)."""
    path = tmp_path / "registry.xml"
    counts = odm.write_odm(example, path, CREATED)
    assert counts == {"subjects": 4, "item groups": 4 + 8 + 20 + 4 + 4 + 11 + 4 + 4, "audit records": 59}
    schema = odm.odm_schema()
    assert schema.is_valid(str(path))
    assert schema.url.endswith("cdisc-odm-1.3.2/ODM1-3-2.xsd") and schema.target_namespace == odm.NS
    root = etree.parse(str(path)).getroot()
    assert (root.get("ODMVersion"), root.get("FileType"), root.get("CreationDateTime")) == (
        "1.3.2",
        "Snapshot",
        "2026-12-01T09:30:00+00:00",
    )


def test_metadata_describes_every_item_from_the_dictionary(example, tmp_path):
    root = _written(example, tmp_path / "registry.xml").getroot()
    item = root.find(".//odm:ItemDef[@OID='IT.LABS.VALUE']", NS)
    assert (item.get("Name"), item.get("DataType")) == ("value", "float")
    alias = item.find("odm:Alias", NS)
    assert (alias.get("Context"), alias.get("Name")) == ("REDCap", "lab_value")
    fvc = root.find(".//odm:ItemDef[@OID='IT.PFTS.FVC_PCT_PRED']", NS)
    checks = [(c.get("Comparator"), c.get("SoftHard"), c.find("odm:CheckValue", NS).text)
              for c in fvc.findall("odm:RangeCheck", NS)]  # fmt: skip
    assert checks == [("GE", "Soft", "10"), ("LE", "Soft", "150")]
    assert fvc.find("odm:MeasurementUnitRef", NS).get("MeasurementUnitOID") == "MU.__PREDICTED"
    sex = root.find(".//odm:ItemDef[@OID='IT.PATIENTS.SEX']", NS)
    code_list = sex.find("odm:CodeListRef", NS).get("CodeListOID")
    decoded = {i.get("CodedValue"): i.find("odm:Decode/odm:TranslatedText", NS).text
               for i in root.find(f".//odm:CodeList[@OID='{code_list}']", NS)}  # fmt: skip
    assert decoded == {"female": "Female", "male": "Male"}
    labs = root.find(".//odm:ItemGroupDef[@OID='IG.LABS']", NS)
    assert (labs.get("Repeating"), labs.get("Domain")) == ("Yes", "LB")
    refs = [(r.get("ItemOID"), r.get("Mandatory")) for r in labs.findall("odm:ItemRef", NS)]
    assert refs == [("IT.LABS.ANALYTE", "Yes"), ("IT.LABS.SAMPLE_DATE", "Yes"), ("IT.LABS.VALUE", "Yes"),
                    ("IT.LABS.UNIT", "Yes")]  # fmt: skip
    rpild = root.find(".//odm:ItemDef[@OID='IT.PATIENTS.RPILD']", NS)
    assert (rpild.get("DataType"), rpild.find("odm:CodeListRef", NS).get("CodeListOID")) == ("integer", "CL.YES_NO")


def test_clinical_data_holds_each_row_as_a_repeating_item_group(example, tmp_path):
    root = _written(example, tmp_path / "registry.xml").getroot()
    subjects = root.findall(".//odm:SubjectData", NS)
    assert [s.get("SubjectKey") for s in subjects] == ["EX-001", "EX-002", "EX-003", "EX-004"]
    first = subjects[0]
    assert first.find("odm:SiteRef", NS).get("LocationOID") == "LOC.DEMO"
    labs = first.findall(".//odm:FormData[@FormOID='F.LABS']/odm:ItemGroupData", NS)
    assert [g.get("ItemGroupRepeatKey") for g in labs] == [str(i) for i in range(1, len(labs) + 1)]
    values = {i.get("ItemOID"): i.get("Value") for i in labs[0]}
    with example.connect() as connection:
        stored = connection.execute(sa.text(
            "SELECT analyte, sample_date, value, unit FROM lab_result JOIN patient ON patient.id = patient_id "
            "WHERE study_id = 'EX-001' ORDER BY analyte, sample_date LIMIT 1"
        )).one()  # fmt: skip
    assert values == {"IT.LABS.ANALYTE": stored.analyte, "IT.LABS.SAMPLE_DATE": str(stored.sample_date)[:10],
                      "IT.LABS.VALUE": f"{stored.value:g}", "IT.LABS.UNIT": stored.unit}  # fmt: skip


def test_round_trip_through_odm_gives_the_same_registry(migrated, second_registry, tmp_path):
    add_demo_site(migrated)
    assert import_path(migrated, DEMO, actor="coordinator").written
    path = tmp_path / "registry.xml"
    odm.write_odm(migrated, path, CREATED)
    result = odm.import_odm(second_registry, path, actor="coordinator")
    assert result.problems == [] and result.written
    assert sum(c.inserted for c in result.counts.values()) == 61 + 122 + 732 + 61 + 61 + 243 + 45 + 61
    export(migrated, tmp_path / "first")
    export(second_registry, tmp_path / "again")
    names = sorted(p.name for p in (tmp_path / "first").iterdir())
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "first", tmp_path / "again", names, shallow=False)
    assert (mismatch, errors) == ([], [])
    with second_registry.connect() as connection:
        reasons = set(connection.execute(sa.select(AuditLog.reason).where(AuditLog.study_id.is_not(None)).distinct()))
    assert reasons == {("import of registry.xml (ODM)",)}


def test_missing_data_codes_are_null_items_flagged_with_the_code(example, second_registry, tmp_path):
    with audited_session(example, actor="dm") as session:
        patient = session.exec(sa.select(Patient).where(Patient.study_id == "EX-001")).scalars().one()
        patient.smoking, patient.missing_codes = None, json.dumps({"smoking": "not_asked"})
        session.commit()
    root = _written(example, tmp_path / "registry.xml").getroot()
    item = root.find(".//odm:SubjectData[@SubjectKey='EX-001']//odm:ItemData[@ItemOID='IT.PATIENTS.SMOKING']", NS)
    assert (item.get("IsNull"), item.get("Value")) == ("Yes", None)
    flag = item.find("odm:Annotation/odm:Flag/odm:FlagValue", NS)
    assert (flag.get("CodeListOID"), flag.text) == ("CL.MISSING_CODE", "not_asked")
    assert odm.import_odm(second_registry, tmp_path / "registry.xml", actor="c").written
    export(example, tmp_path / "first")
    export(second_registry, tmp_path / "again")
    assert (tmp_path / "first" / "patients.csv").read_text() == (tmp_path / "again" / "patients.csv").read_text()
    assert "[not_asked]" in (tmp_path / "again" / "patients.csv").read_text()


def test_the_audit_trail_travels_as_audit_records(example, tmp_path):
    with audited_session(example, actor="datamanager", reason="source document verified") as session:
        patient = session.exec(sa.select(Patient).where(Patient.study_id == "EX-002")).scalars().one()
        patient.smoking = "current"
        session.add(PatientIdentifier(patient_id=patient.id, hospital_number="H-7781234", full_name="Imaginary Person"))
        session.commit()
    path = tmp_path / "registry.xml"
    root = _written(example, path).getroot()
    records = root.findall("odm:ClinicalData/odm:AuditRecords/odm:AuditRecord", NS)
    with example.connect() as connection:
        clinical = connection.execute(
            sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.study_id.is_not(None),
                                                                  AuditLog.table_name != "patient_identifier")
        ).scalar_one()  # fmt: skip
    assert len(records) == clinical == 60
    last = records[-1]
    assert last.find("odm:UserRef", NS).get("UserOID") == "USR.DATAMANAGER"
    assert last.find("odm:LocationRef", NS).get("LocationOID") == "LOC.DEMO"
    assert last.find("odm:ReasonForChange", NS).text == "source document verified"
    assert re.fullmatch(r"update patient \d+ of EX-002: .*", last.find("odm:SourceID", NS).text)
    assert json.loads(last.find("odm:SourceID", NS).text.split(": ", 1)[1])["new"] == {"smoking": "current"}
    users = [u.find("odm:LoginName", NS).text for u in root.findall("odm:AdminData/odm:User", NS)]
    assert users == ["coordinator", "datamanager"]
    text = path.read_text(encoding="utf-8")
    assert "H-7781234" not in text and "Imaginary Person" not in text  # the identifier table's audit stays home
    first_insert = json.loads(records[0].find("odm:SourceID", NS).text.split(": ", 1)[1])
    assert first_insert["new"]["birth_date"] == "[withheld]"
    with example.connect() as connection:
        scan = Scanner(registered_identifiers(connection)).scan([path])
    assert scan.findings == [] and scan.allowed == {f"{path} ItemData IT.PATIENTS.BIRTH_DATE": 4}


def test_a_birth_date_elsewhere_in_an_odm_file_is_found(example, tmp_path):
    path = tmp_path / "registry.xml"
    _written(example, path)
    with example.connect() as connection:
        birth = connection.execute(sa.select(Patient.birth_date).where(Patient.study_id == "EX-001")).scalar_one()
    text = path.read_text(encoding="utf-8").replace("<ProtocolName>mda5-registry", f"<ProtocolName>born {birth}")
    path.write_text(text, encoding="utf-8")
    with example.connect() as connection:
        scan = Scanner(registered_identifiers(connection)).scan([path])
    assert [f.kind for f in scan.findings] == ["birth date"]


def test_another_edcs_oids_are_read_through_its_own_metadata(example, second_registry, tmp_path):
    """OpenClinica and others name OIDs their way; the file's ItemGroupDef and ItemDef names say what they are."""
    path = tmp_path / "registry.xml"
    text = _written(example, path).getroot()
    xml = etree.tostring(text, encoding="unicode")
    xml = xml.replace("IG.LABS", "IG_LB_0001").replace("IT.LABS.VALUE", "I_LB_VAL")
    (tmp_path / "theirs.xml").write_text(xml, encoding="utf-8")
    result = odm.import_odm(second_registry, tmp_path / "theirs.xml", actor="c")
    assert result.problems == [] and result.counts["labs"].inserted == 20


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda x: x.replace('FileType="Snapshot"', 'FileType="Transactional"'),
            "bad.xml: FileType Transactional: "
            "only Snapshot files are imported (a Transactional file records changes, not the data as it stands)",
        ),
        (lambda x: x[: x.index("<ClinicalData")], None),  # truncated: not XML
        (lambda x: x.replace(' ODMVersion="1.3.2"', ' ODMVersion="9.9"'), None),  # not valid against the schema
    ],
)
def test_a_file_that_is_not_odm_1_3_2_is_refused_whole(example, tmp_path, change, message):
    path = tmp_path / "registry.xml"
    _written(example, path)
    bad = tmp_path / "bad.xml"
    bad.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    before = snapshot(example)
    with pytest.raises(odm.OdmError) as refused:
        odm.import_odm(example, bad, actor="c")
    if message is not None:
        assert str(refused.value) == message
    else:
        assert str(refused.value).startswith(("bad.xml: not XML", "bad.xml line 2: not valid ODM 1.3.2"))
    assert snapshot(example) == before


def test_entities_are_never_expanded(example, tmp_path):
    """An ODM file is data from elsewhere: no DTD, no external entity, no network."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET", encoding="utf-8")
    path = tmp_path / "registry.xml"
    _written(example, path)
    text = path.read_text(encoding="utf-8")
    text = text.replace("<?xml version='1.0' encoding='UTF-8'?>",
                        f'<?xml version="1.0"?><!DOCTYPE ODM [<!ENTITY x SYSTEM "file://{secret}">]>')  # fmt: skip
    text = text.replace("<StudyName>MDA5-ILD registry", "<StudyName>&x;")
    path.write_text(text, encoding="utf-8")
    try:
        sheets, _ = odm.read_odm(path)
    except odm.OdmError as refused:
        assert "TOP-SECRET" not in str(refused)
    else:
        assert all("TOP-SECRET" not in str(cell) for s in sheets for _, row in s.rows for cell in row)


def test_bad_values_are_named_by_file_line_and_item_and_nothing_is_written(example, tmp_path):
    path = tmp_path / "registry.xml"
    _written(example, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines) if '<ItemData ItemOID="IT.LABS.VALUE"' in line)
    lines[number] = re.sub(r'Value="[^"]*"', 'Value="12,5"', lines[number])
    group = max(i for i in range(number) if "<ItemGroupData" in lines[i]) + 1
    path.write_text("\n".join(lines), encoding="utf-8")
    before = snapshot(example)
    result = odm.import_odm(example, path, actor="c")
    assert [str(p) for p in result.errors] == [
        f'registry.xml line {group} (labs), column value: "12,5" is not a number (use a point for decimals and no '
        "thousands separators)"
    ]
    assert not result.written and snapshot(example) == before


def test_commands_export_and_import_odm(example, second_registry, tmp_path):
    runner = CliRunner()
    out = tmp_path / "registry.odm.xml"
    url = example.url.render_as_string(hide_password=False)
    done = runner.invoke(app, ["--database", url, "export", "--format", "odm", str(out)])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"Exported ODM 1.3.2 to {out}: subjects 4, item groups 59, audit records 59"
    second = second_registry.url.render_as_string(hide_password=False)
    dry = runner.invoke(app, ["--database", second, "import", str(out), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[-1] == "Dry run: the ODM file is valid; nothing was written."
    done = runner.invoke(app, ["--database", second, "import", str(out)])
    assert (done.exit_code, done.output.splitlines()[-1]) == (0, "Imported registry.odm.xml.")


def _without(path: Path, pattern: str, count: int = 1) -> str:
    """The ODM file with the first ``count`` lines matching ``pattern`` taken out."""
    lines, out = path.read_text(encoding="utf-8").splitlines(), []
    for line in lines:
        if count and re.search(pattern, line):
            count -= 1
            continue
        out.append(line)
    return "\n".join(out)


def test_an_item_left_out_of_every_row_is_left_alone_and_out_of_one_row_refused(example, tmp_path):
    """Another EDC exports the items it holds: absence is not a blank. A row lacking an item others give would
    empty a value unasked, so it is refused; ``IsNull="Yes"`` says "no value" explicitly."""
    path = tmp_path / "registry.xml"
    _written(example, path)
    before = snapshot(example)
    every = tmp_path / "every.xml"
    every.write_text(_without(path, r'<ItemData ItemOID="IT.PATIENTS.SMOKING"', count=4), encoding="utf-8")
    result = odm.import_odm(example, every, actor="c")
    assert result.problems == [] and result.counts["patients"].updated == 0
    assert snapshot(example) == before
    one = tmp_path / "one.xml"
    one.write_text(_without(path, r'<ItemData ItemOID="IT.PATIENTS.SMOKING"', count=1), encoding="utf-8")
    refused = odm.import_odm(example, one, actor="c")
    assert len(refused.problems) == 1 and str(refused.problems[0]).endswith(
        'column smoking: lacks the item smoking that other item groups of patients give: give it (IsNull="Yes" for no '
        "value), so that nothing is emptied unasked"
    )
    assert snapshot(example) == before
    assert 'IsNull="Yes"/>' in path.read_text(encoding="utf-8")  # the export says "no value" for every empty field


def test_typed_items_are_read_and_a_repeated_item_refused(example, second_registry, tmp_path):
    path = tmp_path / "registry.xml"
    _written(example, path)
    text = path.read_text(encoding="utf-8")
    typed = re.sub(
        r'<ItemData ItemOID="([^"]+)" Value="([^"]*)"/>', r'<ItemDataString ItemOID="\1">\2</ItemDataString>', text
    )  # ODM's typed items: a group holds ItemData or typed items, never both
    typed = re.sub(r'<ItemData ItemOID="([^"]+)" IsNull="Yes"/>', r'<ItemDataString ItemOID="\1"/>', typed)
    assert typed != text
    (tmp_path / "typed.xml").write_text(typed, encoding="utf-8")
    result = odm.import_odm(second_registry, tmp_path / "typed.xml", actor="c")
    assert result.problems == [] and result.written
    export(example, tmp_path / "first")
    export(second_registry, tmp_path / "again")
    assert (tmp_path / "first" / "labs.csv").read_text() == (tmp_path / "again" / "labs.csv").read_text()
    twice = re.sub(r'(<ItemData ItemOID="IT\.LABS\.UNIT" Value="[^"]*"/>)', r"\1\1", text, count=1)
    (tmp_path / "twice.xml").write_text(twice, encoding="utf-8")
    refused = odm.import_odm(example, tmp_path / "twice.xml", actor="c")
    assert [p.message for p in refused.problems] == ["is given twice in one item group: give each item once"]


def test_the_scan_reads_the_xml_not_its_lines(example, tmp_path):
    """A birth date beside a birth date item, on one line, is found: only the item's own Value is the full export's."""
    path = tmp_path / "registry.xml"
    _written(example, path)
    with example.connect() as connection:
        birth = connection.execute(sa.select(Patient.birth_date).where(Patient.study_id == "EX-001")).scalar_one()
    text = path.read_text(encoding="utf-8").replace("\n", "")
    item = re.search(r'<ItemData ItemOID="IT\.PATIENTS\.BIRTH_DATE" Value="[^"]*"/>', text)[0]
    text = text.replace(item, f"{item}<!-- EX-001 born {birth} -->", 1)
    text = text.replace("<StudyName>MDA5-ILD registry", f"<StudyName>registry of {birth}")
    path.write_text(text, encoding="utf-8")
    with example.connect() as connection:
        scan = Scanner(registered_identifiers(connection)).scan([path])
    assert [(f.location, f.kind) for f in scan.findings] == [("line 1", "birth date"), ("line 1", "birth date")]
    assert scan.allowed == {f"{path} ItemData IT.PATIENTS.BIRTH_DATE": 4}
