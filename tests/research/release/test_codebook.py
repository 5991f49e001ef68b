"""The codebook: every variable in both languages, values and concepts in a fixed order, the
same text for the same input, and refusals of what it cannot describe."""

from __future__ import annotations

import csv
import io

import pytest

from research.release import codebook, files

VARIABLES = [
    {"name": "pseudonym", "table": "patients", "label_en": "Study pseudonym",
     "label_zh": "研究假名", "type": "string", "unit": None, "values": None, "klass": "direct",
     "transformation": "HMAC-SHA256 under the release key"},
    {"name": "sex", "table": "patients", "label_en": "Sex", "label_zh": "性别",
     "type": "category", "unit": None, "values": {"M": "Male / 男", "F": "Female / 女"},
     "klass": "quasi", "transformation": "k-anonymity: as recorded or *"},
    {"name": "grade", "table": "adverse_events", "label_en": "CTCAE grade | worst",
     "label_zh": "CTCAE 分级", "type": "int", "unit": None,
     "values": {10: "ten", 2: "Moderate / 中度", 1: "Mild / 轻度"}, "klass": "clinical",
     "transformation": "none"},
    {"name": "onset_day", "table": "adverse_events", "label_en": "Onset",
     "label_zh": "发生日", "type": "date_days", "unit": "days", "values": None,
     "klass": "clinical", "transformation": "days from the first diagnosis\nper patient"},
    {"name": "age", "table": "patients", "label_en": "Age, at diagnosis",
     "label_zh": "诊断时年龄", "type": "category", "unit": "years", "values": None,
     "klass": "quasi", "transformation": 'top-coded at 90 ("90+")'},
]
VOCABULARIES = [
    {"vocabulary": "CTCAE", "concepts": [{"code": "Nausea", "name": "Nausea"},
                                         {"code": "Anemia", "name": "Anemia"}]},
    {"vocabulary": "ATC", "concepts": [{"code": "L01XA01", "name": "cisplatin, 顺铂"}]},
]


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_codebook_csv_has_one_row_per_variable_grouped_by_table():
    out = codebook.codebook_files(VARIABLES, VOCABULARIES)
    assert set(out) == {"codebook.csv", "codebook.md", "concepts.csv"}
    table = rows(out["codebook.csv"])
    assert list(table[0]) == list(codebook.CODEBOOK_COLUMNS)
    assert [(r["table"], r["variable"]) for r in table] == [
        ("patients", "pseudonym"), ("patients", "sex"), ("patients", "age"),
        ("adverse_events", "grade"), ("adverse_events", "onset_day")]
    by_name = {r["variable"]: r for r in table}
    assert by_name["grade"]["values"] == "1=Mild / 轻度; 2=Moderate / 中度; 10=ten"
    assert by_name["sex"]["values"] == "F=Female / 女; M=Male / 男"
    assert by_name["age"]["label_en"] == "Age, at diagnosis"
    assert by_name["age"]["transformation"] == 'top-coded at 90 ("90+")'
    assert by_name["onset_day"]["transformation"] == "days from the first diagnosis\nper patient"
    assert by_name["pseudonym"]["class"] == "direct"
    assert by_name["pseudonym"]["unit"] == ""
    assert out["codebook.csv"].endswith("\n") and "\r" not in out["codebook.csv"]


def test_concepts_are_listed_by_vocabulary_and_code():
    out = codebook.codebook_files(VARIABLES, VOCABULARIES)
    assert [tuple(r.values()) for r in rows(out["concepts.csv"])] == [
        ("ATC", "L01XA01", "cisplatin, 顺铂"), ("CTCAE", "Anemia", "Anemia"),
        ("CTCAE", "Nausea", "Nausea")]


def test_codebook_md_speaks_both_languages_and_escapes_its_cells():
    md = codebook.codebook_files(VARIABLES, VOCABULARIES)["codebook.md"]
    for variable in VARIABLES:
        assert variable["label_zh"] in md
    assert "CTCAE grade \\| worst" in md
    assert "days from the first diagnosis<br>per patient" in md
    assert "quasi-identifier / 准标识符" in md
    assert "## patients" in md and "## adverse_events" in md
    assert "| ATC | L01XA01 | cisplatin, 顺铂 |" in md
    for logical in files.LOGICAL_TYPES:
        assert f"| {logical} |" in md
    # Every table row has the header's number of cells.
    for line in md.splitlines():
        if line.startswith("| pseudonym") or line.startswith("| grade"):
            assert line.replace("\\|", "").count("|") == 9


def test_the_same_input_gives_the_same_text_whatever_the_order_of_concepts():
    one = codebook.codebook_files(VARIABLES, VOCABULARIES)
    shuffled = [{"vocabulary": v["vocabulary"], "concepts": list(reversed(v["concepts"]))}
                for v in reversed(VOCABULARIES)]
    assert codebook.codebook_files(VARIABLES, shuffled) == one
    assert codebook.codebook_files(VARIABLES, VOCABULARIES) == one


def test_no_vocabularies_says_so():
    out = codebook.codebook_files(VARIABLES[:1], [])
    assert out["concepts.csv"] == "vocabulary,code,name\n"
    assert "No coded values." in out["codebook.md"]


@pytest.mark.parametrize(("change", "message"), [
    ({"klass": "secret"}, "class 'secret'"),
    ({"type": "date"}, "type 'date'"),
])
def test_a_variable_it_cannot_describe_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        codebook.codebook_files([{**VARIABLES[0], **change}], [])


def test_a_variable_twice_or_incomplete_is_refused():
    with pytest.raises(ValueError, match="twice"):
        codebook.codebook_files([VARIABLES[0], dict(VARIABLES[0])], [])
    incomplete = {k: v for k, v in VARIABLES[0].items() if k != "label_zh"}
    with pytest.raises(ValueError, match="has no label_zh"):
        codebook.codebook_files([incomplete], [])
    with pytest.raises(ValueError, match="vocabulary"):
        codebook.codebook_files(VARIABLES, [{"name": "ATC"}])
