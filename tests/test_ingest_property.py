"""Random cells and random sheet shapes: the importer answers, and never writes half."""

from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from conftest import add_demo_site
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import db
from registry.audit import audited_session
from registry.export import export
from registry.ingest import import_path, import_sheets
from registry.models import TABLES, AdverseEvent
from registry.sheets import SHEETS
from registry.workbook import CONTROL_CHARACTERS, RawSheet, UnreadableCell, read

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example"
COLUMN_NAMES = sorted({c.name for s in SHEETS for c in s.columns})

cells = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["", " ", "EX-001", "EX-002", "DEMO", "female", "crp", "yes", "no", "<5", "03/04/2019",
                     "2019-02-30", "2019-05-01", "1e309", "nan", "-1", "0", "101", "strong", "tofacitinib", "dead"]),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1)),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    st.builds(UnreadableCell, st.sampled_from(["#N/A", "=A1*2"]), st.just("is a spreadsheet error, not a value")),
)  # fmt: skip


EXAMPLE_SHEETS = read(EXAMPLE)


@st.composite
def example_based(draw) -> list[RawSheet]:
    """Example sheets with shuffled columns, some rows, and cells swapped or replaced at random."""
    sheets = []
    for example in draw(st.lists(st.sampled_from(EXAMPLE_SHEETS), min_size=1, max_size=3, unique_by=lambda s: s.name)):
        order = draw(st.permutations(range(len(example.header))))
        rows = draw(st.lists(st.sampled_from(example.rows), max_size=5))
        width = len(example.header)
        pools = [[r[i] for _, r in example.rows if i < len(r)] for i in range(width)]
        mutated = []
        for number, row in rows:
            padded = row + [None] * (width - len(row))
            changed = []
            for i in order:
                dice = draw(st.integers(0, 9))  # 1 in 10: any value; 2 in 10: another row's value
                changed.append(draw(cells) if dice == 0 else draw(st.sampled_from(pools[i])) if dice < 3 else padded[i])
            mutated.append((number, changed))
        sheets.append(RawSheet(example.name, example.source, [example.header[i] for i in order], mutated))
    return sheets


@st.composite
def random_sheets(draw) -> list[RawSheet]:
    sheets = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.one_of(st.sampled_from([s.name for s in SHEETS]), st.text(max_size=8)))
        known = draw(st.lists(st.sampled_from(COLUMN_NAMES), max_size=10))
        header = draw(st.permutations(known + draw(st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=2))))
        width = len(header) + draw(st.integers(-2, 2))
        rows = draw(st.lists(st.lists(cells, min_size=max(width, 0), max_size=max(width, 0)), max_size=6))
        sheets.append(RawSheet(name, name, list(header), [(i, r) for i, r in enumerate(rows, start=2)]))
    return sheets


def _rows(engine) -> dict[str, list]:
    with engine.connect() as connection:
        return {m.__tablename__: sorted(map(repr, connection.execute(sa.select(m.__table__)))) for m in TABLES}


_engines: dict[str, sa.Engine] = {}


def _registry(tmp_path_factory) -> sa.Engine:
    """One SQLite registry holding the example, shared by the examples hypothesis draws."""
    if "r" not in _engines:
        path = tmp_path_factory.mktemp("property") / "r.db"
        engine = db.make_engine(f"sqlite:///{path}")
        db.upgrade(engine)
        add_demo_site(engine)
        assert import_path(engine, EXAMPLE, actor="c").written
        _engines["r"] = engine
    return _engines["r"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sheets=st.one_of(random_sheets(), example_based()))
def test_importer_never_crashes_and_never_writes_half(tmp_path_factory, sheets):
    engine = _registry(tmp_path_factory)
    before = _rows(engine)
    result = import_sheets(engine, sheets, actor="fuzz", reason="property test")
    after = _rows(engine)
    if result.errors or not result.written:
        assert after == before
    else:
        inserted = {s.table.name: result.counts[s.name].inserted for s in SHEETS if s.name in result.counts}
        for table, count in inserted.items():
            assert len(after[table]) == len(before[table]) + count


#: Free text as entry stores it: trimmed, line breaks as LF, without the control characters entry refuses, often
#: starting with what a spreadsheet runs as a formula.
stored_text = (
    st.text(
        alphabet=st.one_of(st.sampled_from("=+-@'\t\n\"',;#"), st.characters(codec="utf-8", exclude_categories=["Cc"])),
        min_size=1,
        max_size=20,
    )
    .map(str.strip)
    .filter(lambda text: text and not CONTROL_CHARACTERS.search(text))
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=stored_text, target=st.sampled_from(["csv", "cases.xlsx"]))
def test_any_stored_text_comes_back_unchanged_from_its_export(tmp_path_factory, text, target):
    """Issue 17, point 1: CSV exports neutralise formulas in a way the import reverses, .xlsx exports write text as
    text; whatever the text, importing the export back changes nothing."""
    engine = _registry(tmp_path_factory)
    with audited_session(engine, actor="fuzz") as session:
        event = session.exec(sa.select(AdverseEvent).order_by(AdverseEvent.id)).scalars().first()
        event.term_detail = text
        session.commit()
    folder = tmp_path_factory.mktemp("export")
    export(engine, folder / target)
    result = import_path(engine, folder / target, actor="fuzz")
    assert result.problems == [] and not result.changed
