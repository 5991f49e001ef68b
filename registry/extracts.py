"""Reading and checking a site extract (docs/extract-format.md).

An extract is opened safely (folder or zip: no path traversal, no zip bomb, size limits),
each file is decoded (UTF-8, UTF-8 with BOM or GB18030, detected), read as text cells, and
every cell checked. Problems are collected as (file, row, column, value, message) and reported
all at once; parsing is vectorised with pandas.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

MAX_FILE_BYTES = 1 << 30  # 1 GiB per file
MAX_TOTAL_BYTES = 4 << 30
MAX_ZIP_RATIO = 200  # uncompressed / compressed, beyond which a member is a zip bomb

NUMBER = r"[-+]?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Column:
    name: str
    required: bool = False
    kind: str = "text"


FILES: dict[str, list[Column]] = {
    "patients": [Column("patient_no", True), Column("sex", True, "sex"),
                 Column("birth_date", kind="date"), Column("birth_year", kind="year"),
                 Column("department"), Column("consent_scope", kind="consent"),
                 Column("consent_date", kind="date"), Column("withdrawn_date", kind="date")],
    "diagnoses": [Column("patient_no", True), Column("diagnosis_date", True, "date"),
                  Column("cancer", True), Column("morphology"), Column("stage_system"),
                  Column("stage_group"), Column("t"), Column("n"), Column("m"),
                  Column("ecog", kind="ecog"), Column("biomarkers")],
    "regimens": [Column("patient_no", True), Column("line_no", True, "count"),
                 Column("regimen"), Column("intent", kind="intent"),
                 Column("start_date", True, "date"), Column("end_date", kind="date")],
    "cycles": [Column("patient_no", True), Column("line_no", True, "count"),
               Column("cycle_no", True, "count"), Column("start_date", True, "date"),
               Column("length_days", kind="count"), Column("bsa_m2", kind="positive")],
    "drugs": [Column("patient_no", True), Column("line_no", True, "count"),
              Column("cycle_no", True, "count"), Column("day", kind="count"),
              Column("drug", True), Column("dose", kind="positive"),
              Column("dose_unit", kind="dose_unit"), Column("route", kind="route"),
              Column("purpose", kind="purpose")],
    "adverse_events": [Column("patient_no", True), Column("term", True),
                       Column("grade", True, "grade"), Column("onset_date", True, "date"),
                       Column("resolved_date", kind="date"), Column("serious", kind="yesno"),
                       Column("line_no", kind="count"), Column("cycle_no", kind="count")],
    "labs": [Column("patient_no", True), Column("collected_date", True, "date"),
             Column("test", True), Column("value", True, "lab_value"), Column("unit"),
             Column("line_no", kind="count"), Column("cycle_no", kind="count")],
    "followups": [Column("patient_no", True), Column("followup_date", True, "date"),
                  Column("vital_status", True, "vital"), Column("progression", kind="yesno"),
                  Column("progression_date", kind="date"), Column("ecog", kind="ecog"),
                  Column("cause_of_death")],
}
NATURAL_KEYS = {
    "patients": ["patient_no"], "diagnoses": ["patient_no", "diagnosis_date", "cancer"],
    "regimens": ["patient_no", "line_no"], "cycles": ["patient_no", "line_no", "cycle_no"],
    "drugs": ["patient_no", "line_no", "cycle_no", "day", "drug"],
    "adverse_events": ["patient_no", "term", "onset_date"],
    "labs": ["patient_no", "test", "collected_date"],
    "followups": ["patient_no", "followup_date"],
}
WORDS = {("diagnoses", "cancer"): "condition", ("diagnoses", "morphology"): "morphology",
         ("regimens", "regimen"): "regimen", ("drugs", "drug"): "drug",
         ("adverse_events", "term"): "adverse_event", ("labs", "test"): "lab",
         ("labs", "unit"): "unit"}

CHOICES = {
    "sex": {"m": "M", "f": "F", "男": "M", "女": "F", "male": "M", "female": "F"},
    "consent": {"academic": "academic", "commercial": "commercial", "学术": "academic",
                "商业": "commercial"},
    "yesno": {"y": True, "n": False, "yes": True, "no": False, "是": True, "否": False,
              "true": True, "false": False, "1": True, "0": False},
    "vital": {"alive": "alive", "dead": "dead", "lost": "lost", "存活": "alive",
              "死亡": "dead", "失访": "lost"},
    "purpose": {"antineoplastic": "antineoplastic", "antiemetic": "antiemetic",
                "gcsf": "gcsf", "g-csf": "gcsf", "other": "other", "抗肿瘤": "antineoplastic",
                "止吐": "antiemetic", "升白": "gcsf", "其他": "other"},
    "dose_unit": {"mg": "mg", "mg/m2": "mg/m2", "mg/m²": "mg/m2", "auc": "AUC", "g": "g",
                  "ug": "ug", "µg": "ug", "μg": "ug", "mg/kg": "mg/kg"},
    "route": {"iv": "iv", "po": "po", "sc": "sc", "im": "im", "other": "other",
              "静脉": "iv", "静滴": "iv", "口服": "po", "皮下": "sc", "肌注": "im"},
    "intent": {"neoadjuvant": "neoadjuvant", "adjuvant": "adjuvant", "curative": "curative",
               "palliative": "palliative", "other": "other", "新辅助": "neoadjuvant",
               "辅助": "adjuvant", "根治": "curative", "姑息": "palliative"},
}
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
DATE_FORMATS = ["%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日"]


class ExtractRefused(Exception):
    """The extract cannot be read at all (the message names why)."""


@dataclass
class Problem:
    file: str
    row: int
    column: str
    value: str
    message: str

    def as_dict(self) -> dict:
        return {"file": self.file, "row": self.row, "column": self.column,
                "value": self.value, "message": self.message}


@dataclass
class ExtractFile:
    name: str  # patients, diagnoses, ...
    filename: str
    sha256: str
    size: int
    encoding: str
    raw: pd.DataFrame  # text cells, as read
    parsed: pd.DataFrame = field(default_factory=pd.DataFrame)


# -- opening ------------------------------------------------------------------------------------

def open_extract(path: Path) -> dict[str, tuple[str, bytes]]:
    """{file stem: (file name, bytes)} from a folder or a .zip, refusing unsafe archives."""
    path = Path(path)
    members: dict[str, tuple[str, bytes]] = {}
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_file() and not child.name.startswith("."):
                if child.stat().st_size > MAX_FILE_BYTES:
                    raise ExtractRefused(f"{child.name} is {child.stat().st_size:,} bytes; files "
                                         f"over {MAX_FILE_BYTES:,} bytes are refused.")
                members[child.name] = child.read_bytes()
    elif path.suffix.lower() == ".zip":
        members = _open_zip(path)
    elif path.suffix.lower() in (".csv", ".xlsx"):
        members[path.name] = path.read_bytes()
    else:
        raise ExtractRefused(f"{path.name}: give a folder, a .zip, or a .csv/.xlsx file.")
    out = {}
    for name, content in members.items():
        stem, dot, suffix = name.rpartition(".")
        if not dot or suffix.lower() not in ("csv", "xlsx"):
            raise ExtractRefused(f"{name}: only .csv and .xlsx files belong in an extract.")
        key = stem.strip().lower()
        if key not in FILES:
            raise ExtractRefused(f"{name}: unknown file; expected {', '.join(FILES)}.")
        if key in out:
            raise ExtractRefused(f"{name}: {key} appears twice in the extract.")
        if not content.strip():
            raise ExtractRefused(f"{name} is empty.")
        out[key] = (name, content)
    if not out:
        raise ExtractRefused("The extract holds no files.")
    return out


def _open_zip(path: Path) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ExtractRefused(f"{path.name} is not a readable zip file.") from None
    members, total = {}, 0
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or ":" in name:
                raise ExtractRefused(f"{path.name}: unsafe name {name!r} inside the zip "
                                     "(path traversal); the extract is refused.")
            if info.file_size > MAX_FILE_BYTES:
                raise ExtractRefused(f"{name} unpacks to {info.file_size:,} bytes; files over "
                                     f"{MAX_FILE_BYTES:,} bytes are refused.")
            if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO \
                    and info.file_size > 10 << 20:
                raise ExtractRefused(f"{name} expands {info.file_size // info.compress_size}x: "
                                     "refused as a zip bomb.")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise ExtractRefused(f"{path.name} unpacks to more than {MAX_TOTAL_BYTES:,} "
                                     "bytes; refused.")
            with archive.open(info) as handle:
                content = handle.read(MAX_FILE_BYTES + 1)
            if len(content) > MAX_FILE_BYTES:
                raise ExtractRefused(f"{name} is larger than its zip entry claims; refused.")
            members[PurePosixPath(name).name] = content
    return members


def decode(name: str, content: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 with or without BOM, or GB18030; mixed encodings refused."""
    if content.startswith(b"\xef\xbb\xbf"):
        return content[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Not UTF-8 as a whole. If a real share of its non-ASCII lines are UTF-8 (or a UTF-8 line
    # is not GB18030 at all), two encodings were mixed. GB18030 text can be valid UTF-8 by
    # coincidence: a two-byte character such as 药 (D2 A9) reads as a two-byte UTF-8 one (ҩ),
    # always below U+0800, whereas Chinese written in UTF-8 is three-byte characters. So only
    # a line whose UTF-8 reading has characters from U+0800 up counts as UTF-8.
    lines = [line for line in content.splitlines() if any(b > 127 for b in line)]
    utf8_lines, utf8_only = 0, False
    for line in lines:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            continue
        try:
            line.decode("gb18030")
        except UnicodeDecodeError:
            utf8_only = True
        if any(ord(char) >= 0x800 for char in text):
            utf8_lines += 1
    if utf8_only or (utf8_lines and utf8_lines >= 0.1 * len(lines)):
        raise ExtractRefused(f"{name}: mixed encodings ({utf8_lines} line(s) are UTF-8, "
                             f"{len(lines) - utf8_lines} are not); save the file in one "
                             "encoding.")
    try:
        return content.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise ExtractRefused(f"{name}: neither UTF-8 nor GB18030 text.") from None


def read_file(key: str, filename: str, content: bytes) -> ExtractFile:
    digest = hashlib.sha256(content).hexdigest()
    if filename.lower().endswith(".xlsx"):
        try:
            frame = pd.read_excel(io.BytesIO(content), dtype=object, sheet_name=0)
        except Exception as exc:  # the workbook's own error says what is wrong
            raise ExtractRefused(f"{filename}: not a readable Excel workbook ({exc}).") from None
        frame = frame.map(_excel_cell)
        encoding = "xlsx"
    else:
        text, encoding = decode(filename, content)
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                                skipinitialspace=False)
        except pd.errors.ParserError as exc:
            raise ExtractRefused(f"{filename}: not a readable CSV file ({exc}).") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    frame = frame.fillna("").astype(str).apply(lambda col: col.str.strip())
    return ExtractFile(name=key, filename=filename, sha256=digest, size=len(content),
                       encoding=encoding, raw=frame)


def _excel_cell(value):
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


# -- checking -----------------------------------------------------------------------------------

def check_columns(extract: ExtractFile, problems: list[Problem]) -> bool:
    spec = {c.name: c for c in FILES[extract.name]}
    ok = True
    for column in extract.raw.columns:
        if column not in spec:
            problems.append(Problem(extract.filename, 1, column, column,
                                    f"unknown column {column!r} (a typo would drop data)"))
            ok = False
    for column in spec.values():
        if column.required and column.name not in extract.raw.columns:
            problems.append(Problem(extract.filename, 1, column.name, "",
                                    f"required column {column.name!r} is missing"))
            ok = False
    if extract.name == "patients" and not ({"birth_date", "birth_year"}
                                           & set(extract.raw.columns)):
        problems.append(Problem(extract.filename, 1, "birth_year", "",
                                "birth_date or birth_year is required"))
        ok = False
    if extract.raw.empty:
        problems.append(Problem(extract.filename, 2, "", "", "the file has no rows"))
        ok = False
    return ok


def parse_dates(values: pd.Series) -> pd.Series:
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    pending = values != ""
    for fmt in DATE_FORMATS:
        if not pending.any():
            break
        parsed = pd.to_datetime(values[pending], format=fmt, errors="coerce")
        result[pending] = parsed
        pending &= result.isna()
    return result


def parse_column(column: Column, values: pd.Series, today: pd.Timestamp
                 ) -> tuple[pd.Series, pd.Series]:
    """(parsed values, error message per cell or '')."""
    empty = values == ""
    errors = pd.Series("", index=values.index, dtype=object)
    if column.required:
        errors[empty] = f"{column.name} is required"
    kind = column.kind
    if kind == "text":
        return values, errors
    if kind == "date":
        parsed = parse_dates(values)
        errors[~empty & parsed.isna()] = "not a date (use 2024-03-05, 2024/3/5, 20240305...)"
        errors[parsed > today] = "the date is in the future"
        return parsed.dt.date.where(parsed.notna(), None), errors
    if kind in CHOICES:
        parsed = values.str.lower().map(CHOICES[kind])
        allowed = ", ".join(sorted({k for k in CHOICES[kind] if k.isascii()}))
        errors[~empty & parsed.isna()] = f"not one of {allowed}"
        return parsed.where(parsed.notna(), None), errors
    if kind == "grade":
        text = values.str.lower().str.replace(r"^g|级$|度$|\s", "", regex=True)
        parsed = pd.to_numeric(text.map(lambda t: ROMAN.get(t, t)), errors="coerce")
        errors[~empty & parsed.isna()] = "not a CTCAE grade (1-5, 3级, III度, G3)"
        errors[parsed.notna() & ((parsed < 1) | (parsed > 5) | (parsed % 1 != 0))] = \
            "CTCAE grades are 1-5"
        return parsed.astype("Int64"), errors
    if kind == "lab_value":
        match = values.str.extract(rf"^(<=|>=|≤|≥|<|>)?\s*({NUMBER})$")
        errors[~empty & match[1].isna()] = "not a number (like 1.2, <0.5 or >1000)"
        comparator = match[0].fillna("").replace({"≤": "<=", "≥": ">="})
        return pd.DataFrame({"comparator": comparator,
                             "value": pd.to_numeric(match[1], errors="coerce")}), errors
    numbers = pd.to_numeric(values.where(~empty), errors="coerce")
    errors[~empty & numbers.isna()] = "not a number"
    if kind in ("count", "year", "ecog"):
        errors[numbers.notna() & (numbers % 1 != 0)] = "not a whole number"
    if kind == "count":
        errors[numbers.notna() & (numbers < 1)] = "must be 1 or more"
    if kind == "year":
        errors[numbers.notna() & ((numbers < 1900) | (numbers > today.year))] = \
            "not a plausible birth year"
    if kind == "ecog":
        errors[numbers.notna() & ((numbers < 0) | (numbers > 4))] = "ECOG is 0-4"
    if kind == "positive":
        errors[numbers.notna() & (numbers <= 0)] = "must be positive"
    if kind in ("count", "year", "ecog"):
        return numbers.round().astype("Int64"), errors
    return numbers, errors


def check_cells(extract: ExtractFile, problems: list[Problem], today: pd.Timestamp) -> None:
    parsed = {}
    for column in FILES[extract.name]:
        if column.name not in extract.raw.columns:
            continue
        values = extract.raw[column.name]
        result, errors = parse_column(column, values, today)
        bad = errors != ""
        for index in np.flatnonzero(bad.to_numpy()):
            problems.append(Problem(extract.filename, int(index) + 2, column.name,
                                    values.iat[index], errors.iat[index]))
        if isinstance(result, pd.DataFrame):
            for sub in result.columns:
                parsed[f"{column.name}_{sub}"] = result[sub]
        else:
            parsed[column.name] = result
    extract.parsed = pd.DataFrame(parsed, index=extract.raw.index)
    keys = [k for k in NATURAL_KEYS[extract.name] if k in extract.raw.columns]
    duplicated = extract.raw.duplicated(keys, keep=False)
    for index in np.flatnonzero(duplicated.to_numpy()):
        value = " / ".join(extract.raw[keys].iloc[index])
        problems.append(Problem(extract.filename, int(index) + 2, "+".join(keys), value,
                                "duplicate natural key in this file"))
