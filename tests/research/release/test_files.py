"""The release writer: byte-identical rebuilds (another process, another time zone), CSV and
Parquet that read back as written, a manifest that matches the files, streaming in bounded
memory, and refusals of what does not fit the declaration."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from research.release import files
from research.release.files import ReleaseWriter, verify
from tests.research.release import PROPERTY
from tests.research.release.sample import build

REPOSITORY = Path(__file__).resolve().parents[3]

# The pandas dtype each logical type reads back as (CSV and Parquet alike).
READ_DTYPES = {"string": "string", "int": "Int64", "float": "Float64", "bool": "boolean",
               "date_days": "Int64", "category": "string"}

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                       blacklist_characters="\x00"), max_size=12)
VALUES = {
    "string": st.one_of(st.none(), texts, st.sampled_from(["NA", "null", ",", '"', "\r\n"])),
    "int": st.one_of(st.none(), st.integers(min_value=-2**63, max_value=2**63 - 1)),
    "float": st.one_of(st.none(), st.floats(allow_infinity=False)),
    "bool": st.one_of(st.none(), st.booleans()),
    "date_days": st.one_of(st.none(), st.integers(min_value=-2**31, max_value=2**31 - 1)),
    "category": st.one_of(st.none(), st.sampled_from(["55-59", "*", "M", "中文", "a,b", ""])),
}
INPUT_DTYPES = {"string": object, "int": "Int64", "float": "float64", "bool": "boolean",
                "date_days": "Int64", "category": object}


@st.composite
def tables(draw):
    types = draw(st.lists(st.sampled_from(sorted(files.LOGICAL_TYPES)), min_size=1,
                          max_size=6))
    columns = {f"c{i}_{t}": t for i, t in enumerate(types)}
    rows = draw(st.integers(min_value=0, max_value=40))
    frame = pd.DataFrame({
        name: pd.Series(draw(st.lists(VALUES[t], min_size=rows, max_size=rows)),
                        dtype=INPUT_DTYPES[t])
        for name, t in columns.items()
    })
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=4)))
    chunks = [frame.iloc[a:b] for a, b in zip([0, *cuts], [*cuts, rows], strict=True)]
    return columns, frame, chunks


def expected(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """What a reader gets back: the declared types, an empty text as missing."""
    out = {}
    for name, logical in columns.items():
        values = frame[name].astype(READ_DTYPES[logical])
        if logical in {"string", "category"}:
            values = values.mask(values == "")
        out[name] = values
    return pd.DataFrame(out).reset_index(drop=True)


def read_csv(folder: Path, table: str, columns: dict[str, str]) -> pd.DataFrame:
    with zipfile.ZipFile(folder / files.CSV_ZIP_NAME) as archive:
        data = archive.read(f"{table}.csv")
    return pd.read_csv(io.BytesIO(data), dtype={c: READ_DTYPES[t] for c, t in columns.items()},
                       keep_default_na=False, na_values=[""], encoding="utf-8")


def read_parquet(folder: Path, table: str, columns: dict[str, str]) -> pd.DataFrame:
    frame = pd.read_parquet(folder / f"{table}.parquet", dtype_backend="numpy_nullable")
    return frame.astype({c: READ_DTYPES[t] for c, t in columns.items()})


def write(folder: Path, columns: dict[str, str], chunks: list[pd.DataFrame],
          table: str = "t") -> files.Manifest:
    writer = ReleaseWriter(folder)
    sink = writer.table(table, columns)
    for chunk in chunks:
        sink.write(chunk)
    sink.close()
    return writer.close()


def csv_entry(folder: Path, table: str = "t") -> bytes:
    with zipfile.ZipFile(folder / files.CSV_ZIP_NAME) as archive:
        return archive.read(f"{table}.csv")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- determinism --------------------------------------------------------------------------

def test_two_builds_in_different_processes_and_time_zones_are_byte_identical(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        manifest = build(tmp_path / "here")
    finally:
        monkeypatch.undo()
        time.tzset()
    env = {**os.environ, "TZ": "Asia/Shanghai", "PYTHONHASHSEED": "4242"}
    subprocess.run([sys.executable, "-m", "tests.research.release.sample",
                    str(tmp_path / "there")], cwd=REPOSITORY, env=env, check=True)

    here, there = folder_bytes(tmp_path / "here"), folder_bytes(tmp_path / "there")
    assert sorted(here) == sorted(there) == sorted(
        ["README.md", "codebook.csv", "codebook.md", "concepts.csv", "cycles.parquet",
         "data-csv.zip", "k-anonymity.json", "manifest.json", "patients.parquet"])
    for name in here:
        assert here[name] == there[name], name
    assert manifest.sha256 == hashlib.sha256(here["manifest.json"]).hexdigest()
    assert verify(tmp_path / "there") == []


def test_zip_entries_and_parquet_files_carry_nothing_that_varies(tmp_path):
    build(tmp_path)
    with zipfile.ZipFile(tmp_path / files.CSV_ZIP_NAME) as archive:
        assert archive.testzip() is None
        entries = archive.infolist()
        assert [e.filename for e in entries] == ["patients.csv", "cycles.csv"]
        for entry in entries:
            assert entry.date_time == (1980, 1, 1, 0, 0, 0)
            assert entry.external_attr >> 16 == 0o100644
            assert entry.create_system == 3
            assert entry.compress_type == zipfile.ZIP_DEFLATED
            assert entry.comment == b""
        assert archive.comment == b""
    for table, chunks in (("patients", 3), ("cycles", 4)):
        metadata = pq.read_metadata(tmp_path / f"{table}.parquet")
        assert metadata.created_by == f"parquet-cpp-arrow version {pa.__version__}"
        assert set(metadata.metadata) == {b"ARROW:schema"}
        assert metadata.num_row_groups == chunks
        schema = pq.read_schema(tmp_path / f"{table}.parquet")
        assert schema.metadata is None or b"pandas" not in schema.metadata
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert set(modes.values()) == {0o644}


# --- what is written reads back -----------------------------------------------------------

@PROPERTY
@given(table=tables())
def test_csv_and_parquet_read_back_as_written(tmp_path_factory, table):
    columns, frame, chunks = table
    folder = tmp_path_factory.mktemp("release")
    manifest = write(folder, columns, chunks)
    want = expected(frame, columns)
    pd.testing.assert_frame_equal(read_csv(folder, "t", columns), want, check_exact=True)
    pd.testing.assert_frame_equal(read_parquet(folder, "t", columns), want, check_exact=True)
    assert manifest.tables == {"t": len(frame)}
    schema = pq.read_schema(folder / "t.parquet")
    assert schema.names == list(columns)
    assert [schema.field(c).type for c in columns] == [
        files.LOGICAL_TYPES[t] for t in columns.values()]


@PROPERTY
@given(table=tables())
def test_chunked_writing_gives_the_csv_of_one_chunk(tmp_path_factory, table):
    columns, frame, chunks = table
    chunked, whole = tmp_path_factory.mktemp("chunked"), tmp_path_factory.mktemp("whole")
    write(chunked, columns, chunks)
    write(whole, columns, [frame])
    assert csv_entry(chunked) == csv_entry(whole)
    assert pq.read_metadata(chunked / "t.parquet").num_row_groups == sum(
        1 for c in chunks if len(c))
    pd.testing.assert_frame_equal(read_parquet(chunked, "t", columns),
                                  read_parquet(whole, "t", columns))


def test_csv_text_by_example(tmp_path):
    columns = {"id": "string", "n": "int", "x": "float", "ok": "bool", "day": "date_days",
               "band": "category"}
    write(tmp_path, columns, [pd.DataFrame({
        "id": ["S1", 'say "hi", twice', "line\nbreak", "", None],
        "n": pd.array([1, None, -3, 2**62, 0], dtype="Int64"),
        "x": [0.1, np.nan, 1e16, 2.0, -0.0],
        "ok": pd.array([True, None, False, True, False], dtype="boolean"),
        "day": pd.array([0, -5, None, 3, 12], dtype="Int64"),
        "band": ["55-59", "*", None, "90+", "中文"],
    })])
    assert csv_entry(tmp_path).decode("utf-8") == (
        "id,n,x,ok,day,band\n"
        "S1,1,0.1,true,0,55-59\n"
        '"say ""hi"", twice",,,,-5,*\n'
        '"line\nbreak",-3,1e+16,false,,\n'
        ",4611686018427387904,2.0,true,3,90+\n"
        ",0,-0.0,false,12,中文\n")


def test_a_table_of_one_column_keeps_its_missing_rows(tmp_path):
    write(tmp_path, {"x": "float"}, [pd.DataFrame({"x": [1.5, np.nan, np.nan]})])
    assert csv_entry(tmp_path) == b'x\n1.5\n""\n""\n'
    back = read_csv(tmp_path, "t", {"x": "float"})
    assert len(back) == 3 and back["x"].isna().tolist() == [False, True, True]


def test_a_table_with_no_rows_has_its_header_and_schema(tmp_path):
    manifest = write(tmp_path, {"a": "int", "b": "category"}, [])
    assert csv_entry(tmp_path) == b"a,b\n"
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 0
    assert pq.read_schema(tmp_path / "t.parquet").field("b").type == files.LOGICAL_TYPES[
        "category"]
    assert manifest.tables == {"t": 0}


# --- the manifest -------------------------------------------------------------------------

def test_the_manifest_lists_every_file_with_its_size_and_hash(tmp_path):
    manifest = build(tmp_path)
    text = (tmp_path / files.MANIFEST_NAME).read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False,
                              separators=(",", ": ")) + "\n"
    names = [entry["name"] for entry in data["files"]]
    assert names == sorted(p.name for p in tmp_path.iterdir() if p.name != "manifest.json")
    for entry in data["files"]:
        content = (tmp_path / entry["name"]).read_bytes()
        assert entry["bytes"] == len(content)
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
        if entry["name"].endswith(".parquet"):
            assert entry["rows"] == pq.read_metadata(tmp_path / entry["name"]).num_rows
        else:
            assert "rows" not in entry
    assert data["tables"] == {"cycles": 300, "patients": 60}
    assert data == manifest.to_dict()
    assert verify(tmp_path) == []


def test_verify_finds_a_changed_a_missing_and_an_unlisted_file(tmp_path):
    build(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_bytes(readme.read_bytes().replace(b"Sample", b"Simple"))
    (tmp_path / "concepts.csv").unlink()
    (tmp_path / "extra.txt").write_text("x")
    assert verify(tmp_path) == ["README.md differs from the manifest.",
                                "concepts.csv is missing.",
                                "extra.txt is not in the manifest."]
    (tmp_path / files.MANIFEST_NAME).unlink()
    assert verify(tmp_path) == ["manifest.json is missing: the build did not finish."]


def test_an_error_inside_the_writer_leaves_no_manifest(tmp_path):
    with pytest.raises(RuntimeError), ReleaseWriter(tmp_path) as writer:
        writer.table("t", {"a": "int"}).write(pd.DataFrame({"a": [1, 2]}))
        raise RuntimeError("the cohort could not be read")
    assert not (tmp_path / files.MANIFEST_NAME).exists()
    assert verify(tmp_path) == ["manifest.json is missing: the build did not finish."]
    with pytest.raises(ValueError, match="closed"):
        writer.text("README.md", "late")


# --- bounded memory -----------------------------------------------------------------------

def test_fifty_chunks_of_a_hundred_thousand_rows_stream_in_bounded_memory(tmp_path):
    rows, chunks = 100_000, 50
    arms = pd.Series(np.tile(np.array(["control", "treated"], dtype=object), rows // 2))
    writer = ReleaseWriter(tmp_path)
    sink = writer.table("big", {"id": "int", "arm": "category"})
    arrow_held = []
    tracemalloc.start()
    try:
        for n in range(chunks):
            sink.write(pd.DataFrame({"id": np.arange(n * rows, (n + 1) * rows), "arm": arms}))
            arrow_held.append(pa.total_allocated_bytes())
        sink.close()
        writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with zipfile.ZipFile(tmp_path / files.CSV_ZIP_NAME) as archive:
        total = archive.getinfo("big.csv").file_size
    assert total > 50 * 2**20  # what was written: more than 50 MiB of CSV
    assert peak < total / 10  # Python's allocations: a few chunks' worth, never the table
    assert max(arrow_held) < total / 10  # nor does Arrow keep what was written
    assert pq.read_metadata(tmp_path / "big.parquet").num_rows == rows * chunks


# --- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "columns", "message"), [
    ("t", {}, "declares no columns"),
    ("t", {"a": "text"}, "unknown type 'text'"),
    ("t", {"a": "date"}, "unknown type 'date'"),
    ("t", {"": "int"}, "column name"),
    ("t", {"a\nb": "int"}, "control character"),
    ("t", {"x" * 129: "int"}, "column name"),
    ("../escape", {"a": "int"}, "not a table name"),
    ("a/b", {"a": "int"}, "not a table name"),
    ("", {"a": "int"}, "not a table name"),
    ("x" * 65, {"a": "int"}, "not a table name"),
    ("t.csv", {"a": "int"}, "not a table name"),
])
def test_bad_declarations_are_refused(tmp_path, name, columns, message):
    writer = ReleaseWriter(tmp_path)
    with pytest.raises(ValueError, match=message):
        writer.table(name, columns)
    assert writer.close().files == ()


@pytest.mark.parametrize(("columns", "chunk", "message"), [
    ({"a": "int"}, pd.DataFrame({"b": [1]}), "differ from the declaration"),
    ({"a": "int"}, pd.DataFrame({"a": [1], "b": [2]}), "differ from the declaration"),
    ({"a": "int", "b": "int"}, pd.DataFrame([[1, 2]], columns=["a", "a"]),
     "differ from the declaration"),
    ({"a": "int"}, pd.DataFrame({"a": [1.5]}), "does not hold int"),
    ({"a": "int"}, pd.DataFrame({"a": ["1"]}), "does not hold int"),
    ({"a": "int"}, pd.DataFrame({"a": [True]}), "holds booleans"),
    ({"a": "int"}, pd.DataFrame({"a": np.array([2**64 - 1], dtype=np.uint64)}),
     "does not hold int"),
    ({"a": "date_days"}, pd.DataFrame({"a": [2**40]}), "does not hold date_days"),
    ({"a": "float"}, pd.DataFrame({"a": [1.0, float("inf")]}), "infinite"),
    ({"a": "float"}, pd.DataFrame({"a": ["1.0"]}), "does not hold float"),
    ({"a": "bool"}, pd.DataFrame({"a": [0, 1]}), "declared bool"),
    ({"a": "bool"}, pd.DataFrame({"a": [1, None]}, dtype=object), "does not hold bool"),
    ({"a": "string"}, pd.DataFrame({"a": [1]}, dtype=object), "does not hold string"),
    ({"a": "string"}, pd.DataFrame({"a": ["x\x00y"]}), "NUL"),
    ({"a": "category"}, pd.DataFrame({"a": ["\ud800"]}), "does not hold category"),
])
def test_chunks_that_do_not_fit_the_declaration_are_refused(tmp_path, columns, chunk,
                                                            message):
    writer = ReleaseWriter(tmp_path)
    sink = writer.table("t", columns)
    with pytest.raises(ValueError, match=message):
        sink.write(chunk)
    assert sink.close() == 0


def test_the_writer_refuses_misuse(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "left-over.csv").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        ReleaseWriter(tmp_path / "old")
    with pytest.raises(ValueError, match="end in .zip"):
        ReleaseWriter(tmp_path / "a", csv_zip_name="data.tar")
    with pytest.raises(ValueError, match="not a file name"):
        ReleaseWriter(tmp_path / "b", csv_zip_name="../data.zip")

    writer = ReleaseWriter(tmp_path / "new")
    sink = writer.table("patients", {"a": "int"})
    with pytest.raises(ValueError, match="still being written"):
        writer.table("cycles", {"a": "int"})
    sink.close()
    with pytest.raises(ValueError, match="is closed"):
        sink.write(pd.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="already has a table"):
        writer.table("patients", {"a": "int"})
    writer.text("README.md", "# Release\n")
    for name in ("readme.md", "patients.parquet", "manifest.json", "data-csv.zip"):
        with pytest.raises(ValueError, match="already has a file"):
            writer.text(name, "x")
    for name in ("../x.md", "a/b.md", ".hidden", "x..md", ""):
        with pytest.raises(ValueError, match="not a file name"):
            writer.text(name, "x")
    with pytest.raises(ValueError, match="not Unicode"):
        writer.text("bad.txt", "\ud800")
    with pytest.raises(TypeError):
        writer.text("bytes.txt", b"x")
    manifest = writer.close()
    assert [f.name for f in manifest.files] == ["README.md", "data-csv.zip", "patients.parquet"]
    with pytest.raises(ValueError, match="closed"):
        writer.table("late", {"a": "int"})
    with pytest.raises(ValueError, match="closed"):
        writer.close()
