"""Reading and checking a site extract (docs/extract-format.md).

An extract is opened safely (a folder, a zip, or one .csv/.xlsx file: no path traversal, no zip
bomb, size limits from settings checked before anything is expanded and again while reading),
each file is decoded (UTF-8, UTF-8 with BOM or GB18030, detected), read as text cells, and
every cell checked. Problems are collected as (file, row, column, value, message) and reported
all at once; parsing is vectorised with pandas.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import pandas as pd
from django.conf import settings

from registry.kinds import KINDS, Column

NUMBER = r"[-+]?\d+(?:\.\d+)?"


# The files of an extract, their columns, the columns that identify a row and the columns
# holding a site's coded words: all from the catalogue of record kinds.
FILES: dict[str, list[Column]] = {k.extract_file: list(k.extract_columns)
                                  for k in KINDS.values()}
NATURAL_KEYS: dict[str, list[str]] = {k.extract_file: list(k.extract_key)
                                      for k in KINDS.values()}
WORDS: dict[tuple[str, str], str] = {(k.extract_file, w.column): w.domain.value
                                     for k in KINDS.values() for w in k.words}

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
# How a cell may be read (a Column's kind): parse_column reads each.
CELL_KINDS = frozenset({"text", "date", "grade", "lab_value", "count", "year", "ecog",
                        "positive", *CHOICES})
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
DATE_FORMATS = ["%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日"]


class ExtractRefused(Exception):
    """The extract cannot be read at all (the message names why)."""


# The columns of an import's error report (CSV download, import_extract --report).
PROBLEM_COLUMNS = ["file", "row", "column", "value", "message", "code"]


@dataclass
class Problem:
    file: str
    row: int
    column: str
    value: str
    message: str
    code: str = ""  # the rulebook's code, for a problem a rule found

    def as_dict(self) -> dict:
        return {"file": self.file, "row": self.row, "column": self.column,
                "value": self.value, "message": self.message, "code": self.code}


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

READ_CHUNK = 1 << 20
EXTENSIONS = ("csv", "xlsx")  # the files of an extract
ARCHIVE = "zip"
UPLOAD_SUFFIXES = (ARCHIVE, *EXTENSIONS)  # what may be uploaded


@dataclass(frozen=True)
class Limits:
    """The extract limits of settings (IMPORT_MAX_*), read when an extract is opened."""

    file_bytes: int
    total_bytes: int
    members: int
    ratio: int
    ratio_from_bytes: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(file_bytes=settings.IMPORT_MAX_FILE_BYTES,
                   total_bytes=settings.IMPORT_MAX_TOTAL_BYTES,
                   members=settings.IMPORT_MAX_MEMBERS, ratio=settings.IMPORT_MAX_ZIP_RATIO,
                   ratio_from_bytes=settings.IMPORT_ZIP_RATIO_FROM_BYTES)


def upload_limit(name: str) -> int:
    """The most bytes an upload of this name may have: a zip its total, one file the file
    limit (a zip cannot usefully be larger than what it expands to)."""
    limits = Limits.from_settings()
    return limits.total_bytes if _suffix(name) == ARCHIVE else limits.file_bytes


def upload_max_bytes() -> int:
    """The most bytes any upload may have (the larger of the two limits above)."""
    limits = Limits.from_settings()
    return max(limits.total_bytes, limits.file_bytes)


def _suffix(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


def _too_big(name: str, size: int, limit: int) -> ExtractRefused:
    return ExtractRefused(f"{name} is {size:,} bytes; files over {limit:,} bytes are refused.")


def open_extract(source: Path | BinaryIO, *, name: str | None = None
                 ) -> dict[str, tuple[str, bytes]]:
    """{file stem: (file name, bytes)} of a folder, a .zip or one .csv/.xlsx file, refusing
    unsafe archives. `source` is a path or an open binary file (an upload in storage), whose
    own name is then given as `name`: the kind of extract and a single file's table are told
    by it."""
    limits = Limits.from_settings()
    if isinstance(source, Path | str) and Path(source).is_dir():
        members = _open_folder(Path(source), limits)
    else:
        name = name or Path(source).name
        if _suffix(name) == ARCHIVE:
            members = _with_handle(source, lambda handle: _open_zip(handle, name, limits))
        elif _suffix(name) in EXTENSIONS:
            members = [(name, _with_handle(source, lambda handle: _read_single(handle, name,
                                                                               limits)))]
        else:
            raise ExtractRefused(f"{name}: give a folder, a .zip, or a .csv/.xlsx file.")
    out: dict[str, tuple[str, bytes]] = {}
    for member, content in members:
        key = _table_of(member)
        if key in out:
            raise ExtractRefused(f"{out[key][0]} and {member} are both {key}; an extract holds "
                                 "each file once. Remove one and upload again.")
        if not content.strip():
            raise ExtractRefused(f"{member} is empty.")
        out[key] = (member, content)
    if not out:
        raise ExtractRefused("The extract holds no files.")
    return out


def extract_inspect(source: Path | BinaryIO, *, name: str) -> None:
    """Refuse (ExtractRefused) an extract that breaks a limit or holds an unsafe or unknown
    name, judged from its size and a zip's central directory only: nothing is expanded."""
    limits = Limits.from_settings()
    if _suffix(name) == ARCHIVE:
        _with_handle(source, lambda handle: _zip_directory(handle, name, limits))
    elif _suffix(name) in EXTENSIONS:
        _table_of(name)
        size = _with_handle(source, lambda handle: handle.seek(0, io.SEEK_END))
        if size > limits.file_bytes:
            raise _too_big(name, size, limits.file_bytes)
    else:
        raise ExtractRefused(f"{name}: give a .zip, or a .csv/.xlsx file.")


def _with_handle(source, use):
    if isinstance(source, Path | str):
        with open(source, "rb") as handle:
            return use(handle)
    source.seek(0)
    return use(source)


def _table_of(name: str) -> str:
    """The table a file holds, from its name (any folder part dropped)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    stem, dot, suffix = base.rpartition(".")
    if not dot or suffix.lower() not in EXTENSIONS:
        raise ExtractRefused(f"{name}: only .csv and .xlsx files belong in an extract.")
    key = stem.strip().lower()
    if key not in FILES:
        raise ExtractRefused(f"{name}: unknown file; expected {', '.join(FILES)}.")
    return key


def _open_folder(path: Path, limits: Limits) -> list[tuple[str, bytes]]:
    members, total = [], 0
    for child in sorted(path.iterdir()):
        if child.is_file() and not child.name.startswith("."):
            size = child.stat().st_size
            if size > limits.file_bytes:
                raise _too_big(child.name, size, limits.file_bytes)
            total += size
            if total > limits.total_bytes:
                raise ExtractRefused(f"{path.name} holds more than {limits.total_bytes:,} "
                                     "bytes; refused.")
            members.append((child.name, child.read_bytes()))
    return members


def _read_single(handle: BinaryIO, name: str, limits: Limits) -> bytes:
    content = handle.read(limits.file_bytes + 1)
    if len(content) > limits.file_bytes:
        raise ExtractRefused(f"{name} is larger than {limits.file_bytes:,} bytes; files over "
                             f"{limits.file_bytes:,} bytes are refused.")
    return content


def _skipped(name: str) -> bool:
    """Entries an archiver adds beside the files (macOS resource forks, hidden files)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1].startswith("."))


def _zip_directory(handle: BinaryIO, name: str, limits: Limits) -> list[zipfile.ZipInfo]:
    """The zip's file entries, every limit checked from its central directory."""
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ExtractRefused(f"{name} is not a readable zip file.") from None
    entries = archive.infolist()
    if len(entries) > limits.members:
        raise ExtractRefused(f"{name} holds {len(entries):,} entries; an extract has at most "
                             f"{limits.members}.")
    files, total, seen = [], 0, {}
    for info in entries:
        member = info.filename
        parts = PurePosixPath(member.replace("\\", "/")).parts
        if member.startswith(("/", "\\")) or ".." in parts or ":" in member:
            raise ExtractRefused(f"{name}: unsafe name {member!r} inside the zip "
                                 "(path traversal); the extract is refused.")
        if info.is_dir() or _skipped(member):
            continue
        if info.flag_bits & 0x1:
            raise ExtractRefused(f"{member} is encrypted; upload the zip without a password.")
        key = _table_of(member)
        if key in seen:
            raise ExtractRefused(f"{seen[key]} and {member} are both {key}; an extract holds "
                                 "each file once. Remove one and upload again.")
        seen[key] = member
        if info.file_size > limits.file_bytes:
            raise ExtractRefused(f"{member} unpacks to {info.file_size:,} bytes; files over "
                                 f"{limits.file_bytes:,} bytes are refused.")
        if info.file_size >= limits.ratio_from_bytes and (
                info.file_size > limits.ratio * max(info.compress_size, 1)):
            raise ExtractRefused(f"{member} expands {info.file_size // max(info.compress_size, 1)}"
                                 f"x (at most {limits.ratio}x): refused as a zip bomb.")
        total += info.file_size
        if total > limits.total_bytes:
            raise ExtractRefused(f"{name} unpacks to more than {limits.total_bytes:,} bytes; "
                                 "refused.")
        files.append(info)
    return files


def _open_zip(handle: BinaryIO, name: str, limits: Limits) -> list[tuple[str, bytes]]:
    infos = _zip_directory(handle, name, limits)
    archive = zipfile.ZipFile(handle)
    members = []
    for info in infos:
        members.append((PurePosixPath(info.filename.replace("\\", "/")).name,
                        _read_member(archive, info)))
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, read in chunks and cut off past the size its entry claims."""
    chunks, size = [], 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(READ_CHUNK):
                size += len(chunk)
                if size > info.file_size:
                    raise ExtractRefused(f"{info.filename} expands beyond the {info.file_size:,} "
                                         "bytes its zip entry claims; refused.")
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ExtractRefused(f"{info.filename} is damaged inside the zip ({exc}); "
                             "make the zip again.") from None
    except (NotImplementedError, RuntimeError) as exc:  # compression method, encryption
        raise ExtractRefused(f"{info.filename} cannot be read ({exc}); make the zip again "
                             "with ordinary (deflate) compression.") from None
    if size != info.file_size:
        raise ExtractRefused(f"{info.filename} is shorter than its zip entry claims; "
                             "make the zip again.")
    return b"".join(chunks)


# The characters of Chinese clinical text beyond ASCII: Latin-1 (µ, ², °, ×), Greek (β2-微球蛋白),
# general punctuation, letterlike symbols and number forms, enclosed numerals, CJK
# punctuation, CJK ideographs (with extension A), fullwidth forms.
CLINICAL_TEXT_RANGES = ((0x00A0, 0x00FF), (0x0370, 0x03FF), (0x2000, 0x206F), (0x2100, 0x218F),
                        (0x2460, 0x24FF), (0x3000, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
                        (0xFF00, 0xFFEF))


def _in_clinical_text(char: str) -> bool:
    code = ord(char)
    return code < 0x80 or any(low <= code <= high for low, high in CLINICAL_TEXT_RANGES)


def decode(name: str, content: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 with or without BOM, or GB18030; mixed encodings refused.

    The whole file is judged, line by line: a file that is not UTF-8 throughout is GB18030 only
    if none of its lines reads as Chinese written in UTF-8."""
    if content.startswith(b"\xef\xbb\xbf"):
        try:
            return content[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            line = content[:exc.start + 3].count(b"\n") + 1
            raise ExtractRefused(f"{name}: marked UTF-8 but line {line} is not UTF-8 "
                                 "(mixed encodings); save the file in one encoding.") from None
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Not UTF-8 as a whole. GB18030 text can be valid UTF-8 by coincidence: a two-byte
    # character such as 药 (D2 A9) reads as a two-byte UTF-8 one (ҩ), always below U+0800,
    # whereas Chinese written in UTF-8 is three-byte characters; and the rarer coincidences
    # that do reach U+0800 read as characters no clinical text has (Hangul, private use, CJK
    # extension B: 稹啊 is F0 A1 B0 A1, U+21C21). So a line whose UTF-8 reading has characters
    # from U+0800 up, all of them ones Chinese clinical text uses, or that is not GB18030 at
    # all, is a UTF-8 line: one is enough to refuse the file (GB18030 would store it as
    # mojibake).
    utf8_lines, other_lines = [], 0
    for number, line in enumerate(content.splitlines(), start=1):
        if all(b < 128 for b in line):
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            other_lines += 1
            continue
        try:
            line.decode("gb18030")
            gb18030 = True
        except UnicodeDecodeError:
            gb18030 = False
        if not gb18030 or (any(ord(char) >= 0x800 for char in text)
                           and all(_in_clinical_text(char) for char in text)):
            utf8_lines.append(number)
        else:
            other_lines += 1
    if utf8_lines:
        shown = ", ".join(map(str, utf8_lines[:10])) + (" ..." if len(utf8_lines) > 10 else "")
        raise ExtractRefused(f"{name}: mixed encodings ({len(utf8_lines)} line(s) are UTF-8: "
                             f"line {shown}; {other_lines} are not); save the file in one "
                             "encoding.")
    try:
        return content.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise ExtractRefused(f"{name}: neither UTF-8 nor GB18030 text.") from None


def read_file(key: str, filename: str, content: bytes) -> ExtractFile:
    digest = hashlib.sha256(content).hexdigest()
    if filename.lower().endswith(".xlsx"):
        _check_workbook(filename, content)
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


def _check_workbook(filename: str, content: bytes) -> None:
    """A workbook is a zip of XML parts: what they expand to is held to the file limit, from
    its directory, before the workbook is opened."""
    limit = Limits.from_settings().file_bytes
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as workbook:
            expanded = sum(info.file_size for info in workbook.infolist())
    except (zipfile.BadZipFile, ValueError):
        raise ExtractRefused(f"{filename}: not a readable Excel workbook.") from None
    if expanded > limit:
        raise ExtractRefused(f"{filename} unpacks to {expanded:,} bytes; files over {limit:,} "
                             "bytes are refused.")


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
    if kind not in CELL_KINDS:
        raise ValueError(f"Column {column.name} has no reader for cells of kind {kind!r}.")
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
