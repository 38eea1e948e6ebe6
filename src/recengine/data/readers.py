"""Readers: raw interaction and item files → the raw interaction table and item metadata.

Interaction formats (``fmt``):

- ``csv`` / ``tsv`` — a header row, then one interaction per row. Columns are found through a
  :class:`ColumnMapping`; unmapped roles fall back to common names (``user_id``/``userId``/``user``…,
  ``item_id``/``itemId``/``movieId``/``item``…, ``timestamp``/``time``/``ts``…, ``rating``,
  ``event``/``event_type``, ``weight``), matched ignoring case, ``_`` and ``-``. User and item are required;
  without a timestamp column the file order is the time order.
- ``parquet`` — the same, from a Parquet file (typed columns are used as they are; ``line`` in messages is the
  1-based record number).
- ``movielens`` — ``u.data`` (``user<TAB>item<TAB>rating<TAB>timestamp``, no header), ``ratings.dat``
  (``user::item::rating::timestamp``), ``ratings.csv`` (header ``userId,movieId,rating,timestamp``), or a
  folder that holds one of them. Read as latin-1, like the MovieLens distribution.
- ``sequences`` — ``user item1 item2 …`` per line (whitespace separated), items in time order; an item's
  timestamp is its position in the user's sequence (0, 1, …); a user on several lines continues in line order.
- ``pairs`` — ``user item`` per line, each user's lines in time order; the timestamp is the line number.
- ``auto`` — by folder content, file name, extension and, for other names, by the first lines of the file.

Timestamps are integer seconds since 1970 or ISO 8601 dates/date-times in CSV/TSV/Parquet (see
:mod:`recengine.data.validation`). Every invalid row is rejected with file, line, column and reason (see
:class:`~recengine.data.validation.ValidationReport`); a file that cannot be read at all raises
:class:`~recengine.errors.DataError` with one line naming the file and what was expected.

Item metadata (:func:`read_items`): CSV/TSV/Parquet/JSON lines with an item id, an optional title, optional
categories (a list, or a string delimited by ``|``, ``;`` or ``,``) and any numeric columns; MovieLens
``u.item`` (titles, release year and the 19 genre flags, genre names from ``u.genre`` when present) and
``movies.dat``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl

from recengine.data.validation import (
    BAD_NUMBER,
    DUPLICATE_ITEM,
    FIELD_COUNT,
    MISSING_ITEM,
    NULL_MARKERS,
    Rejection,
    ValidationReport,
    check_policy,
    parse_float,
    validate_interactions,
)
from recengine.errors import DataError, ValidationFailed

FORMATS = ("auto", "csv", "tsv", "parquet", "movielens", "sequences", "pairs")
ITEM_FORMATS = ("auto", "csv", "tsv", "parquet", "jsonl", "movielens")
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
MOVIELENS_ITEM_FILES = ("u.item", "movies.dat", "movies.csv")
MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# Known column names per role, normalised (lower case, no "_", "-" or spaces), in order of preference.
ALIASES: dict[str, tuple[str, ...]] = {
    "user": (
        "userid",
        "user",
        "uid",
        "customerid",
        "customer",
        "visitorid",
        "reviewerid",
        "clientid",
        "sessionid",
    ),
    "item": (
        "itemid",
        "item",
        "movieid",
        "iid",
        "productid",
        "product",
        "asin",
        "articleid",
        "trackid",
        "bookid",
    ),
    "timestamp": (
        "timestamp",
        "time",
        "ts",
        "datetime",
        "date",
        "unixtime",
        "unixtimestamp",
        "eventtime",
        "createdat",
    ),
    "rating": ("rating", "score", "stars", "rate"),
    "event": ("event", "eventtype", "action", "interaction", "interactiontype"),
    "weight": ("weight", "count", "quantity"),
}
ITEM_ALIASES: dict[str, tuple[str, ...]] = {
    "item": (
        "itemid",
        "item",
        "movieid",
        "id",
        "iid",
        "productid",
        "product",
        "asin",
        "articleid",
        "trackid",
    ),
    "title": ("title", "name", "itemname", "productname"),
    "categories": ("categories", "category", "genres", "genre", "tags", "tag"),
}
_SNIFF_BYTES = 64 * 1024


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


@dataclass(frozen=True)
class ColumnMapping:
    """Which column of a CSV/TSV/Parquet file plays which role; ``None``: find it by its usual names."""

    user: str | None = None
    item: str | None = None
    timestamp: str | None = None
    rating: str | None = None
    event: str | None = None
    weight: str | None = None

    @classmethod
    def from_options(cls, **options: str | None) -> ColumnMapping:
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise DataError(
                f"unknown column role(s) {sorted(unknown)}: expected user, item, timestamp, rating, event, weight"
            )
        return cls(**{k: (v or None) for k, v in options.items()})

    def resolve(self, columns: Iterable[str], file: str) -> dict[str, str]:
        """Role → column in the file; :class:`DataError` when user, item or a named column is missing."""
        columns = list(columns)
        by_norm: dict[str, str] = {}
        for c in columns:
            by_norm.setdefault(_norm(c), c)
        found: dict[str, str] = {}
        for role, aliases in ALIASES.items():
            wanted: str | None = getattr(self, role)
            if wanted is not None:
                match = wanted if wanted in columns else by_norm.get(_norm(wanted))
                if match is None:
                    raise DataError(
                        f"{file}: line 1: no column {wanted!r} for the {role} (the header has: {_listing(columns)})"
                    )
                found[role] = match
                continue
            for alias in aliases:
                if alias in by_norm and by_norm[alias] not in found.values():
                    found[role] = by_norm[alias]
                    break
        for role in ("user", "item"):
            if role not in found:
                raise DataError(
                    f"{file}: line 1: missing required {role} column (expected one of "
                    f"{', '.join(ALIASES[role][:4])}, or pass --{role}-col; "
                    f"the header has: {_listing(columns)})"
                )
        return found


def _listing(columns: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f", … ({len(columns)} columns)" if len(columns) > limit else "") if columns else "no columns"


# ---- public API --------------------------------------------------------------------------------------------
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
    path = Path(source)
    check_policy(on_invalid)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    mapping = mapping or ColumnMapping()
    if path.is_dir():
        if fmt not in ("auto", "movielens"):
            raise DataError(f"{path}: is a directory; only --format movielens (or auto) reads a folder")
        path = _movielens_file(path)
        fmt = "movielens"
    elif fmt == "auto":
        fmt = detect_format(path)
    if fmt == "movielens":
        if path.name.lower().endswith(".csv"):
            return _read_tabular(path, ",", mapping, on_invalid)
        sep = "::" if path.name.lower().endswith(".dat") or "::" in _head(path, 1, "latin-1")[0] else "\t"
        return _read_movielens_ratings(path, sep, on_invalid)
    if fmt in ("csv", "tsv"):
        return _read_tabular(path, "," if fmt == "csv" else "\t", mapping, on_invalid)
    if fmt == "parquet":
        return _read_parquet(path, mapping, on_invalid)
    if fmt == "sequences":
        return _read_sequences(path, on_invalid)
    return _read_pairs(path, on_invalid)


def detect_format(path: Path) -> str:
    """The interaction format of a file, from its name, extension and first lines."""
    name = path.name.lower()
    if name in MOVIELENS_FILES or name.endswith(".dat"):
        return "movielens"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    head = [line for line in _head(path, 200) if line.strip()]
    if not head:
        raise DataError(f"{path}: the file is empty")
    first = head[0]
    if "::" in first:
        return "movielens"
    header_tokens = [_norm(t.strip().strip('"')) for t in re.split(r"[,\t]", first)]
    known = {alias for aliases in ALIASES.values() for alias in aliases}
    if any(t in known for t in header_tokens) and ("," in first or "\t" in first):
        return "csv" if first.count(",") >= first.count("\t") else "tsv"
    tab_fields = first.split("\t")
    if len(tab_fields) == 4 and all(_is_number(f) for f in tab_fields):
        return "movielens"
    # A pairs file may hold a few bad lines; a sequences file rarely has nine users in ten with a single item.
    two = sum(len(line.split()) == 2 for line in head)
    return "pairs" if two >= 0.9 * len(head) else "sequences"


def read_items(
    source: str | Path, fmt: str = "auto", on_invalid: str = "drop"
) -> tuple[pl.DataFrame, ValidationReport]:
    """Read item metadata: ``item`` (str), ``title`` (str), ``categories`` (list[str]) and numeric columns.

    ``title`` and ``categories`` appear only when the file has them. Rows without an item id, repeated item
    ids and non-numbers in a numeric column are rejected like invalid interactions.
    """
    path = Path(source)
    check_policy(on_invalid)
    if fmt not in ITEM_FORMATS:
        raise DataError(f"{path}: unknown item metadata format {fmt!r}: expected one of {', '.join(ITEM_FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        path = _first_existing(path, MOVIELENS_ITEM_FILES, "item metadata")
        fmt = "auto"
    name = path.name.lower()
    if fmt == "auto":
        if name in ("u.item", "movies.dat") or name.endswith(".item"):
            fmt = "movielens"
        elif name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif name.endswith((".jsonl", ".ndjson", ".json")):
            fmt = "jsonl"
        elif name.endswith((".tsv", ".tab")):
            fmt = "tsv"
        else:
            fmt = "csv"
    file = str(path)
    if fmt == "movielens" and not name.endswith(".csv"):
        if "::" in _head(path, 1, "latin-1")[0]:
            return _finish_items(*_movies_dat(path), file, on_invalid)
        return _finish_items(*_u_item(path), file, on_invalid)
    if fmt == "parquet":
        table = _load_parquet(path)
    elif fmt == "jsonl":
        table = _load_jsonl(path)
    else:
        table = _load_csv(path, "\t" if fmt == "tsv" else ",")
    found = _resolve_items(table.columns, file)
    renamed = table.rename({src: role for role, src in found.items()})
    keep = ["item", *(r for r in ("title", "categories") if r in found)]
    others = [c for c in table.columns if c not in found.values() and c != "_line"]
    meta = renamed.select([*keep, *others, "_line"] if "_line" in renamed.columns else [*keep, *others])
    if "_line" not in meta.columns:
        meta = meta.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_line"))
    if "categories" in meta.columns:
        meta = meta.with_columns(_categories(meta.get_column("categories")).alias("categories"))
    return _finish_items(meta, [], file, on_invalid)


def find_item_metadata(source: str | Path) -> Path | None:
    """The MovieLens item file (``u.item``, ``movies.dat`` …) beside a ratings file or inside a folder."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    if not path.is_dir() and path.name.lower() not in MOVIELENS_FILES:
        return None
    for name in MOVIELENS_ITEM_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


# ---- interaction formats -----------------------------------------------------------------------------------
def _read_tabular(
    path: Path, sep: str, mapping: ColumnMapping, on_invalid: str
) -> tuple[pl.DataFrame, ValidationReport]:
    table = _load_csv(path, sep)
    return _validate_table(table, path, mapping, on_invalid)


def _read_parquet(path: Path, mapping: ColumnMapping, on_invalid: str) -> tuple[pl.DataFrame, ValidationReport]:
    table = _load_parquet(path)
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
    lines = _lines(path, "latin-1")
    fields_ = lines.with_columns(pl.col("text").str.strip_chars().str.split(sep).alias("f"))
    return _split_fields(
        fields_, path, on_invalid, n_fields=4, names=("user", "item", "rating", "timestamp"),
        expected=f"user{sep}item{sep}rating{sep}timestamp",
    )  # fmt: skip


def _read_pairs(path: Path, on_invalid: str) -> tuple[pl.DataFrame, ValidationReport]:
    lines = _whitespace_fields(_lines(path))
    out, report = _split_fields(lines, path, on_invalid, n_fields=2, names=("user", "item"), expected="user item")
    return out, report


def _split_fields(
    lines: pl.DataFrame, path: Path, on_invalid: str, n_fields: int, names: tuple[str, ...], expected: str
) -> tuple[pl.DataFrame, ValidationReport]:
    file = str(path)
    counted = lines.with_columns(pl.col("f").list.len().alias("n"))
    prior = _field_count_rejections(counted.filter(pl.col("n") != n_fields), file, f"{n_fields} fields ({expected})")
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
    lines = _whitespace_fields(_lines(path)).with_columns(pl.col("f").list.len().alias("n"))
    prior = _field_count_rejections(lines.filter(pl.col("n") < 2), file, "a user and at least one item")
    good = lines.filter(pl.col("n") >= 2)
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
    out, report = validate_interactions(table, file, on_invalid, prior=prior, n_read=table.height + len(prior))
    return out, report


def _field_count_rejections(bad: pl.DataFrame, file: str, expected: str) -> list[Rejection]:
    return [
        Rejection(file, int(line), "*", FIELD_COUNT, f"{n} field(s) in {_short_text(text)!r}; expected {expected}")
        for line, n, text in bad.select("line", "n", "text").iter_rows()
    ]


def _whitespace_fields(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.with_columns(pl.col("text").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ").alias("f"))


# ---- item formats ------------------------------------------------------------------------------------------
def _resolve_items(columns: list[str], file: str) -> dict[str, str]:
    visible = [c for c in columns if c != "_line"]
    by_norm: dict[str, str] = {}
    for c in visible:
        by_norm.setdefault(_norm(c), c)
    found: dict[str, str] = {}
    for role, aliases in ITEM_ALIASES.items():
        for alias in aliases:
            if alias in by_norm and by_norm[alias] not in found.values():
                found[role] = by_norm[alias]
                break
    if "item" not in found:
        raise DataError(
            f"{file}: line 1: missing required item id column "
            "(expected one of item_id, itemId, movieId, item, id; "
            f"the header has: {_listing(visible)})"
        )
    return found


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
    lines = _lines(path, "latin-1").with_columns(pl.col("text").str.split("|").alias("f"))
    lines = lines.with_columns(pl.col("f").list.len().alias("n"))
    prior = _field_count_rejections(
        lines.filter(pl.col("n") != n_fields),
        file,
        f"{n_fields} fields (id|title|release date|video date|url|genres)",
    )
    good = lines.filter(pl.col("n") == n_fields)
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
    lines = _lines(path, "latin-1").with_columns(pl.col("text").str.split("::").alias("f"))
    lines = lines.with_columns(pl.col("f").list.len().alias("n"))
    prior = _field_count_rejections(lines.filter(pl.col("n") != 3), file, "3 fields (id::title::genres)")
    good = lines.filter(pl.col("n") == 3)
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


# ---- file access -------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise DataError(f"{path}: line {_line_at(data, data.index(0))}: binary data (NUL byte), expected text")
    return data


def _decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        return data.decode(_codec(encoding))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: line {_line_at(data, exc.start)}: not {encoding} text (byte {data[exc.start]:#04x}); "
            "expected a text file"
        ) from None


def _codec(encoding: str) -> str:
    # Spreadsheet exports often start with a byte-order mark; it must not become part of the first id.
    return "utf-8-sig" if encoding == "utf-8" else encoding


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _head(path: Path, n: int, encoding: str = "utf-8") -> list[str]:
    """The first ``n`` lines of a text file (from its first 64 KiB), after the same checks as a full read."""
    if not path.is_file():
        _read_bytes(path)  # raises the right error
    with path.open("rb") as fh:
        data = fh.read(_SNIFF_BYTES)
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in data:
        raise DataError(f"{path}: line {_line_at(data, data.index(0))}: binary data (NUL byte), expected text")
    try:
        text = data.decode(_codec(encoding))
    except UnicodeDecodeError as exc:
        # The prefix may end inside a multi-byte character; anything earlier is a real error.
        if exc.start < len(data) - 3 or len(data) < _SNIFF_BYTES:
            raise DataError(
                f"{path}: line {_line_at(data, exc.start)}: "
                f"not {encoding} text (byte {data[exc.start]:#04x}); "
                "expected a text file"
            ) from None
        text = data[: exc.start].decode(_codec(encoding))
    return [line.removesuffix("\r") for line in text.split("\n")[:n]]


def _lines(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """Non-blank lines of a text file as ``text`` with their 1-based ``line``."""
    text = _decode(_read_bytes(path), path, encoding)
    frame = pl.DataFrame({"text": text.split("\n")}).with_columns(
        pl.col("text").str.strip_suffix("\r"), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("line")
    )
    return frame.filter(pl.col("text").str.strip_chars() != "")


def _load_csv(path: Path, sep: str) -> pl.DataFrame:
    """Every cell as text, with the 1-based ``_line`` each record starts on (``_ragged``: bad field count)."""
    data = _read_bytes(path)
    _decode(data, path, "utf-8")
    kind = "CSV" if sep == "," else "TSV"
    try:
        table = pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False, has_header=True)
        ragged: dict[int, str] = {}
    except pl.exceptions.ComputeError as exc:
        if "more fields" not in str(exc):
            raise DataError(f"{path}: cannot parse as {kind}: {_first_line(exc)}") from None
        table = pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False, has_header=True,
                            truncate_ragged_lines=True)  # fmt: skip
        ragged = _ragged_records(data, sep)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot parse as {kind}: {_first_line(exc)}") from None
    if table.width == 0 or all(c.strip() == "" for c in table.columns):
        raise DataError(f"{path}: line 1: empty header, expected column names")
    # Quoted cells may hold line breaks, so a record's line is 2 + its index + the breaks in the records
    # before it.
    breaks = pl.sum_horizontal([pl.col(c).str.count_matches("\n").fill_null(0) for c in table.columns])
    header_breaks = sum(c.count("\n") for c in table.columns)
    table = table.with_columns(
        (pl.int_range(0, pl.len(), dtype=pl.Int64) + 2 + header_breaks + breaks.cum_sum().shift(1, fill_value=0))
        .cast(pl.Int64)
        .alias("_line")
    )
    if ragged:
        table = table.with_columns(
            pl.int_range(0, pl.len(), dtype=pl.Int64)
            .replace_strict(list(ragged), list(ragged.values()), default=None, return_dtype=pl.String)
            .alias("_ragged")
        )
    # Blank lines come back as all-null records: they carry no data, so they are skipped, not rejected.
    data_cols = [c for c in table.columns if not c.startswith("_")]
    table = table.filter(~pl.all_horizontal([pl.col(c).is_null() for c in data_cols]))
    if table.height == 0:
        raise DataError(f"{path}: no data rows after the header (line 1)")
    return table


def _ragged_records(data: bytes, sep: str) -> dict[int, str]:
    """Record index (0 = first after the header) → description, for records longer than the header."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=sep)
    header = next(reader)
    out: dict[int, str] = {}
    for i, rec in enumerate(reader):
        if len(rec) > len(header):
            out[i] = f"{len(rec)} fields, expected {len(header)} (as in the header)"
    return out


def _load_parquet(path: Path) -> pl.DataFrame:
    if not path.is_file():
        _read_bytes(path)  # raises the right error
    with path.open("rb") as fh:
        magic = fh.read(4)
    if not magic:
        raise DataError(f"{path}: the file is empty")
    if magic != b"PAR1":
        raise DataError(f"{path}: not a Parquet file (no PAR1 magic bytes at the start)")
    try:
        table = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read Parquet: {_first_line(exc)}") from None
    if table.height == 0:
        raise DataError(f"{path}: the Parquet file has no rows")
    return table


def _load_jsonl(path: Path) -> pl.DataFrame:
    data = _read_bytes(path)
    text = _decode(data, path, "utf-8")
    try:
        table = pl.read_ndjson(io.BytesIO(data))
    except (pl.exceptions.PolarsError, ValueError) as exc:
        import json

        for n, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    if not isinstance(json.loads(line), dict):
                        raise ValueError(line)
                except ValueError:
                    raise DataError(
                        f"{path}: line {n}: not a JSON object (expected one JSON object per line)"
                    ) from None
        raise DataError(f"{path}: cannot read JSON lines: {_first_line(exc)}") from None
    return table.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_line"))


def _movielens_file(folder: Path) -> Path:
    return _first_existing(folder, MOVIELENS_FILES, "MovieLens ratings")


def _first_existing(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: directory without {what} (expected one of {', '.join(names)})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _short_text(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
