"""Interaction files of every format → the raw interaction table of :mod:`recengine.data.transforms`."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recengine.data.readers.columns import ColumnMapping
from recengine.data.readers.files import (
    MOVIELENS_FILES,
    detect_format,
    field_count_rejections,
    first_existing,
    head,
    lines,
    load_csv,
    load_parquet,
    source_path,
)
from recengine.data.validation import FIELD_COUNT, Rejection, ValidationReport, check_policy, validate_interactions
from recengine.errors import DataError

FORMATS = ("auto", "csv", "tsv", "parquet", "movielens", "sequences", "pairs")


def read_interactions(
    source: str | Path,
    fmt: str = "auto",
    mapping: ColumnMapping | None = None,
    on_invalid: str = "drop",
) -> tuple[pl.DataFrame, ValidationReport]:
    """Read an interaction file (or MovieLens folder) into the raw table of :mod:`recengine.data.transforms`.

    Returns the valid rows and the report of the rejected ones. Raises :class:`ValidationFailed` when rows are
    invalid and ``on_invalid="fail"``, and :class:`DataError` when the file cannot be read at all.
    """
    check_policy(on_invalid)
    path = source_path(source, fmt, FORMATS, "format")
    mapping = mapping or ColumnMapping()
    if path.is_dir():
        if fmt not in ("auto", "movielens"):
            raise DataError(f"{path}: is a directory; only --format movielens (or auto) reads a folder")
        path = first_existing(path, MOVIELENS_FILES, "MovieLens ratings")
        fmt = "movielens"
    elif fmt == "auto":
        fmt = detect_format(path)
    if fmt == "movielens":
        if path.name.lower().endswith(".csv"):
            return _read_tabular(path, ",", mapping, on_invalid)
        sep = "::" if path.name.lower().endswith(".dat") or "::" in head(path, 1, "latin-1")[0] else "\t"
        return _read_movielens_ratings(path, sep, on_invalid)
    if fmt in ("csv", "tsv"):
        return _read_tabular(path, "," if fmt == "csv" else "\t", mapping, on_invalid)
    if fmt == "parquet":
        return _read_parquet(path, mapping, on_invalid)
    if fmt == "sequences":
        return _read_sequences(path, on_invalid)
    return _read_pairs(path, on_invalid)


def _read_tabular(
    path: Path, sep: str, mapping: ColumnMapping, on_invalid: str
) -> tuple[pl.DataFrame, ValidationReport]:
    table = load_csv(path, sep)
    return _validate_table(table, path, mapping, on_invalid)


def _read_parquet(path: Path, mapping: ColumnMapping, on_invalid: str) -> tuple[pl.DataFrame, ValidationReport]:
    table = load_parquet(path)
    numbered = table.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_line"))
    return _validate_table(numbered, path, mapping, on_invalid)


def _validate_table(
    table: pl.DataFrame, path: Path, mapping: ColumnMapping, on_invalid: str
) -> tuple[pl.DataFrame, ValidationReport]:
    file = str(path)
    found = mapping.resolve([c for c in table.columns if c != "_line"], file)
    prior: list[Rejection] = []
    if "_ragged" in table.columns:
        ragged = table.filter(pl.col("_ragged").is_not_null())
        prior = [
            Rejection(file, int(line), "*", FIELD_COUNT, note)
            for line, note in ragged.select("_line", "_ragged").iter_rows()
        ]
        n_read = table.height
        table = table.filter(pl.col("_ragged").is_null())
    else:
        n_read = table.height
    canon = table.select(
        [pl.col(src).alias(role) for role, src in found.items()]
        + [pl.col("_line").alias("line"), pl.int_range(0, pl.len(), dtype=pl.Int64).alias("row")]
    )
    out, report = validate_interactions(canon, file, on_invalid, columns=found, prior=prior, n_read=n_read)
    if "timestamp" not in found:
        report.notes.append(f"{file}: no timestamp column; the file order is the time order")
    return out, report


def _read_movielens_ratings(path: Path, sep: str, on_invalid: str) -> tuple[pl.DataFrame, ValidationReport]:
    fields_ = lines(path, "latin-1").with_columns(pl.col("text").str.strip_chars().str.split(sep).alias("f"))
    return _split_fields(
        fields_, path, on_invalid, n_fields=4, names=("user", "item", "rating", "timestamp"),
        expected=f"user{sep}item{sep}rating{sep}timestamp",
    )  # fmt: skip


def _read_pairs(path: Path, on_invalid: str) -> tuple[pl.DataFrame, ValidationReport]:
    fields_ = _whitespace_fields(lines(path))
    return _split_fields(fields_, path, on_invalid, n_fields=2, names=("user", "item"), expected="user item")


def _split_fields(
    text_lines: pl.DataFrame, path: Path, on_invalid: str, n_fields: int, names: tuple[str, ...], expected: str
) -> tuple[pl.DataFrame, ValidationReport]:
    file = str(path)
    counted = text_lines.with_columns(pl.col("f").list.len().alias("n"))
    prior = field_count_rejections(counted.filter(pl.col("n") != n_fields), file, f"{n_fields} fields ({expected})")
    good = counted.filter(pl.col("n") == n_fields)
    table = good.select(
        [pl.col("f").list.get(i).alias(name) for i, name in enumerate(names)]
        + [pl.col("line"), (pl.col("line") - 1).alias("row")]
    )
    if "timestamp" not in names:
        table = table.with_columns(pl.col("line").alias("timestamp"))
    columns = {name: name for name in names}
    return validate_interactions(table, file, on_invalid, columns=columns, prior=prior, n_read=counted.height)


def _read_sequences(path: Path, on_invalid: str) -> tuple[pl.DataFrame, ValidationReport]:
    file = str(path)
    fields_ = _whitespace_fields(lines(path)).with_columns(pl.col("f").list.len().alias("n"))
    prior = field_count_rejections(fields_.filter(pl.col("n") < 2), file, "a user and at least one item")
    good = fields_.filter(pl.col("n") >= 2)
    table = (
        good.select(
            pl.col("f").list.first().alias("user"),
            pl.col("f").list.slice(1).alias("item"),
            pl.col("line"),
        )
        .explode("item")
        .with_columns(
            # The position in the user's whole sequence, so a user continued on a later line stays in order.
            pl.int_range(0, pl.len(), dtype=pl.Int64).over("user").alias("timestamp"),
            pl.int_range(0, pl.len(), dtype=pl.Int64).alias("row"),
        )
    )
    return validate_interactions(table, file, on_invalid, prior=prior, n_read=table.height + len(prior))


def _whitespace_fields(text_lines: pl.DataFrame) -> pl.DataFrame:
    return text_lines.with_columns(
        pl.col("text").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ").alias("f")
    )
