"""Opening raw files: format detection, text checks (encoding, NUL bytes, emptiness) and loading as lines or tables.

Every failure is a :class:`~recengine.errors.DataError` with one line naming the file and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import polars as pl

from recengine.data.readers.columns import interaction_aliases, normalise
from recengine.data.validation import FIELD_COUNT, Rejection
from recengine.errors import DataError

MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
MOVIELENS_ITEM_FILES = ("u.item", "movies.dat", "movies.csv")
_SNIFF_BYTES = 64 * 1024


def source_path(source: str | Path, fmt: str, formats: tuple[str, ...], what: str) -> Path:
    """The path to read, once the format is one of ``formats`` and the path exists (file or folder)."""
    path = Path(source)
    if fmt not in formats:
        raise DataError(f"{path}: unknown {what} {fmt!r}: expected one of {', '.join(formats)}")
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return path


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
    sample = [line for line in head(path, 200) if line.strip()]
    if not sample:
        raise DataError(f"{path}: the file is empty")
    first = sample[0]
    if "::" in first:
        return "movielens"
    header_tokens = [normalise(t.strip().strip('"')) for t in re.split(r"[,\t]", first)]
    known = interaction_aliases()
    if any(t in known for t in header_tokens) and ("," in first or "\t" in first):
        return "csv" if first.count(",") >= first.count("\t") else "tsv"
    tab_fields = first.split("\t")
    if len(tab_fields) == 4 and all(_is_number(f) for f in tab_fields):
        return "movielens"
    # A pairs file may hold a few bad lines; a sequences file rarely has nine users in ten with a single item.
    two = sum(len(line.split()) == 2 for line in sample)
    return "pairs" if two >= 0.9 * len(sample) else "sequences"


def detect_item_format(path: Path) -> str:
    """The item metadata format of a file, from its name and extension (CSV when nothing else fits)."""
    name = path.name.lower()
    if name in ("u.item", "movies.dat") or name.endswith(".item"):
        return "movielens"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return "csv"


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


def first_existing(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: directory without {what} (expected one of {', '.join(names)})")


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


def head(path: Path, n: int, encoding: str = "utf-8") -> list[str]:
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


def lines(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """Non-blank lines of a text file as ``text`` with their 1-based ``line``."""
    text = _decode(_read_bytes(path), path, encoding)
    frame = pl.DataFrame({"text": text.split("\n")}).with_columns(
        pl.col("text").str.strip_suffix("\r"), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("line")
    )
    return frame.filter(pl.col("text").str.strip_chars() != "")


def field_count_rejections(bad: pl.DataFrame, file: str, expected: str) -> list[Rejection]:
    """One rejection per line (``line``, ``n`` fields, ``text``) that has the wrong number of fields."""
    return [
        Rejection(file, int(line), "*", FIELD_COUNT, f"{n} field(s) in {_short_text(text)!r}; expected {expected}")
        for line, n, text in bad.select("line", "n", "text").iter_rows()
    ]


def load_csv(path: Path, sep: str) -> pl.DataFrame:
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


def load_parquet(path: Path) -> pl.DataFrame:
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


def load_jsonl(path: Path) -> pl.DataFrame:
    data = _read_bytes(path)
    text = _decode(data, path, "utf-8")
    try:
        table = pl.read_ndjson(io.BytesIO(data))
    except (pl.exceptions.PolarsError, ValueError) as exc:
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
