"""Item metadata files → one row per item: ``item``, ``title``, ``categories`` and numeric columns."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recengine.data.readers.columns import ITEM_ROLES, missing_column, resolve_columns
from recengine.data.readers.files import (
    MOVIELENS_ITEM_FILES,
    detect_item_format,
    field_count_rejections,
    first_existing,
    head,
    lines,
    load_csv,
    load_jsonl,
    load_parquet,
    source_path,
)
from recengine.data.validation import (
    BAD_NUMBER,
    DUPLICATE_ITEM,
    MISSING_ITEM,
    NULL_MARKERS,
    Rejection,
    ValidationReport,
    check_policy,
    parse_float,
)
from recengine.errors import DataError, ValidationFailed

ITEM_FORMATS = ("auto", "csv", "tsv", "parquet", "jsonl", "movielens")
MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def read_items(
    source: str | Path, fmt: str = "auto", on_invalid: str = "drop"
) -> tuple[pl.DataFrame, ValidationReport]:
    """Read item metadata: ``item`` (str), ``title`` (str), ``categories`` (list[str]) and numeric columns.

    ``title`` and ``categories`` appear only when the file has them. Rows without an item id, repeated item
    ids and non-numbers in a numeric column are rejected like invalid interactions.
    """
    check_policy(on_invalid)
    path = source_path(source, fmt, ITEM_FORMATS, "item metadata format")
    if path.is_dir():
        path = first_existing(path, MOVIELENS_ITEM_FILES, "item metadata")
        fmt = "auto"
    name = path.name.lower()
    if fmt == "auto":
        fmt = detect_item_format(path)
    file = str(path)
    if fmt == "movielens" and not name.endswith(".csv"):
        if "::" in head(path, 1, "latin-1")[0]:
            return _finish_items(*_movies_dat(path), file, on_invalid)
        return _finish_items(*_u_item(path), file, on_invalid)
    if fmt == "parquet":
        table = load_parquet(path)
    elif fmt == "jsonl":
        table = load_jsonl(path)
    else:
        table = load_csv(path, "\t" if fmt == "tsv" else ",")
    visible = [c for c in table.columns if c != "_line"]
    found = resolve_columns(visible, ITEM_ROLES, file, item_file=True)
    if "item" not in found:
        raise missing_column(file, "item id", "item_id, itemId, movieId, item, id", visible)
    renamed = table.rename({src: role for role, src in found.items()})
    keep = ["item", *(r for r in ("title", "categories") if r in found)]
    others = [c for c in table.columns if c not in found.values() and c != "_line"]
    meta = renamed.select([*keep, *others, "_line"] if "_line" in renamed.columns else [*keep, *others])
    if "_line" not in meta.columns:
        meta = meta.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_line"))
    if "categories" in meta.columns:
        meta = meta.with_columns(_categories(meta.get_column("categories")).alias("categories"))
    return _finish_items(meta, [], file, on_invalid)


def _categories(col: pl.Series) -> pl.Series:
    """A list column, or text delimited by ``|``, ``;`` or ``,`` (the first one present in the column)."""
    if isinstance(col.dtype, pl.List):
        return (
            col.cast(pl.List(pl.String))
            .list.eval(pl.element().str.strip_chars())
            .list.eval(pl.element().filter(pl.element() != ""))
        )
    text = col.cast(pl.String)
    sep = next((s for s in ("|", ";", ",") if text.str.contains(s, literal=True).any()), "|")
    return (
        text.fill_null("")
        .str.split(sep)
        .list.eval(pl.element().str.strip_chars())
        .list.eval(pl.element().filter(pl.element() != ""))
    )


def _u_item(path: Path) -> tuple[pl.DataFrame, list[Rejection]]:
    """MovieLens ``u.item``: id|title|release date|video release date|IMDb URL|19 genre flags."""
    genres = list(MOVIELENS_GENRES)
    genre_file = path.parent / "u.genre"
    if genre_file.is_file():
        named = [ln.rsplit("|", 1) for ln in genre_file.read_text(encoding="latin-1").splitlines() if "|" in ln]
        by_index = {int(i): g for g, i in named if i.strip().isdigit()}
        if by_index and sorted(by_index) == list(range(len(by_index))):
            genres = [by_index[i] for i in range(len(by_index))]
    file = str(path)
    n_fields = 5 + len(genres)
    split = lines(path, "latin-1").with_columns(pl.col("text").str.split("|").alias("f"))
    split = split.with_columns(pl.col("f").list.len().alias("n"))
    prior = field_count_rejections(
        split.filter(pl.col("n") != n_fields),
        file,
        f"{n_fields} fields (id|title|release date|video date|url|genres)",
    )
    good = split.filter(pl.col("n") == n_fields)
    flags = pl.concat_list(
        [
            pl.when(pl.col("f").list.get(5 + k).str.strip_chars() == "1").then(pl.lit(g)).otherwise(None)
            for k, g in enumerate(genres)
        ]
    ).list.drop_nulls()
    meta = good.select(
        pl.col("f").list.get(0).str.strip_chars().alias("item"),
        pl.col("f").list.get(1).alias("title"),
        flags.alias("categories"),
        pl.col("f").list.get(2).str.extract(r"(\d{4})\s*$").cast(pl.Float64, strict=False).alias("year"),
        pl.col("line").alias("_line"),
    )
    return meta, prior


def _movies_dat(path: Path) -> tuple[pl.DataFrame, list[Rejection]]:
    """MovieLens 1M/10M ``movies.dat``: id::title::genre|genre."""
    file = str(path)
    split = lines(path, "latin-1").with_columns(pl.col("text").str.split("::").alias("f"))
    split = split.with_columns(pl.col("f").list.len().alias("n"))
    prior = field_count_rejections(split.filter(pl.col("n") != 3), file, "3 fields (id::title::genres)")
    good = split.filter(pl.col("n") == 3)
    meta = good.select(
        pl.col("f").list.get(0).str.strip_chars().alias("item"),
        pl.col("f").list.get(1).alias("title"),
        pl.col("f").list.get(2).str.split("|").alias("categories"),
        pl.col("line").alias("_line"),
    )
    return meta, prior


def _finish_items(
    meta: pl.DataFrame,
    prior: list[Rejection],
    file: str,
    on_invalid: str,
) -> tuple[pl.DataFrame, ValidationReport]:
    """Check ids (present, unique) and numeric columns; keep the numeric ones, drop other text columns."""
    meta = meta.with_columns(pl.col("item").cast(pl.String).str.strip_chars())
    if "title" in meta.columns:
        meta = meta.with_columns(pl.col("title").cast(pl.String))
    rejections = list(prior)
    bad = pl.col("item").is_null() | (pl.col("item") == "")
    rejections += [
        Rejection(file, int(line), "item", MISSING_ITEM, "") for line in meta.filter(bad).get_column("_line").to_list()
    ]
    dup = ~bad & pl.col("item").is_duplicated() & ~pl.col("item").is_first_distinct()
    rejections += [
        Rejection(file, int(line), "item", DUPLICATE_ITEM, str(v))
        for line, v in meta.filter(dup).select("_line", "item").iter_rows()
    ]
    keep = meta.select(~bad & ~dup).to_series()
    numeric: list[str] = [c for c in meta.columns if c not in ("item", "title", "categories", "_line")]
    kept_numeric: list[str] = []
    for name in numeric:
        dtype = meta.schema[name]
        if dtype.is_numeric() or dtype == pl.Boolean:
            kept_numeric.append(name)
            meta = meta.with_columns(pl.col(name).cast(pl.Float64))
            continue
        if dtype != pl.String:
            continue
        text = pl.col(name).str.strip_chars()
        blank = text.is_null() | text.str.to_lowercase().is_in(list(NULL_MARKERS))
        value = parse_float(pl.col(name))
        n_filled = meta.select((~blank).sum()).item()
        n_parsed = meta.select((~blank & value.is_not_null()).sum()).item()
        # A column is numeric when (nearly) all its filled cells are numbers; the rest are then errors, not
        # text.
        if n_filled == 0 or n_parsed < 0.9 * n_filled:
            continue
        wrong = pl.lit(keep) & ~blank & value.is_null()
        rejections += [
            Rejection(file, int(line), name, BAD_NUMBER, str(v))
            for line, v in meta.filter(wrong).select("_line", name).iter_rows()
        ]
        keep = keep & ~meta.select(wrong).to_series()
        meta = meta.with_columns(pl.when(blank).then(None).otherwise(value).alias(name))
        kept_numeric.append(name)
    rejections.sort(key=lambda r: r.line)
    report = ValidationReport(rejections=rejections, n_read=meta.height + len(prior), files=[file])
    if report.n_rejected and on_invalid == "fail":
        raise ValidationFailed(report.failure_message(), report)
    if report.n_read and report.n_rejected == report.n_read:
        raise DataError(f"{file}: no valid item rows; the first bad one is {report.rejections[0].describe()}")
    cols = [c for c in ("item", "title", "categories") if c in meta.columns] + kept_numeric
    return meta.filter(keep).select(cols), report
