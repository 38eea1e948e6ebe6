"""Readers: raw interaction and item files → the raw interaction table and item metadata.

``files`` opens files and detects formats, ``columns`` maps columns to roles (one alias table),
``interactions`` and ``items`` read each kind of file.

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

from recengine.data.readers.columns import ALIASES, ColumnMapping
from recengine.data.readers.files import MOVIELENS_FILES, MOVIELENS_ITEM_FILES, detect_format, find_item_metadata
from recengine.data.readers.interactions import FORMATS, read_interactions
from recengine.data.readers.items import ITEM_FORMATS, MOVIELENS_GENRES, read_items

__all__ = [
    "ALIASES",
    "FORMATS",
    "ITEM_FORMATS",
    "MOVIELENS_FILES",
    "MOVIELENS_GENRES",
    "MOVIELENS_ITEM_FILES",
    "ColumnMapping",
    "detect_format",
    "find_item_metadata",
    "read_interactions",
    "read_items",
]
