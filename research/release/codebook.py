"""The codebook of a release, in English and Chinese: what each variable is, its type, unit,
allowed values and how the release transformed it, and the vocabulary concepts the data uses.

`codebook_files` returns the files' texts by name (codebook.csv, codebook.md, concepts.csv);
the same input gives the same text. Variables keep the order given, grouped by table in the
order the tables first appear; value codes are sorted (numbers by value); concepts by code.
"""

from __future__ import annotations

from research.release.files import LOGICAL_TYPES, csv_text
from research.release.kanon import SUPPRESSED

VARIABLE_CLASSES = {
    "direct": ("direct identifier", "直接标识符"),
    "quasi": ("quasi-identifier", "准标识符"),
    "clinical": ("clinical", "临床变量"),
    "structural": ("pseudonym or reference of this release", "本次发布的假名或引用"),
}
TYPE_LABELS = {
    "string": ("text", "文本"),
    "int": ("whole number", "整数"),
    "float": ("number", "数值"),
    "bool": ("true / false", "是 / 否（true / false）"),
    "date_days": ("whole days from the patient's index date (first diagnosis; negative "
                  "before it)", "距患者索引日期（首次诊断）的天数（之前为负数）"),
    "category": ("coded value (see Values)", "编码值（见取值）"),
}
CODEBOOK_COLUMNS = ("variable", "table", "label_en", "label_zh", "class", "type", "unit",
                    "values", "transformation")
CONCEPT_COLUMNS = ("vocabulary", "code", "name")
_VARIABLE_KEYS = ("name", "table", "label_en", "label_zh", "type", "unit", "values", "klass",
                  "transformation")


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _code_order(code: str) -> tuple:
    # Grades 1..10 in numeric order, then texts.
    return (0, int(code), "") if code.lstrip("-").isdigit() else (1, 0, code)


def _values(values: dict | None) -> list[tuple[str, str]]:
    if not values:
        return []
    pairs = [(_text(code), _text(label)) for code, label in values.items()]
    return sorted(pairs, key=lambda pair: _code_order(pair[0]))


def _check(variables: list[dict], vocabularies: list[dict]) -> None:
    seen = set()
    for number, variable in enumerate(variables, start=1):
        missing = [key for key in _VARIABLE_KEYS if key not in variable]
        if missing:
            raise ValueError(f"Variable {number} has no {', '.join(missing)}.")
        if variable["klass"] not in VARIABLE_CLASSES:
            raise ValueError(
                f"Variable {variable['name']!r}: class {variable['klass']!r} is not one of "
                f"{', '.join(VARIABLE_CLASSES)}.")
        if variable["type"] not in LOGICAL_TYPES:
            raise ValueError(
                f"Variable {variable['name']!r}: type {variable['type']!r} is not one of "
                f"{', '.join(LOGICAL_TYPES)}.")
        key = (variable["table"], variable["name"])
        if key in seen:
            raise ValueError(f"Variable {variable['name']!r} of {variable['table']!r} twice.")
        seen.add(key)
    for vocabulary in vocabularies:
        if "vocabulary" not in vocabulary or "concepts" not in vocabulary:
            raise ValueError("A vocabulary needs 'vocabulary' and 'concepts'.")


def _by_table(variables: list[dict]) -> dict[str, list[dict]]:
    tables: dict[str, list[dict]] = {}
    for variable in variables:
        tables.setdefault(_text(variable["table"]), []).append(variable)
    return tables


def _concepts(vocabularies: list[dict]) -> list[tuple[str, str, str]]:
    rows = {
        (_text(v["vocabulary"]), _text(c["code"]), _text(c["name"]))
        for v in vocabularies for c in v["concepts"]
    }
    return sorted(rows)


def _md(value: str) -> str:
    """A Markdown table cell: pipes escaped, line breaks as <br>."""
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n") \
        .replace("\n", "<br>") or " "


def _codebook_csv(tables: dict[str, list[dict]]) -> str:
    rows = [CODEBOOK_COLUMNS]
    for table, variables in tables.items():
        for v in variables:
            values = "; ".join(f"{code}={label}" for code, label in _values(v["values"]))
            rows.append((_text(v["name"]), table, _text(v["label_en"]), _text(v["label_zh"]),
                         v["klass"], v["type"], _text(v["unit"]), values,
                         _text(v["transformation"])))
    return csv_text(rows)


def _codebook_md(tables: dict[str, list[dict]], concepts: list[tuple[str, str, str]]) -> str:
    lines = [
        "# Codebook / 数据字典",
        "",
        "Every variable of the release: its label in English and Chinese, its class "
        "(direct identifier, quasi-identifier or clinical), type, unit, allowed values and "
        "how the release transformed it. Missing values are empty in the CSV files and null "
        "in the Parquet files.",
        "",
        "本数据集的每个变量：中英文标签、类别（直接标识符、准标识符或临床变量）、类型、单位、"
        "取值及其在发布时所做的处理。缺失值在 CSV 文件中为空，在 Parquet 文件中为 null。",
        "",
    ]
    lines += ["## Types / 类型", "", "| Type / 类型 | Meaning | 含义 |", "|---|---|---|"]
    lines += [f"| {name} | {_md(en)} | {_md(zh)} |" for name, (en, zh) in TYPE_LABELS.items()]
    lines += ["", f"`{SUPPRESSED}` in a quasi-identifier: generalised away to protect identity "
              f"(k-anonymity). / 准标识符中的 `{SUPPRESSED}`：为保护身份而隐去（k-匿名）。", ""]
    for table, variables in tables.items():
        lines += [
            f"## {table}",
            "",
            "| Variable / 变量 | Label | 标签 | Class / 类别 | Type / 类型 | Unit / 单位 "
            "| Values / 取值 | Transformation / 处理 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v in variables:
            en, zh = VARIABLE_CLASSES[v["klass"]]
            values = "; ".join(f"{code} = {label}" for code, label in _values(v["values"]))
            cells = [_text(v["name"]), _text(v["label_en"]), _text(v["label_zh"]),
                     f"{en} / {zh}", v["type"], _text(v["unit"]), values,
                     _text(v["transformation"])]
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        lines.append("")
    lines += ["## Vocabularies / 术语表", ""]
    if concepts:
        lines += ["| Vocabulary / 术语表 | Code / 编码 | Name / 名称 |", "|---|---|---|"]
        lines += [f"| {_md(v)} | {_md(c)} | {_md(n)} |" for v, c, n in concepts]
    else:
        lines.append("No coded values. / 无编码值。")
    return "\n".join(lines) + "\n"


def codebook_files(variables: list[dict], vocabularies: list[dict]) -> dict[str, str]:
    """The codebook's files by name: codebook.csv (one row per variable), codebook.md (for
    people, both languages) and concepts.csv (the concepts used, per vocabulary).

    A variable: name, table, label_en, label_zh, type (a release logical type), unit, values
    (code -> label, or None), klass ("direct", "quasi" or "clinical"), transformation (what the
    release did to it). A vocabulary: {"vocabulary": name, "concepts": [{"code", "name"}]}.
    """
    _check(variables, vocabularies)
    tables = _by_table(variables)
    concepts = _concepts(vocabularies)
    return {
        "codebook.csv": _codebook_csv(tables),
        "codebook.md": _codebook_md(tables, concepts),
        "concepts.csv": csv_text([CONCEPT_COLUMNS, *concepts]),
    }
