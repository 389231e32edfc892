"""Forms a coordinator can read (issue 18, point 2): labels and help, lab units, fields that do not apply.

Driven with FastAPI's TestClient against a real database (both engines), the template
and the dictionary read from the files written; the database is read back after each step.
"""

import html
import re

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from test_web import sign_in

from registry.dictionary import data_dictionary, help_text
from registry.export import template
from registry.sheets import SHEETS, sheet_dictionary
from registry.web.app import create_app


@pytest.fixture
def client(web_registry):
    client = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(client, "cora")
    return client


def labels_and_help(page: str) -> dict[str, tuple[str, str]]:
    """Each field of a form: the text of its label (without the required mark) and of its help."""
    labels = dict(re.findall(r'<label for="([^"]+)">([^<]*?)(?: \*)?</label>', page))
    helps = dict(re.findall(r'<span class="help" id="help-([^"]+)">([^<]*)</span>', page))
    return {name: (html.unescape(labels[name]), html.unescape(helps[name])) for name in helps if name in labels}


def test_every_field_has_one_label_and_help_in_the_dictionary_the_template_and_the_forms(client, tmp_path):
    entries = {(e.table, e.column): e for e in sheet_dictionary()}
    assert all(e.label and e.description for e in entries.values()), "every sheet column needs a label and help"
    assert entries["patients", "resp_symptom_onset_date"].label == "Date of first respiratory symptoms"
    registry = {(e.table, e.column): e.label for e in data_dictionary()}
    for sheet in SHEETS:  # the registry's dictionary gives each stored column the sheet's label
        for column in sheet.columns:
            if not column.is_reference:
                assert registry[sheet.table.name, column.target] == entries[sheet.name, column.name].label

    template(tmp_path / "t.xlsx")
    book = load_workbook(tmp_path / "t.xlsx")
    for sheet in SHEETS:
        notes = {cell.value: cell.comment.text for cell in book[sheet.name][1]}
        for name, note in notes.items():
            entry = entries[sheet.name, name]
            assert note == f"{entry.label}: {help_text(entry)}" + (". Required." if entry.required == "yes" else "")
    dictionary = [dict(zip([c.value for c in book["dictionary"][1]], row, strict=True))
                  for row in book["dictionary"].iter_rows(min_row=2, values_only=True)]  # fmt: skip
    assert {(row["table"], row["column"]): row["label"] for row in dictionary} == {
        key: entry.label for key, entry in entries.items()
    }
    assert book["patients"]["H1"].comment.text == (
        "Date of first respiratory symptoms: Onset of respiratory symptoms (cough, dyspnoea)"
    )

    forms = {"patients": "/patients/new", **{s.name: f"/patients/EX-002/{s.name}/new" for s in SHEETS[1:-1]},
             "follow_up": "/patients/EX-002/follow_up/new"}  # fmt: skip
    for sheet, path in forms.items():
        shown = labels_and_help(client.get(path).text)
        expected = {c.name: (entries[sheet, c.name].label, help_text(entries[sheet, c.name]))
                    for c in next(s for s in SHEETS if s.name == sheet).columns if c.name != "study_id" or sheet == "patients"}  # fmt: skip
        assert shown == expected, sheet
    page = client.get("/patients/new").text
    assert '<label for="resp_symptom_onset_date">Date of first respiratory symptoms</label>' in page
    assert ">resp_symptom_onset_date<" not in page
