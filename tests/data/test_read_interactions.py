"""Interaction readers: every format from small files the tests write, and every kind of bad input."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recengine.data.dataset import TEST
from recengine.data.readers import (
    ColumnMapping,
    detect_format,
    read_interactions,
)
from recengine.data.transforms import RAW_SCHEMA, build_dataset
from recengine.data.validation import (
    BAD_RATING,
    BAD_TIMESTAMP,
    FIELD_COUNT,
    MISSING_ITEM,
    MISSING_USER,
    NEGATIVE_WEIGHT,
    TIMESTAMP_RANGE,
)
from recengine.errors import DataError, ValidationFailed


def write(dir_: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = dir_ / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def triples(raw: pl.DataFrame) -> list[tuple[str, str, int]]:
    return list(raw.select("user", "item", "timestamp").iter_rows())


def epoch(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


# ---- CSV / TSV / Parquet -----------------------------------------------------------------------------------
def test_csv_with_common_column_names(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "user_id,item_id,timestamp,rating\nu1,i1,100,4.5\nu2,i2,90,\nu1,i3,110,3\n")
    raw, report = read_interactions(path)
    assert raw.schema == pl.Schema(RAW_SCHEMA)
    assert triples(raw) == [("u1", "i1", 100), ("u2", "i2", 90), ("u1", "i3", 110)]
    assert raw.get_column("rating").to_list() == [4.5, None, 3.0]
    assert raw.get_column("row").to_list() == [0, 1, 2]
    assert report.n_rejected == 0 and report.n_read == 3


def test_csv_camel_case_and_explicit_mapping(tmp_path: Path) -> None:
    camel = write(tmp_path, "a.csv", "userId,movieId,rating,time\n7,42,5,1000\n")
    raw, _ = read_interactions(camel)
    assert triples(raw) == [("7", "42", 1000)]

    custom = write(tmp_path, "b.csv", "who,what,when,stars,kind,w\nA,X,5,2,click,1.5\nA,Y,6,4,buy,2\n")
    mapping = ColumnMapping.from_options(
        user="who", item="what", timestamp="WHEN", rating=None, event="kind", weight="w"
    )
    raw, _ = read_interactions(custom, mapping=mapping)
    assert triples(raw) == [("A", "X", 5), ("A", "Y", 6)]
    assert raw.get_column("rating").to_list() == [2.0, 4.0]  # found by its usual name "stars"
    assert raw.get_column("event").to_list() == ["click", "buy"]
    assert raw.get_column("weight").to_list() == [1.5, 2.0]


def test_mapping_rejects_unknown_roles() -> None:
    with pytest.raises(DataError, match="unknown column role"):
        ColumnMapping.from_options(usr="x")


def test_tsv_and_detected_tsv(tmp_path: Path) -> None:
    text = "user\titem\tts\nu1\ti1\t5\nu1\ti2\t6\n"
    raw, _ = read_interactions(write(tmp_path, "x.tsv", text))
    assert triples(raw) == [("u1", "i1", 5), ("u1", "i2", 6)]
    txt = write(tmp_path, "x.txt", text)
    assert detect_format(txt) == "tsv"
    assert triples(read_interactions(txt)[0]) == [("u1", "i1", 5), ("u1", "i2", 6)]


def test_iso_timestamps_become_seconds(tmp_path: Path) -> None:
    text = (
        "user,item,timestamp\n"
        "u,a,2024-05-01\n"
        "u,b,2024-05-01T12:30:00\n"
        "u,c,2024-05-01 12:30:00.5\n"
        "u,d,2024-05-01T12:30:00Z\n"
        "u,e,2024-05-01T12:30:00+02:00\n"
        "u,f,2024-05-01T12:30\n"
        "u,g,1714566600.9\n"
    )
    raw, report = read_interactions(write(tmp_path, "t.csv", text))
    noon = epoch(2024, 5, 1, 12, 30)
    assert raw.get_column("timestamp").to_list() == [
        epoch(2024, 5, 1),
        noon,
        noon,
        noon,
        noon - 7200,
        noon,
        1714566600,
    ]
    assert report.n_rejected == 0


def test_csv_without_timestamp_uses_file_order(tmp_path: Path) -> None:
    raw, report = read_interactions(write(tmp_path, "x.csv", "user,item\nu,b\nu,a\n"))
    assert raw.get_column("item").to_list() == ["b", "a"]
    assert raw.get_column("timestamp").is_null().all()  # conform() turns the input order into time
    assert any("no timestamp column" in n for n in report.notes)


def test_parquet_typed_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pl.DataFrame(
        {
            "user_id": [1, 2, 1],
            "item_id": [10, 20, 30],
            "time": [datetime(2024, 1, 1), datetime(2024, 1, 2), datetime(2024, 1, 3)],
            "rating": [1.0, None, 5.0],
        }
    ).write_parquet(path)
    raw, report = read_interactions(path)
    assert triples(raw) == [
        ("1", "10", epoch(2024, 1, 1)),
        ("2", "20", epoch(2024, 1, 2)),
        ("1", "30", epoch(2024, 1, 3)),
    ]
    assert raw.get_column("rating").to_list() == [1.0, None, 5.0]
    assert report.n_rejected == 0


def test_parquet_numeric_timestamps_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.pq"
    pl.DataFrame({"user": ["a", None, "b"], "item": ["x", "y", "z"], "ts": [5.7, 6.0, -1.0]}).write_parquet(path)
    raw, report = read_interactions(path)
    assert triples(raw) == [("a", "x", 5)]
    assert [(r.line, r.reason) for r in report.rejections] == [(2, MISSING_USER), (3, TIMESTAMP_RANGE)]


# ---- MovieLens ---------------------------------------------------------------------------------------------
def test_movielens_u_data_ratings_dat_and_ratings_csv(tmp_path: Path) -> None:
    expected = [("1", "10", 881250949), ("2", "20", 881250950)]
    udata = write(tmp_path, "u.data", "1\t10\t3\t881250949\n2\t20\t5\t881250950\n")
    raw, _ = read_interactions(udata)
    assert triples(raw) == expected
    assert raw.get_column("rating").to_list() == [3.0, 5.0]

    dat = write(tmp_path, "ratings.dat", "1::10::3::881250949\n2::20::5::881250950\n")
    assert triples(read_interactions(dat)[0]) == expected

    rcsv = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,10,3.5,881250949\n2,20,5,881250950\n")
    raw, _ = read_interactions(rcsv, fmt="movielens")
    assert triples(raw) == expected
    assert raw.get_column("rating").to_list() == [3.5, 5.0]


def test_movielens_folder_and_content_detection(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    write(folder, "ratings.dat", "1::10::3::100\n")
    assert triples(read_interactions(folder)[0]) == [("1", "10", 100)]
    assert triples(read_interactions(folder, fmt="movielens")[0]) == [("1", "10", 100)]
    renamed = write(tmp_path, "ratings.txt", "1::10::3::100\n")
    assert detect_format(renamed) == "movielens"
    tabbed = write(tmp_path, "plain.txt", "1\t10\t3\t100\n")
    assert detect_format(tabbed) == "movielens"
    assert triples(read_interactions(tabbed)[0]) == [("1", "10", 100)]


def test_movielens_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "1\t10\t3\t100\n1\t11\t3\n1\t12\tfive\t101\n1\t13\t4\tyesterday\n")
    raw, report = read_interactions(path)
    assert triples(raw) == [("1", "10", 100)]
    assert [(r.line, r.column, r.reason) for r in report.rejections] == [
        (2, "*", FIELD_COUNT),
        (3, "rating", BAD_RATING),
        (4, "timestamp", BAD_TIMESTAMP),
    ]


# ---- sequences / pairs -------------------------------------------------------------------------------------
def test_sequences_positions_are_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "seq.txt", "u1 a b c\n\nu2 d\tb\r\nu1 e\n")
    raw, report = read_interactions(path, fmt="sequences")
    assert triples(raw) == [("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 2), ("u2", "d", 0), ("u2", "b", 1),
                            ("u1", "e", 3)]  # fmt: skip
    assert raw.get_column("row").to_list() == list(range(6))
    assert report.n_read == 6 and report.n_rejected == 0
    assert detect_format(path) == "sequences"
    ds = build_dataset(raw)  # the continuation line extends u1's sequence
    assert ds.items.ids.decode(ds.sequences(max_split=TEST)[ds.users.index("u1")]) == ["a", "b", "c", "e"]


def test_sequences_line_without_items_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "seq.txt", "u1 a b\nlonely\nu2 c\n")
    raw, report = read_interactions(path, fmt="sequences")
    assert raw.get_column("user").to_list() == ["u1", "u1", "u2"]
    [rej] = report.rejections
    assert (rej.line, rej.reason, rej.column) == (2, FIELD_COUNT, "*")
    assert "lonely" in rej.value
    with pytest.raises(ValidationFailed, match=r"seq\.txt:2: .*wrong field count"):
        read_interactions(path, fmt="sequences", on_invalid="fail")


def test_pairs_time_order_is_line_order(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.txt", "u1 a\nu2 b\nu1 c\n\nu2 a\n")
    assert detect_format(path) == "pairs"
    raw, _ = read_interactions(path)
    assert triples(raw) == [("u1", "a", 1), ("u2", "b", 2), ("u1", "c", 3), ("u2", "a", 5)]


def test_pairs_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path, "p.txt", "u1 a\nu1 b extra\nu2\nu2 c\n")
    raw, report = read_interactions(path, fmt="pairs")
    assert triples(raw) == [("u1", "a", 1), ("u2", "c", 4)]
    assert [(r.line, r.reason) for r in report.rejections] == [(2, FIELD_COUNT), (3, FIELD_COUNT)]
    assert report.n_read == 4


# ---- validation of rows ------------------------------------------------------------------------------------
def test_every_rejected_row_is_reported_with_its_line(tmp_path: Path) -> None:
    text = (
        "user,item,timestamp,rating,weight\n"  # 1
        "u1,i1,10,4,1\n"  # 2 ok
        "u1,i2,abc,4,1\n"  # 3 non-numeric timestamp
        ",i3,11,4,1\n"  # 4 missing user
        "u2,,12,4,1\n"  # 5 missing item
        "u2,i4,-5,4,1\n"  # 6 negative timestamp
        "u2,i5,1700000000000,4,1\n"  # 7 milliseconds: out of range
        "u2,i6,13,good,1\n"  # 8 non-numeric rating
        "u2,i7,14,4,-1\n"  # 9 negative weight
        "\n"  # 10 blank: skipped, not rejected
        '"u\n3",i8,15,4,1\n'  # 11-12 a quoted line break
        "u3,i9,16,4,1,surplus\n"  # 13 one field too many
        "u3,i10,17,4,1\n"  # 14 ok
    )
    raw, report = read_interactions(write(tmp_path, "bad.csv", text))
    assert raw.get_column("item").to_list() == ["i1", "i8", "i10"]
    got = [(r.line, r.column, r.reason) for r in report.rejections]
    assert got == [
        (3, "timestamp", BAD_TIMESTAMP),
        (4, "user", MISSING_USER),
        (5, "item", MISSING_ITEM),
        (6, "timestamp", TIMESTAMP_RANGE),
        (7, "timestamp", TIMESTAMP_RANGE),
        (8, "rating", BAD_RATING),
        (9, "weight", NEGATIVE_WEIGHT),
        (13, "*", FIELD_COUNT),
    ]
    assert report.rejections[0].value == "abc"
    assert report.n_read == 11 and report.n_rejected == 8
    assert report.counts[TIMESTAMP_RANGE] == 2


def test_fail_policy_names_file_line_column_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", "user,item,timestamp\nu1,i1,10\nu1,i2,yesterday\n")
    with pytest.raises(ValidationFailed) as info:
        read_interactions(path, on_invalid="fail")
    message = str(info.value)
    assert f"{path}:3: column 'timestamp': {BAD_TIMESTAMP}" in message
    assert "yesterday" in message and "\n" not in message
    assert info.value.report is not None and info.value.report.n_rejected == 1  # type: ignore[attr-defined]


def test_all_rows_invalid_is_a_data_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", "user,item,timestamp\nu1,i1,x\nu1,i2,y\n")
    with pytest.raises(DataError, match=rf"{path}: no valid rows.*bad\.csv:2: column 'timestamp'"):
        read_interactions(path)


# ---- files that cannot be read -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "fmt", "pattern"),
    [
        ("nouser.csv", "person,item\nu,i\n", "auto", r"line 1: missing required user column"),
        ("noitem.csv", "user,thing,timestamp\nu,i,1\n", "auto", r"line 1: missing required item column"),
        ("empty.csv", "", "auto", r"the file is empty"),
        ("blank.txt", "\n \n", "auto", r"the file is empty"),
        ("empty.txt", "", "sequences", r"the file is empty"),
        ("header.csv", "user,item\n", "auto", r"no data rows after the header \(line 1\)"),
        ("garbage.csv", bytes(range(256)) * 8, "auto", r"line 1: binary data"),
        ("garbage.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "auto", r"binary data"),
        ("latin.csv", "user,item\nu,caf\xe9\n".encode("latin-1"), "csv", r"line 2: not utf-8 text"),
        ("garbage.parquet", b"PAR1 not really", "auto", r"cannot read Parquet"),
        ("text.parquet", b"user,item\n", "parquet", r"not a Parquet file"),
        ("quote.csv", 'user,item\n"u,i\n', "csv", r"cannot parse as CSV"),
        ("x.csv", "user,item\nu,i\n", "xml", r"unknown format 'xml'"),
    ],
)
def test_unreadable_files_give_one_line_naming_the_file(
    tmp_path: Path, name: str, content: str | bytes, fmt: str, pattern: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        read_interactions(path, fmt=fmt)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert re.search(pattern, message), message


def test_explicit_column_that_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "user,item,ts\nu,i,1\n")
    with pytest.raises(DataError, match=r"line 1: no column 'when' for the timestamp \(the header has: 'user'"):
        read_interactions(path, mapping=ColumnMapping(timestamp="when"))


def test_missing_paths_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="directory without MovieLens ratings"):
        read_interactions(tmp_path)
    with pytest.raises(DataError, match="is a directory"):
        read_interactions(tmp_path, fmt="csv")
    with pytest.raises(DataError, match="on_invalid must be"):
        read_interactions(tmp_path, on_invalid="ignore")


def test_detection_corner_cases(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "nope.txt")
    late = write(tmp_path, "late.txt", "\n" * 300 + "u a\n")
    with pytest.raises(DataError, match="the file is empty"):
        detect_format(late)  # nothing but blank lines where the sniffer looks
    words = write(tmp_path, "words.txt", "a\tb\tc\td\n")
    assert detect_format(words) == "sequences"
    with pytest.raises(DataError, match=r"line 1: not utf-8 text \(byte 0xe9\)"):
        detect_format(write(tmp_path, "latin.txt", "u caf\xe9\n".encode("latin-1")))
    # The sniffed prefix may end in the middle of a character: that is not an encoding error.
    long = write(tmp_path, "long.txt", "u" + "a" * 65534 + "é b\n")
    assert detect_format(long) == "sequences"


def test_parquet_without_rows_or_bytes(tmp_path: Path) -> None:
    empty = write(tmp_path, "e.parquet", b"")
    with pytest.raises(DataError, match="the file is empty"):
        read_interactions(empty)
    no_rows = tmp_path / "n.parquet"
    pl.DataFrame({"user": [], "item": []}, schema={"user": pl.String, "item": pl.String}).write_parquet(no_rows)
    with pytest.raises(DataError, match="the Parquet file has no rows"):
        read_interactions(no_rows)


def test_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    csv_path = write(tmp_path, "x.csv", bom + b"user_id,item_id,timestamp\r\nu1,i1,5\r\n")
    assert triples(read_interactions(csv_path)[0]) == [("u1", "i1", 5)]
    seq = write(tmp_path, "s.txt", bom + b"u1 a b\r\nu2 c\r\n")
    assert triples(read_interactions(seq, fmt="sequences")[0]) == [
        ("u1", "a", 0),
        ("u1", "b", 1),
        ("u2", "c", 0),
    ]
    header = write(tmp_path, "h.txt", bom + b"user,item\nu1,a\n")
    assert detect_format(header) == "csv"
