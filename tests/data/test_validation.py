"""The validation report and the cell parsers, independent of any file format."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import polars as pl
import pytest

from recengine.data.validation import (
    BAD_TIMESTAMP,
    BAD_WEIGHT,
    FIELD_COUNT,
    MISSING_TIMESTAMP,
    MISSING_USER,
    Rejection,
    ValidationReport,
    parse_timestamp,
    validate_interactions,
)
from recengine.errors import DataError, ValidationFailed


def rejection(line: int, reason: str = MISSING_USER, file: str = "a.csv") -> Rejection:
    return Rejection(file, line, "user", reason, "")


def test_counts_merge_and_to_dict() -> None:
    a = ValidationReport([rejection(2), rejection(5, BAD_TIMESTAMP)], n_read=10, files=["a.csv"])
    b = ValidationReport([rejection(3, BAD_TIMESTAMP, "b.csv")], n_read=4, files=["b.csv"], notes=["hello"])
    merged = a.merge(b)
    assert (merged.n_read, merged.n_rejected, merged.n_accepted) == (14, 3, 11)
    assert merged.counts == {BAD_TIMESTAMP: 2, MISSING_USER: 1}
    assert merged.files == ["a.csv", "b.csv"] and merged.notes == ["hello"]
    assert (a.n_rejected, b.n_rejected) == (2, 1)  # merge builds a new report
    data = merged.to_dict(max_rows=2)
    assert json.loads(json.dumps(data)) == data
    assert data["n_rejected"] == 3 and len(data["rows"]) == 2 and data["rows_truncated"] == 1
    assert data["rows"][0] == {
        "file": "a.csv",
        "line": 2,
        "column": "user",
        "reason": MISSING_USER,
        "value": "",
    }


def test_summary_lists_counts_and_first_examples() -> None:
    report = ValidationReport([rejection(n) for n in range(2, 12)], n_read=50, files=["a.csv"], notes=["n1"])
    text = report.summary(max_examples=3)
    assert "rejected 10 of 50 rows read from a.csv" in text
    assert f"10 × {MISSING_USER}" in text
    assert "a.csv:2: column 'user'" in text and "a.csv:4:" in text and "a.csv:5:" not in text
    assert "… and 7 more" in text and "note: n1" in text
    assert ValidationReport().summary().startswith("rejected 0 of 0 rows read from no file")


def test_failure_message_is_one_line() -> None:
    report = ValidationReport([rejection(n) for n in (2, 3, 4, 9)], n_read=9, files=["a.csv"])
    message = report.failure_message(max_examples=2)
    assert "\n" not in message
    assert message.startswith(f"4 invalid row(s) (4 {MISSING_USER})")
    assert "a.csv:2:" in message and "a.csv:3:" in message and "a.csv:4:" not in message and "2 more" in message


def frame(**cols: list[object]) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    return pl.DataFrame(cols).with_columns(
        pl.int_range(2, n + 2, dtype=pl.Int64).alias("line"), pl.int_range(0, n, dtype=pl.Int64).alias("row")
    )


def test_parse_timestamp_dtypes() -> None:
    assert parse_timestamp(pl.Series([1.9, float("nan"), -2.5])).to_list() == [1, None, -3]
    assert parse_timestamp(pl.Series([5, 6], dtype=pl.Int32)).to_list() == [5, 6]
    day = int(datetime(2020, 1, 2, tzinfo=UTC).timestamp())
    assert parse_timestamp(pl.Series([date(2020, 1, 2)])).to_list() == [day]
    assert parse_timestamp(pl.Series([datetime(2020, 1, 2)])).to_list() == [day]
    assert parse_timestamp(pl.Series([True])).to_list() == [None]
    assert parse_timestamp(pl.Series(["12", " 13 ", "1e3", "2020-01-02", "02/01/2020", None])).to_list() == [
        12,
        13,
        1000,
        day,
        None,
        None,
    ]


def test_validate_interactions_policy_and_reasons() -> None:
    table = frame(
        user=["u", "", "u", "u", "u"],
        item=["a", "b", "c", "d", "e"],
        timestamp=["1", "2", "", "x", "5"],
        weight=["1", "1", "1", "1", "lots"],
        event=[" click ", None, None, None, None],
    )
    out, report = validate_interactions(table, "f.csv", "drop", columns={"timestamp": "ts"})
    assert out.select("user", "item", "timestamp", "weight", "event").rows() == [("u", "a", 1, 1.0, "click")]
    assert [(r.line, r.column, r.reason) for r in report.rejections] == [
        (3, "user", MISSING_USER),
        (4, "ts", MISSING_TIMESTAMP),
        (5, "ts", BAD_TIMESTAMP),
        (6, "weight", BAD_WEIGHT),
    ]
    with pytest.raises(ValidationFailed, match=r"f\.csv:3: column 'user'"):
        validate_interactions(table, "f.csv", "fail")
    with pytest.raises(DataError, match="on_invalid must be 'fail' or 'drop'"):
        validate_interactions(table, "f.csv", "skip")


def test_prior_rejections_count_and_fail() -> None:
    table = frame(user=["u"], item=["a"])
    prior = [Rejection("f.txt", 1, "*", FIELD_COUNT, "1 field")]
    out, report = validate_interactions(table, "f.txt", "drop", prior=prior, n_read=2)
    assert out.height == 1 and report.n_rejected == 1 and report.n_read == 2
    with pytest.raises(ValidationFailed, match=r"f\.txt:1: column '\*': wrong field count"):
        validate_interactions(table, "f.txt", "fail", prior=prior, n_read=2)
