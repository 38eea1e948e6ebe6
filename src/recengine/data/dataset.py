"""The processed data set on disk: the one input every engine trains and is evaluated on.

A data set directory holds::

    interactions.parquet   user, item (int32 indices), timestamp (int64 s), weight (float32), split (int8)
                           sorted by user, then time, ties in input order
    items.parquet          item (index), item_id (external id), title, categories, numeric columns…
    users.parquet          user (index), user_id (external id)
    manifest.json          format version, source, statistics, split method, content hash

Indices start at 1; 0 is padding (and "unknown" when encoding external ids).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from recengine.errors import DataError

FORMAT_VERSION = 1
TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = {"train": TRAIN, "valid": VALID, "test": TEST}


class IdMap:
    """External id ↔ contiguous index, index 0 reserved for padding / unknown."""

    def __init__(self, ids: Sequence[str]) -> None:
        # ids[0] is the padding slot; ids[i] for i ≥ 1 are the known external ids.
        self.ids: list[str] = list(ids)
        self._index: dict[str, int] = {v: i for i, v in enumerate(self.ids) if i > 0}
        if len(self._index) != len(self.ids) - 1:
            raise DataError("id map has duplicate ids")

    @classmethod
    def from_ids(cls, ids: Iterable[str]) -> IdMap:
        return cls(["", *ids])

    def __len__(self) -> int:
        """Number of known ids (padding not counted)."""
        return len(self.ids) - 1

    def __contains__(self, external: object) -> bool:
        return external in self._index

    def index(self, external: str) -> int:
        """The index of an external id, 0 when unknown."""
        return self._index.get(str(external), 0)

    def encode(self, externals: Iterable[str]) -> np.ndarray:
        return np.fromiter((self._index.get(str(e), 0) for e in externals), dtype=np.int64)

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.ids[int(i)] for i in indices]


@dataclass
class ItemCatalog:
    """Item metadata aligned with item indices (row 0 is padding)."""

    ids: IdMap
    titles: list[str | None] | None = None
    categories: list[list[str]] | None = None
    numeric: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def category_vocab(self) -> list[str]:
        if self.categories is None:
            return []
        return sorted({c for cats in self.categories for c in cats})


@dataclass
class Dataset:
    """A processed data set in memory; :meth:`load` / :meth:`save` move it to and from disk."""

    user: np.ndarray  # (N,) int32, 1-based
    item: np.ndarray  # (N,) int32, 1-based
    timestamp: np.ndarray  # (N,) int64
    weight: np.ndarray  # (N,) float32
    split: np.ndarray  # (N,) int8: TRAIN / VALID / TEST
    items: ItemCatalog
    users: IdMap
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ---- sizes -------------------------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.items.ids)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_interactions(self) -> int:
        return int(self.user.shape[0])

    @property
    def content_hash(self) -> str:
        return str(self.manifest.get("content_hash") or compute_hash(self))

    # ---- views -------------------------------------------------------------------------------------------------
    def _user_bounds(self) -> np.ndarray:
        # Rows are sorted by user, so user u owns rows bounds[u]:bounds[u+1].
        return np.searchsorted(self.user, np.arange(self.n_users + 2), side="left")

    def sequences(self, max_split: int = TRAIN) -> list[np.ndarray]:
        """Per-user item sequences in time order, keeping rows with ``split <= max_split``.

        Returns a list indexed by user index (entry 0 is empty), each an int64 array.
        """
        keep = self.split <= max_split
        items = self.item[keep].astype(np.int64)
        users = self.user[keep]
        bounds = np.searchsorted(users, np.arange(self.n_users + 2), side="left")
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.n_users + 1)]

    def eval_cases(self, split: str = "test") -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Users to evaluate, their histories (everything before ``split``) and their target items.

        Targets already in the history are kept (they can never be hit once the history is excluded),
        which is the published leave-one-out protocol; users without targets are left out.
        """
        if split not in ("valid", "test"):
            raise DataError(f"split must be 'valid' or 'test', got {split!r}")
        code = SPLIT_NAMES[split]
        hist = self.sequences(max_split=code - 1)
        tmask = self.split == code
        t_users, t_items = self.user[tmask], self.item[tmask].astype(np.int64)
        bounds = np.searchsorted(t_users, np.arange(self.n_users + 2), side="left")
        users, histories, targets = [], [], []
        for u in np.unique(t_users):
            tgt = t_items[bounds[u] : bounds[u + 1]]
            users.append(u)
            histories.append(hist[u])
            targets.append(np.unique(tgt))
        return np.asarray(users, dtype=np.int64), histories, targets

    def train_matrix(self, max_split: int = TRAIN, binary: bool = True) -> sp.csr_matrix:
        """Users × items (both with the padding row/column 0) of the interactions up to ``max_split``."""
        keep = self.split <= max_split
        data = np.ones(int(keep.sum()), dtype=np.float32) if binary else self.weight[keep]
        mat = sp.csr_matrix(
            (data, (self.user[keep], self.item[keep])),
            shape=(self.n_users + 1, self.n_items + 1),
            dtype=np.float32,
        )
        if binary:
            mat.data[:] = 1.0  # duplicates were summed
        return mat

    def item_counts(self, max_split: int = TRAIN) -> np.ndarray:
        """Interactions per item (index 0 = padding = 0), from rows with ``split <= max_split``."""
        keep = self.split <= max_split
        return np.bincount(self.item[keep], minlength=self.n_items + 1).astype(np.int64)

    # ---- disk --------------------------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "user": pa.array(self.user, pa.int32()),
                    "item": pa.array(self.item, pa.int32()),
                    "timestamp": pa.array(self.timestamp, pa.int64()),
                    "weight": pa.array(self.weight, pa.float32()),
                    "split": pa.array(self.split, pa.int8()),
                }
            ),
            path / "interactions.parquet",
        )
        cols: dict[str, Any] = {
            "item": pa.array(np.arange(1, self.n_items + 1), pa.int32()),
            "item_id": pa.array(self.items.ids.ids[1:], pa.string()),
        }
        if self.items.titles is not None:
            cols["title"] = pa.array(self.items.titles[1:], pa.string())
        if self.items.categories is not None:
            cols["categories"] = pa.array(self.items.categories[1:], pa.list_(pa.string()))
        for name, values in self.items.numeric.items():
            cols[f"num:{name}"] = pa.array(values[1:], pa.float32())
        pq.write_table(pa.table(cols), path / "items.parquet")
        pq.write_table(
            pa.table(
                {
                    "user": pa.array(np.arange(1, self.n_users + 1), pa.int32()),
                    "user_id": pa.array(self.users.ids[1:], pa.string()),
                }
            ),
            path / "users.parquet",
        )
        self.manifest = {**self.manifest, **self.statistics(), "format_version": FORMAT_VERSION}
        self.manifest["content_hash"] = compute_hash(self)
        (path / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=True))
        self.path = path
        return path

    @classmethod
    def load(cls, path: Path) -> Dataset:
        """The data set at ``path``; a folder of data set versions (``recengine retrain`` writes one) gives the
        version its ``CURRENT`` file names."""
        path = resolve_data_dir(Path(path))
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise DataError(
                f"{path}: not a processed data set (no manifest.json); "
                "create one with `recengine data prepare` or `recengine data synth`"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
            inter = pq.read_table(path / "interactions.parquet")
            items_t = pq.read_table(path / "items.parquet")
            users_t = pq.read_table(path / "users.parquet")
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"{path}: cannot read processed data set: {exc}") from exc
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{manifest_path}: format_version {manifest.get('format_version')!r} is not supported "
                f"(expected {FORMAT_VERSION}); prepare the data again"
            )
        item_ids = IdMap.from_ids(items_t.column("item_id").to_pylist())
        n_items = len(item_ids)
        titles = ["", *items_t.column("title").to_pylist()] if "title" in items_t.column_names else None
        categories = [[], *items_t.column("categories").to_pylist()] if "categories" in items_t.column_names else None
        numeric = {
            name.removeprefix("num:"): np.concatenate(
                [[0.0], items_t.column(name).to_numpy(zero_copy_only=False)]
            ).astype(np.float32)
            for name in items_t.column_names
            if name.startswith("num:")
        }
        ds = cls(
            user=inter.column("user").to_numpy().astype(np.int32),
            item=inter.column("item").to_numpy().astype(np.int32),
            timestamp=inter.column("timestamp").to_numpy().astype(np.int64),
            weight=inter.column("weight").to_numpy().astype(np.float32),
            split=inter.column("split").to_numpy().astype(np.int8),
            items=ItemCatalog(ids=item_ids, titles=titles, categories=categories, numeric=numeric),
            users=IdMap.from_ids(users_t.column("user_id").to_pylist()),
            manifest=manifest,
            path=path,
        )
        if ds.n_interactions and (int(ds.item.max()) > n_items or int(ds.item.min()) < 1):
            raise DataError(f"{path}: interactions reference items outside 1..{n_items}")
        return ds

    def statistics(self) -> dict[str, Any]:
        seq_lens = np.bincount(self.user, minlength=self.n_users + 1)[1:]
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
            "n_train": int((self.split == TRAIN).sum()),
            "n_valid": int((self.split == VALID).sum()),
            "n_test": int((self.split == TEST).sum()),
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "mean_sequence_length": float(seq_lens.mean()) if seq_lens.size else 0.0,
            "median_sequence_length": float(np.median(seq_lens)) if seq_lens.size else 0.0,
            "p90_sequence_length": float(np.percentile(seq_lens, 90)) if seq_lens.size else 0.0,
        }


CURRENT = "CURRENT"
"""In a folder of data set versions, the file naming the newest complete one."""


def resolve_data_dir(path: Path) -> Path:
    """``path`` itself, or, for a folder of versions (no manifest, a ``CURRENT`` file), the version it names."""
    path = Path(path)
    pointer = path / CURRENT
    if (path / "manifest.json").is_file() or not pointer.is_file():
        return path
    try:
        name = pointer.read_text().strip()
    except OSError as exc:
        raise DataError(f"{pointer}: cannot read ({exc})") from None
    if not name or "/" in name or not (path / name / "manifest.json").is_file():
        raise DataError(f"{pointer}: names {name!r}, which is not a data set in {path}")
    return path / name


def compute_hash(ds: Dataset) -> str:
    """Content hash over the interaction arrays and the id maps: same data → same hash, whatever the file bytes."""
    h = hashlib.sha256()
    for arr in (ds.user, ds.item, ds.timestamp, ds.weight, ds.split):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\x1f".join(ds.items.ids.ids).encode())
    h.update("\x1f".join(ds.users.ids).encode())
    return h.hexdigest()[:16]
