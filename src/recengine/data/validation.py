"""Row validation for raw interaction and item files, and the report of what was rejected.

Readers turn a file into a table of *text* cells (one row per record, plus the 1-based ``line`` it came from);
the functions here parse the cells, decide which rows are invalid and why, and either drop those rows
(``on_invalid="drop"``) or raise :class:`~recengine.errors.ValidationFailed` (``on_invalid="fail"``).
Either way every rejected row ends up in a :class:`ValidationReport` with its file, line, column, reason and
offending value: nothing is dropped silently.

Timestamps are accepted as integer (or fractional, floored) seconds since 1970-01-01 UTC, or as ISO 8601 dates
and date-times (``2024-05-01``, ``2024-05-01T12:30:00``, ``2024-05-01 12:30:00.5``, with an optional ``Z`` or
``±HH:MM`` offset; without an offset a date-time is read as UTC), which are converted to seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from recengine.data.transforms import RAW_SCHEMA
from recengine.errors import DataError, ValidationFailed

OnInvalid = Literal["fail", "drop"]

# Reasons are short and categorical (they are the keys of the counts); the offending value carries the
# specifics.
MISSING_USER = "missing user id"
MISSING_ITEM = "missing item id"
MISSING_TIMESTAMP = "missing timestamp"
BAD_TIMESTAMP = "non-numeric timestamp"
TIMESTAMP_RANGE = "timestamp out of range"
BAD_RATING = "non-numeric rating"
BAD_WEIGHT = "non-numeric weight"
NEGATIVE_WEIGHT = "negative weight"
FIELD_COUNT = "wrong field count"
DUPLICATE_ITEM = "duplicate item id"
BAD_NUMBER = "non-numeric value"

EXPECTED: dict[str, str] = {
    MISSING_USER: "a non-empty user id",
    MISSING_ITEM: "a non-empty item id",
    MISSING_TIMESTAMP: "integer seconds since 1970 or an ISO 8601 date/date-time",
    BAD_TIMESTAMP: "integer seconds since 1970 or an ISO 8601 date/date-time",
    TIMESTAMP_RANGE: "seconds between 0 and 253402300799 (milliseconds must be divided by 1000)",
    BAD_RATING: "a number or an empty cell",
    BAD_WEIGHT: "a non-negative number or an empty cell",
    NEGATIVE_WEIGHT: "a non-negative number or an empty cell",
    BAD_NUMBER: "a number or an empty cell",
}

MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z: beyond it the value is almost surely milliseconds or garbage
MAX_EXAMPLES = 5
MAX_STORED_IN_DICT = 1000
NULL_MARKERS = ("", "na", "n/a", "nan", "null", "none", "-")


@dataclass(frozen=True)
class Rejection:
    """One rejected row: where it is and why."""

    file: str
    line: int  # 1-based line in the file (the header counts); Parquet / JSON lines: 1-based record number
    column: str
    reason: str
    value: str

    def describe(self) -> str:
        expected = EXPECTED.get(self.reason)
        tail = f"; expected {expected}" if expected else ""
        return f"{self.file}:{self.line}: column {self.column!r}: {self.reason} (got {self.value!r}{tail})"


@dataclass
class ValidationReport:
    """Every rejected row of one or more files, with counts by reason."""

    rejections: list[Rejection] = field(default_factory=list)
    n_read: int = 0
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return len(self.rejections)

    @property
    def n_accepted(self) -> int:
        return self.n_read - self.n_rejected

    @property
    def counts(self) -> dict[str, int]:
        """Rejected rows by reason, most frequent first."""
        return dict(Counter(r.reason for r in self.rejections).most_common())

    def merge(self, other: ValidationReport) -> ValidationReport:
        """A new report holding both reports' rows (this one's first)."""
        return ValidationReport(
            rejections=[*self.rejections, *other.rejections],
            n_read=self.n_read + other.n_read,
            files=[*self.files, *(f for f in other.files if f not in self.files)],
            notes=[*self.notes, *other.notes],
        )

    def summary(self, max_examples: int = MAX_EXAMPLES) -> str:
        """Counts by reason and the first few rejected rows, as plain text."""
        files = ", ".join(self.files) or "no file"
        lines = [f"rejected {self.n_rejected} of {self.n_read} rows read from {files}"]
        lines += [f"  {n} × {reason}" for reason, n in self.counts.items()]
        if self.rejections:
            lines.append("first rejected rows:")
            lines += [f"  {r.describe()}" for r in self.rejections[:max_examples]]
            if self.n_rejected > max_examples:
                lines.append(f"  … and {self.n_rejected - max_examples} more")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self, max_rows: int = MAX_STORED_IN_DICT) -> dict[str, Any]:
        """JSON-able: the counts, and the rejected rows up to ``max_rows`` (``rows_truncated``: the rest)."""
        return {
            "files": list(self.files),
            "n_read": self.n_read,
            "n_rejected": self.n_rejected,
            "counts": self.counts,
            "rows": [
                {"file": r.file, "line": r.line, "column": r.column, "reason": r.reason, "value": r.value}
                for r in self.rejections[:max_rows]
            ],
            "rows_truncated": max(0, self.n_rejected - max_rows),
            "notes": list(self.notes),
        }

    def failure_message(self, max_examples: int = 3) -> str:
        """One line naming the first rejected rows (file, line, column, reason)."""
        shown = "; ".join(r.describe() for r in self.rejections[:max_examples])
        more = f"; … {self.n_rejected - max_examples} more" if self.n_rejected > max_examples else ""
        counts = ", ".join(f"{n} {reason}" for reason, n in self.counts.items())
        return (
            f"{self.n_rejected} invalid row(s) ({counts}) with on_invalid=fail: {shown}{more} "
            "(fix the rows or use on_invalid=drop to drop and report them)"
        )


def check_policy(on_invalid: str) -> OnInvalid:
    if on_invalid not in ("fail", "drop"):
        raise DataError(f"on_invalid must be 'fail' or 'drop', got {on_invalid!r}")
    return on_invalid  # type: ignore[return-value]


# ---- cell parsers: each returns the parsed column (null where invalid or empty) ----------------------------
def is_empty(col: pl.Expr) -> pl.Expr:
    """True for a null cell or one that holds only whitespace."""
    return col.is_null() | (col.cast(pl.String).str.strip_chars() == "")


def parse_float(col: pl.Expr) -> pl.Expr:
    """Text (or numbers) → Float64; null where the cell is empty or not a finite number."""
    value = col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value).otherwise(None)


def parse_timestamp(values: pl.Series) -> pl.Series:
    """Any column → Int64 seconds since 1970 (UTC); null where a cell is neither a number nor an ISO 8601
    date/date-time."""
    dtype = values.dtype
    if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
        return values.dt.epoch("s").cast(pl.Int64)
    if dtype.is_numeric():
        as_float = values.cast(pl.Float64)
        ok = as_float.is_finite() & (as_float.abs() < 9e18)
        return pl.select(pl.when(ok).then(as_float.floor()).cast(pl.Int64)).to_series()
    if dtype != pl.String:
        return pl.Series(values.name, [None] * len(values), pl.Int64)
    frame = pl.DataFrame({"t": values.str.strip_chars()})
    real = pl.col("t").cast(pl.Float64, strict=False)
    numeric = frame.select(
        pl.coalesce(
            pl.col("t").cast(pl.Int64, strict=False),
            pl.when(real.is_finite() & (real.abs() < 9e18)).then(real.floor()).cast(pl.Int64),
        )
    ).to_series()
    # Date strings are rarer than numbers and slower to parse: only try them where the number parse failed.
    todo = numeric.is_null() & frame.get_column("t").is_not_null()
    if not todo.any():
        return numeric.alias(values.name)
    # ISO 8601: a space may stand for the "T", and "Z" for "+00:00"; without an offset the time is UTC.
    iso = pl.col("t").str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T").str.replace(r"Z$", "+00:00")
    candidates = [iso.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.epoch("s")]
    for fmt in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"):
        candidates.append(iso.str.to_datetime(fmt, strict=False, time_unit="us").dt.epoch("s"))
    for fmt in ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"):
        candidates.append(iso.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC").dt.epoch("s"))
    dates = frame.filter(todo).select(pl.coalesce(candidates).cast(pl.Int64)).to_series()
    return numeric.scatter(todo.arg_true(), dates).alias(values.name)


# ---- tables ------------------------------------------------------------------------------------------------
def validate_interactions(
    table: pl.DataFrame,
    file: str,
    on_invalid: str,
    columns: dict[str, str] | None = None,
    prior: list[Rejection] | None = None,
    n_read: int | None = None,
) -> tuple[pl.DataFrame, ValidationReport]:
    """Parse and check an interaction table; returns the valid rows in the raw schema and the report.

    ``table`` has the canonical columns ``user``, ``item`` and optionally ``timestamp``, ``rating``,
    ``weight``, ``event`` (text or typed), plus ``line`` (1-based, for messages) and ``row`` (input order).
    ``columns`` maps each canonical name to the column name in the file, for messages. ``prior`` are
    rejections the reader already made (e.g. wrong field counts); ``n_read`` the number of records read
    including those.
    """
    policy = check_policy(on_invalid)
    names = columns or {}
    has = set(table.columns)
    parsed: dict[str, pl.Expr] = {
        "_p_user": pl.col("user").cast(pl.String).str.strip_chars(),
        "_p_item": pl.col("item").cast(pl.String).str.strip_chars(),
    }
    if "rating" in has:
        parsed["_p_rating"] = parse_float(pl.col("rating"))
    if "weight" in has:
        parsed["_p_weight"] = parse_float(pl.col("weight"))
    if "event" in has:
        parsed["_p_event"] = pl.col("event").cast(pl.String).str.strip_chars()
    table = table.with_columns(**parsed)
    if "timestamp" in has:
        table = table.with_columns(parse_timestamp(table.get_column("timestamp")).alias("_p_timestamp"))

    def filled(name: str) -> pl.Expr:
        return ~is_empty(pl.col(name))

    # (column, reason, condition that rejects the row): the first check a row fails gives its reason.
    checks: list[tuple[str, str, pl.Expr]] = [
        ("user", MISSING_USER, pl.col("_p_user").is_null() | (pl.col("_p_user") == "")),
        ("item", MISSING_ITEM, pl.col("_p_item").is_null() | (pl.col("_p_item") == "")),
    ]
    if "timestamp" in has:
        ts = pl.col("_p_timestamp")
        checks += [
            ("timestamp", MISSING_TIMESTAMP, ~filled("timestamp")),
            ("timestamp", BAD_TIMESTAMP, ts.is_null()),
            ("timestamp", TIMESTAMP_RANGE, (ts < 0) | (ts > MAX_TIMESTAMP)),
        ]
    if "rating" in has:
        checks.append(("rating", BAD_RATING, filled("rating") & pl.col("_p_rating").is_null()))
    if "weight" in has:
        checks += [
            ("weight", BAD_WEIGHT, filled("weight") & pl.col("_p_weight").is_null()),
            ("weight", NEGATIVE_WEIGHT, pl.col("_p_weight") < 0),
        ]
    table = table.with_columns([bad.fill_null(False).alias(f"_bad{k}") for k, (_, _, bad) in enumerate(checks)])

    reason: pl.Expr = pl.lit(None, pl.String)
    column: pl.Expr = pl.lit(None, pl.String)
    value: pl.Expr = pl.lit(None, pl.String)
    for k in reversed(range(len(checks))):
        name, why, _ = checks[k]
        hit = pl.col(f"_bad{k}")
        reason = pl.when(hit).then(pl.lit(why)).otherwise(reason)
        column = pl.when(hit).then(pl.lit(name)).otherwise(column)
        value = pl.when(hit).then(pl.col(name).cast(pl.String)).otherwise(value)
    checked = table.with_columns(_reason=reason, _column=column, _value=value)
    bad_rows = checked.filter(pl.col("_reason").is_not_null())
    rejections = list(prior or [])
    if bad_rows.height:
        for line, col, why, val in bad_rows.select("line", "_column", "_reason", "_value").iter_rows():
            rejections.append(Rejection(file, int(line), names.get(col, col), why, _short(val)))
        rejections.sort(key=lambda r: r.line)
    report = ValidationReport(rejections=rejections, n_read=table.height if n_read is None else n_read, files=[file])
    if report.n_rejected and policy == "fail":
        raise ValidationFailed(report.failure_message(), report)
    if report.n_read and report.n_rejected == report.n_read:
        first = report.rejections[0]
        raise DataError(f"{file}: no valid rows; the first bad one is {first.describe()}")
    good = checked.filter(pl.col("_reason").is_null())
    out = good.select(
        [pl.col(c).alias(c.removeprefix("_p_")) for c in good.columns if c.startswith("_p_")]
        + [pl.col("row").cast(pl.Int64)]
    )
    for name, dtype in RAW_SCHEMA.items():
        if name not in out.columns:
            out = out.with_columns(pl.lit(None, dtype).alias(name))
    return out.select([pl.col(n).cast(t) for n, t in RAW_SCHEMA.items()]), report


def _short(value: object, limit: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
