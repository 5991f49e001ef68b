"""The files of one release, written deterministically: the same inputs give the same bytes,
in any process, folder, time or time zone.

A release folder holds, per table, `<table>.parquet` and `<table>.csv` inside one CSV zip
(`data-csv.zip`), the text files given (README.md, the codebook, reports) and, written last,
`manifest.json`: every other file's size and SHA-256, and each table's row count. A folder
without a manifest is an unfinished build. `verify` checks a folder against its manifest.

What is fixed so that rebuilds are identical:
- CSV: UTF-8 without BOM, one header line, "\\n" line ends, "," separators; a field is quoted
  ("") only when it holds a separator, a quote or a line break; a missing value is an empty
  field (an empty text is written as missing, in the CSV and in the Parquet file alike;
  in a table of one column it is written "", since a blank line is skipped by readers);
  integers in decimal, floats as Python's repr (the shortest text that reads back to the same
  float: 0.1, 1e+16, 2.0), booleans as true / false. Readers should take only the empty field
  as missing (pandas: keep_default_na=False, na_values=[""]), since texts such as "NA" are data.
- Zip: entries in the order the tables were declared, each dated 1980-01-01 00:00:00,
  permissions rw-r--r--, deflated at level 6, no extra time stamps, Zip64 headers always
  (a table may pass 4 GiB).
- Parquet: the schema from the declared logical types (explicit Arrow types, all nullable, the
  logical type in each field's metadata), one row group per written chunk, zstd at a fixed
  level, no pandas metadata; pyarrow stores its own version ("created_by"), so the same
  version of pyarrow is part of a reproducible build.
- JSON: sorted keys, two-space indent, fixed separators, a final newline.

Memory is one chunk: a table is streamed, never held whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CSV_ZIP_NAME = "data-csv.zip"
MANIFEST_NAME = "manifest.json"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_PERMISSIONS = 0o644
# Fast deflate: the CSV zip is for convenience (Parquet is the compact copy), and level 6 took
# about a fifth of a whole release build.
ZIP_COMPRESS_LEVEL = 1
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3
FILE_PERMISSIONS = 0o644

# The logical types a release table declares, and the Arrow type each is stored as.
LOGICAL_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "date_days": pa.int32(),  # whole days from the patient's index date
    "category": pa.dictionary(pa.int32(), pa.string()),
}
_TEXT_TYPES = frozenset({"string", "category"})

_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_COLUMN_NAME_MAX = 128
# A CSV field is quoted when it holds one of these (a separator, a quote, a line break).
NEEDS_QUOTES = r'[",\r\n]'
_HASH_BLOCK = 1 << 20


def _json_bytes(data: object) -> bytes:
    text = json.dumps(data, sort_keys=True, indent=2, separators=(",", ": "),
                      ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def csv_text(rows: Iterable[Iterable[str]]) -> str:
    """Small CSV texts (headers, the codebook) by the rules the tables are written with."""
    needs = re.compile(NEEDS_QUOTES)

    def field(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if needs.search(value) else value

    return "".join(",".join(field(v) for v in row) + "\n" for row in rows)


def _csv_column(texts: pa.Array, quote: bool) -> pa.Array:
    """A column's CSV fields: missing as empty, a text quoted when it holds a separator, a
    quote or a line break (numbers never do)."""
    if quote:
        needs = pc.match_substring_regex(texts, NEEDS_QUOTES)
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(texts, '"', '""'), '"',
                                             "")
        texts = pc.if_else(needs, quoted, texts)
    return pc.fill_null(texts, "")


def _csv_bytes(columns: list[pa.Array]) -> memoryview:
    """The CSV lines of equally long columns of fields: one contiguous buffer, built by Arrow
    without a Python object per value."""
    rows = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, ",")
    lines = pc.binary_join_element_wise(rows, "\n", "")
    _, offsets, data = lines.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64 if pa.types.is_large_string(lines.type)
                            else np.int32)
    return memoryview(data)[offsets[lines.offset]:offsets[lines.offset + len(lines)]]


@dataclass(frozen=True)
class ManifestFile:
    name: str
    bytes: int
    sha256: str
    rows: int | None = None  # for a table's Parquet file

    def to_dict(self) -> dict:
        out = {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}
        if self.rows is not None:
            out["rows"] = self.rows
        return out


@dataclass(frozen=True)
class Manifest:
    """The release's files (manifest.json itself not among them), its tables' row counts, and
    the SHA-256 of manifest.json (one checksum for the whole release)."""

    files: tuple[ManifestFile, ...]
    tables: dict[str, int]
    sha256: str = ""

    def to_dict(self) -> dict:
        return {"files": [f.to_dict() for f in self.files], "tables": dict(self.tables)}


def _check_column_name(name: object) -> None:
    if not isinstance(name, str) or not name or len(name) > _COLUMN_NAME_MAX:
        raise ValueError(
            f"A column name must be a text of 1 to {_COLUMN_NAME_MAX} characters: {name!r}.")
    if any(ch in name for ch in "\0\r\n"):
        raise ValueError(f"A column name holds a control character: {name!r}.")


def _arrow_array(values: pd.Series, logical: str, column: str) -> pa.Array:
    """One chunk's column as the declared Arrow type; a value that does not fit is refused."""
    kind = values.dtype.kind
    if logical in {"int", "float", "date_days"} and (
            kind == "b" or isinstance(values.dtype, pd.BooleanDtype)):
        raise ValueError(f"Column {column!r} is declared {logical}, but holds booleans.")
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    if logical == "bool" and not (kind in "bO" or isinstance(values.dtype, pd.BooleanDtype)):
        raise ValueError(f"Column {column!r} is declared bool, but holds {values.dtype}.")
    target = pa.string() if logical in _TEXT_TYPES else LOGICAL_TYPES[logical]
    try:
        array = pa.array(values, type=target, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"Column {column!r} does not hold {logical} values: {error}") from error
    if logical in _TEXT_TYPES:
        if pc.any(pc.match_substring(array, "\0")).as_py():
            # CSV readers cut a field at a NUL (and PostgreSQL never stores one).
            raise ValueError(f"Column {column!r} holds a NUL character.")
        array = pc.if_else(pc.equal(array, ""), pa.scalar(None, pa.string()), array)
        return array.dictionary_encode() if logical == "category" else array
    if logical == "float" and pc.any(pc.is_inf(array)).as_py():
        raise ValueError(f"Column {column!r} holds an infinite number.")
    return array


def _csv_fields(array: pa.Array, logical: str) -> pa.Array:
    if logical == "float":
        # Python's repr: the shortest text that reads back as the same float, in every
        # version. (Arrow has already made each NaN of the input a null.)
        values = array.to_numpy(zero_copy_only=False).tolist()
        texts = pa.array([None if v is None or v != v else repr(v) for v in values],
                         type=pa.string())
    elif logical == "bool":
        texts = pc.if_else(array, "true", "false")
    else:
        texts = pc.cast(array, pa.string())
    return _csv_column(texts, quote=logical in _TEXT_TYPES)


class TableSink:
    """One table being written: `write` chunks in, `close` when done (returns the rows)."""

    def __init__(self, writer: ReleaseWriter, name: str, columns: dict[str, str],
                 csv_handle, parquet_path: Path) -> None:
        self.name = name
        self.columns = dict(columns)
        self.rows = 0
        self.closed = False
        self._writer = writer
        self._csv = csv_handle
        self.schema = pa.schema([
            pa.field(column, LOGICAL_TYPES[logical], nullable=True,
                     metadata={"logical_type": logical})
            for column, logical in self.columns.items()
        ])
        self._parquet = pq.ParquetWriter(
            str(parquet_path), self.schema, compression=PARQUET_COMPRESSION,
            compression_level=PARQUET_COMPRESSION_LEVEL, version="2.6",
            use_dictionary=True, write_statistics=True, store_schema=True)
        self._parquet_path = parquet_path
        self._csv.write(csv_text([self.columns]).encode("utf-8"))

    def write(self, chunk: pd.DataFrame) -> None:
        """Append the chunk's rows (its columns must be the declared ones, in any order)."""
        if self.closed:
            raise ValueError(f"Table {self.name!r} is closed.")
        given = list(chunk.columns)
        if len(set(given)) != len(given) or set(given) != set(self.columns):
            missing = [c for c in self.columns if c not in given]
            extra = [c for c in given if c not in self.columns]
            raise ValueError(
                f"Table {self.name!r}: the chunk's columns differ from the declaration "
                f"(missing {missing}, not declared {extra}, repeated "
                f"{sorted({c for c in given if given.count(c) > 1})}).")
        if len(chunk) == 0:
            return
        arrays = [_arrow_array(chunk[c], logical, c) for c, logical in self.columns.items()]
        fields = [_csv_fields(a, logical) for a, logical in zip(arrays, self.columns.values(),
                                                                  strict=True)]
        if len(fields) == 1:
            # A line with one empty field would be blank, and readers skip blank lines.
            fields = [pc.if_else(pc.equal(fields[0], ""), '""', fields[0])]
        self._csv.write(_csv_bytes(fields))
        self._parquet.write_table(pa.Table.from_arrays(arrays, schema=self.schema),
                                  row_group_size=len(chunk))
        self.rows += len(chunk)

    def close(self) -> int:
        if not self.closed:
            self.closed = True
            self._csv.close()
            self._parquet.close()
            os.chmod(self._parquet_path, FILE_PERMISSIONS)
            self._writer._table_closed(self)
        return self.rows

    def _abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._csv.close()
            self._parquet.close()


class ReleaseWriter:
    """Writes one release folder (new, or empty). Tables are written one after another:
    `table()` opens one, its sink's `close()` ends it. `close()` writes manifest.json last and
    returns the Manifest; on an error inside `with ReleaseWriter(...)`, the files are closed
    and no manifest is written."""

    def __init__(self, folder: Path, *, csv_zip_name: str = CSV_ZIP_NAME) -> None:
        self.folder = Path(folder)
        self._check_file_name(csv_zip_name)
        if not csv_zip_name.endswith(".zip"):
            raise ValueError(f"The CSV archive's name must end in .zip: {csv_zip_name!r}.")
        self.folder.mkdir(parents=True, exist_ok=True)
        if any(self.folder.iterdir()):
            raise ValueError(f"The release folder {self.folder} is not empty.")
        self.csv_zip_name = csv_zip_name
        self._zip: zipfile.ZipFile | None = None
        self._names: set[str] = {MANIFEST_NAME.lower(), csv_zip_name.lower()}
        self._tables: dict[str, int | None] = {}
        self._texts: list[str] = []
        self._open: TableSink | None = None
        self.closed = False

    def __enter__(self) -> ReleaseWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is not None:
            self.abort()
        elif not self.closed:
            self.close()

    @staticmethod
    def _check_file_name(name: object) -> None:
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or ".." in name:
            raise ValueError(
                f"{name!r} is not a file name of a release (letters, digits, '.', '_', '-').")

    def _claim(self, name: str) -> None:
        # Case-insensitively: README.md and readme.md are one file on some systems.
        if name.lower() in self._names:
            raise ValueError(f"The release already has a file named {name!r}.")
        self._names.add(name.lower())

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("The release is closed.")

    def table(self, name: str, columns: dict[str, str]) -> TableSink:
        """Start the table `name`, its columns in order, each with a logical type (one of
        LOGICAL_TYPES)."""
        self._check_open()
        if self._open is not None:
            raise ValueError(
                f"Table {self._open.name!r} is still being written; close it first.")
        if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a table name (letters, digits, '_', '-'; at most 64).")
        if not isinstance(columns, dict) or not columns:
            raise ValueError(f"Table {name!r} declares no columns.")
        for column, logical in columns.items():
            _check_column_name(column)
            if logical not in LOGICAL_TYPES:
                raise ValueError(
                    f"Column {column!r} of table {name!r} has the unknown type {logical!r} "
                    f"(known: {', '.join(LOGICAL_TYPES)}).")
        if name in self._tables:
            raise ValueError(f"The release already has a table {name!r}.")
        self._claim(f"{name}.parquet")
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.folder / self.csv_zip_name, "w",
                                        compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        entry = zipfile.ZipInfo(f"{name}.csv", date_time=ZIP_DATE_TIME)
        entry.compress_type = zipfile.ZIP_DEFLATED
        entry._compresslevel = ZIP_COMPRESS_LEVEL  # the attribute ZipFile.open("w") reads
        entry.create_system = 3  # Unix, whatever system builds it
        entry.external_attr = (0o100000 | ZIP_PERMISSIONS) << 16
        handle = self._zip.open(entry, "w", force_zip64=True)
        self._tables[name] = None
        self._open = TableSink(self, name, columns, handle, self.folder / f"{name}.parquet")
        return self._open

    def _table_closed(self, sink: TableSink) -> None:
        self._tables[sink.name] = sink.rows
        self._open = None

    def text(self, name: str, content: str) -> None:
        """A text file of the release (UTF-8, written as given)."""
        self._check_open()
        self._check_file_name(name)
        if not isinstance(content, str):
            raise TypeError(f"The content of {name!r} must be text.")
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"{name!r} holds text that is not Unicode: {error}") from error
        self._claim(name)
        path = self.folder / name
        path.write_bytes(data)
        os.chmod(path, FILE_PERMISSIONS)
        self._texts.append(name)

    def close(self) -> Manifest:
        """Close the open table, the CSV archive, and write manifest.json last."""
        self._check_open()
        if self._open is not None:
            self._open.close()
        self.closed = True
        names = [f"{table}.parquet" for table in self._tables] + list(self._texts)
        if self._zip is not None:
            self._zip.close()
            os.chmod(self.folder / self.csv_zip_name, FILE_PERMISSIONS)
            names.append(self.csv_zip_name)
        rows_of = {f"{table}.parquet": rows for table, rows in self._tables.items()}
        files = tuple(
            ManifestFile(name=name, bytes=(self.folder / name).stat().st_size,
                         sha256=_sha256(self.folder / name), rows=rows_of.get(name))
            for name in sorted(names)
        )
        tables = {table: int(rows or 0) for table, rows in sorted(self._tables.items())}
        manifest = Manifest(files=files, tables=tables)
        data = _json_bytes(manifest.to_dict())
        path = self.folder / MANIFEST_NAME
        path.write_bytes(data)
        os.chmod(path, FILE_PERMISSIONS)
        return Manifest(files=files, tables=tables, sha256=hashlib.sha256(data).hexdigest())

    def abort(self) -> None:
        """Close every file without a manifest (the folder stays an unfinished build)."""
        if self.closed:
            return
        self.closed = True
        if self._open is not None:
            self._open._abort()
            self._open = None
        if self._zip is not None:
            self._zip.close()


def read_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))


def verify(folder: Path) -> list[str]:
    """What is wrong with a release folder against its manifest: a missing, changed or
    unlisted file. An empty list means every byte is as built."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        return [f"{MANIFEST_NAME} is missing: the build did not finish."]
    problems = []
    listed = set()
    for entry in read_manifest(folder).get("files", []):
        name = entry["name"]
        listed.add(name)
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing.")
        elif path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            problems.append(f"{name} differs from the manifest.")
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST_NAME and path.name not in listed:
            problems.append(f"{path.name} is not in the manifest.")
    return problems

