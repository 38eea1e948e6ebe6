"""The ranking stage: LightGBM ``lambdarank`` re-ranks the union of the base engines' candidates.

    ranker = training.run.fit("ranker", dataset, settings.engines.ranker, training, artifacts_dir)
    scores = ranker.score(histories)     # (B, n_items + 1): candidates by the booster, every other item below them

Training reads the base engines (``engines.ranker.base_engines``) from their CURRENT artifacts under the artifacts
folder, each trained on this very data set and none of them refit (a refit model has seen the validation targets
the ranker learns from). For each validation user, whose history is the train part, the candidates are the union of
each base engine's top ``candidates`` items (history left out); each (user, candidate) row gets the features below,
and label 1 when the candidate is a validation target. The grid (``num_leaves`` × ``learning_rates``) and the number
of boosting rounds are chosen by K-fold cross-validation over validation users; the test split is never read.

Features of a (user, item) row, in this order (NaN is LightGBM's "missing"):
    <engine>_score      the base engine's score of the item (NaN where not finite)
    <engine>_rank       its 0-based rank in that engine's top-M, M where it is not there
    votes               how many base engines have the item in their top-M
    log_popularity      log(1 + the item's training interactions)
    age_days            days from the item's last training interaction to the newest one (NaN: never in train)
    history_length      known items in the user's history
    category_affinity   the largest share of the user's history in one of the item's categories (NaN: none)

Every item outside the candidate union scores below every candidate (the contract asks for finite scores over the
whole catalogue): ``min(candidate scores) - 2 + p`` with ``p`` in [0, 1) rising with popularity, so a caller asking
for more items than the union holds gets the popular ones next, and never one before a candidate.

The artifact is data only: ``booster.txt`` (LightGBM's text model), the item features in ``weights.safetensors``,
and a copy of each base engine's artifact under ``base/<engine>/``, pinned by version in ``config.json``
(``base_engines``). A ranker is rebuilt from its own directory alone, and a new version of a base engine moving
``CURRENT`` (a hot reload) changes nothing it scores with. The price: a served ranker holds its own copy of every base
model in memory (EASE alone is 4·(N+1)² bytes: 0.4 GB at 10k items) and on disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
import torch

from recengine.data.dataset import TRAIN, VALID, Dataset, ItemCatalog
from recengine.engines import load_engine
from recengine.engines.artifact import current_dir, read_artifact, require
from recengine.engines.base import Engine, known_items
from recengine.errors import ArtifactError, ConfigError, DataError, NoHistory
from recengine.evaluation import mask_scores
from recengine.settings import RankerSettings

BOOSTER_FILE = "booster.txt"
BASE_DIR = "base"
#: Rows of users whose candidates are built at once during training (bounds the (B, N+1) score matrices).
_CHUNK = 256
ITEM_FEATURES = ("votes", "log_popularity", "age_days", "history_length", "category_affinity")


def feature_names(bases: Sequence[str]) -> list[str]:
    return [f"{name}_{kind}" for name in bases for kind in ("score", "rank")] + list(ITEM_FEATURES)


@dataclass(frozen=True)
class Candidates:
    """The candidate rows of a batch of histories: (row, item) pairs sorted by row then item, and their features."""

    rows: np.ndarray  # (P,) int64, the history each pair belongs to
    items: np.ndarray  # (P,) int64, item indices
    features: np.ndarray  # (P, F) float32
    n_rows: int

    def groups(self) -> np.ndarray:
        """Pairs per history, in row order (LightGBM's query sizes)."""
        return np.bincount(self.rows, minlength=self.n_rows)


class ItemFeatures:
    """The per-item inputs of the features: training popularity, age and the item–category incidence."""

    def __init__(self, log_popularity: torch.Tensor, age_days: torch.Tensor, items: ItemCatalog) -> None:
        self.log_popularity = log_popularity.float()  # (N+1,)
        self.age_days = age_days.float()  # (N+1,), NaN for items never in the training part
        vocab = {c: j for j, c in enumerate(items.category_vocab())}
        cats = items.categories or []
        indptr = np.zeros(items.n_items + 2, dtype=np.int64)
        indices: list[int] = []
        for i in range(items.n_items + 1):
            row = cats[i] if i < len(cats) and cats[i] else []
            indices.extend(sorted({vocab[c] for c in row}))
            indptr[i + 1] = len(indices)
        self.n_categories = len(vocab)
        self._cat_lengths = np.diff(indptr)  # categories per item
        #: (N+1, C) binary item × category matrix, CSR
        self.categories = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), np.asarray(indices, dtype=np.int64), indptr),
            shape=(items.n_items + 1, max(1, len(vocab))),
        )
        lp = self.log_popularity.clone()
        lp[0] = 0.0
        #: [0, 1), rising with popularity: the order of the items outside the candidates
        self.tail_order = (lp / (float(lp.max()) + 1.0)).unsqueeze(0)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> ItemFeatures:
        keep = dataset.split == TRAIN
        n = dataset.n_items + 1
        counts = np.bincount(dataset.item[keep], minlength=n).astype(np.float32)
        last = np.full(n, -np.inf)
        np.maximum.at(last, dataset.item[keep], dataset.timestamp[keep].astype(np.float64))
        newest = float(dataset.timestamp[keep].max()) if keep.any() else 0.0
        age = np.where(np.isfinite(last), (newest - last) / 86_400.0, np.nan).astype(np.float32)
        counts[0], age[0] = 0.0, np.nan
        return cls(torch.from_numpy(np.log1p(counts)), torch.from_numpy(age), dataset.items)

    def affinity(self, histories: Sequence[np.ndarray], rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Per pair: the largest share of the row's history that lies in one of the item's categories."""
        out = np.full(rows.size, np.nan, dtype=np.float32)
        if self.n_categories == 0 or rows.size == 0:
            return out
        c = self.categories
        # Per history, the share of its (distinct) items in each category: (B, C).
        share = np.zeros((len(histories), c.shape[1]), dtype=np.float32)
        uniq = [np.unique(h) for h in histories]
        h_rows = np.repeat(np.arange(len(uniq)), [u.size for u in uniq])
        h_pair, h_cats = self._pair_categories(np.concatenate(uniq) if uniq else np.zeros(0, np.int64))
        np.add.at(share, (h_rows[h_pair], h_cats), 1.0)
        share /= np.maximum(1, np.asarray([u.size for u in uniq], dtype=np.float32))[:, None]
        has = self._cat_lengths[items] > 0
        pair, cats = self._pair_categories(items)
        best = np.zeros(rows.size, dtype=np.float32)
        np.maximum.at(best, pair, share[rows[pair], cats])
        out[has] = best[has]
        return out

    def _pair_categories(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (position in ``items``, category of that item), flattened from the CSR incidence matrix."""
        c = self.categories
        lengths = self._cat_lengths[items]
        pair = np.repeat(np.arange(items.size), lengths)
        offset = np.arange(pair.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return pair, c.indices[np.repeat(c.indptr[items], lengths) + offset]


class Ranker(Engine):
    name = "ranker"
    needs_history: ClassVar[bool] = True
    #: The ranker learns from the validation split's targets: validation figures of its own are in-sample, and its
    #: held-out estimate is the cross-validated one (``cv_ndcg@10``).
    learns_from_validation: ClassVar[bool] = True

    def __init__(
        self,
        booster: lgb.Booster,
        bases: dict[str, Engine],
        base_paths: dict[str, Path],
        item_features: ItemFeatures,
        candidates: int,
        inference_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.booster = booster
        self.bases = bases  # name → engine, in feature order
        self.base_paths = base_paths  # name → the artifact directory each base engine was loaded from
        self.item_features = item_features
        self.m = candidates
        self.inference_threads = inference_threads

    # ---- candidates and features -------------------------------------------------------------------------------
    def candidates(self, histories: Sequence[np.ndarray]) -> Candidates:
        """The union of the base engines' top-M per history (history left out) and each pair's features."""
        known = [known_items(h, self.n_items) for h in histories]
        for i, h in enumerate(known):
            if h.size == 0:
                raise NoHistory(f"history {i} has no known items; the ranker needs at least one")
        return build_candidates(self.bases, self.item_features, known, self.m, self.n_items)

    # ---- inference ---------------------------------------------------------------------------------------------
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        cand = self.candidates(histories)
        predicted = self.predict(cand.features)
        return scatter_scores(cand, predicted, self.item_features.tail_order, self.n_items)

    def predict(self, features: np.ndarray) -> np.ndarray:
        if features.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        # num_threads 0: LightGBM's default (OpenMP's); an artifact's setting pins it (1 by default).
        out = self.booster.predict(features, num_threads=self.inference_threads or 0)
        return np.asarray(out, dtype=np.float32)

    # ---- training ----------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        config: RankerSettings | None = None,
        progress: Callable[[str], None] | None = None,
        artifacts_dir: Path | None = None,
        **kwargs: Any,
    ) -> Self:
        config = config or RankerSettings()
        say = progress or (lambda message: None)
        if not (dataset.split == VALID).any():
            raise DataError(
                "ranker: it learns from the validation split's targets and this data set has none (a refit on "
                "every interaction leaves it nothing to learn from: train it on a split data set)"
            )
        if artifacts_dir is None:
            raise ConfigError("ranker: training needs the artifacts folder that holds its base engines' models")
        bases, paths, skipped = find_bases(Path(artifacts_dir), config.base_engines, dataset)
        for name, why in skipped.items():
            say(f"base engine {name} skipped: {why}")
        say(f"base engines: {', '.join(f'{n} ({e.version})' for n, e in bases.items())}")
        features = ItemFeatures.from_dataset(dataset)
        _, histories, targets = dataset.eval_cases("valid")
        keep = [i for i, h in enumerate(histories) if known_items(h, dataset.n_items).size]
        if config.max_users is not None and len(keep) > config.max_users:
            rng = np.random.default_rng(config.seed)
            keep = sorted(rng.choice(keep, size=config.max_users, replace=False).tolist())
        if not keep:
            raise DataError("ranker: no validation user has a history to rank candidates for")
        hs = [known_items(histories[i], dataset.n_items) for i in keep]
        ts = [targets[i] for i in keep]
        x, y, groups = training_rows(bases, features, hs, ts, config.candidates, dataset.n_items)
        positive = np.add.reduceat(y, np.r_[0, np.cumsum(groups)[:-1]]) > 0 if groups.size else np.zeros(0, bool)
        recall = float(positive.mean()) if positive.size else 0.0
        say(f"{len(hs)} validation users, {x.shape[0]} candidate rows; target among the candidates: {recall:.3f}")
        names = feature_names(list(bases))
        choice = cross_validate(x, y, groups, positive, config, names, say)
        booster = train_booster(x, y, groups, positive, choice["params"], choice["rounds"], names)
        hyper = {**config.model_dump(), "base_engines": list(bases)}
        return cls(
            booster=booster,
            bases=bases,
            base_paths=paths,
            item_features=features,
            candidates=config.candidates,
            inference_threads=config.inference_threads,
            items=dataset.items,
            config={
                "hyper_parameters": hyper,
                "chosen": {**choice["params_short"], "rounds": choice["rounds"]},
                "features": names,
                "dataset_hash": dataset.content_hash,
            },
            metrics={
                "cv_ndcg@10": choice["score"],
                "cv": choice["table"],
                "candidate_recall": recall,
                "n_valid_users": len(hs),
                "n_candidate_rows": int(x.shape[0]),
                "skipped_base_engines": skipped,
                "feature_importance_gain": dict(
                    zip(names, booster.feature_importance("gain").round(3).tolist(), strict=True)
                ),
            },
        )

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / BOOSTER_FILE).write_text(self.booster.model_to_string())
        pinned = []
        for name, engine in self.bases.items():
            src, dst = self.base_paths[name], path / BASE_DIR / name
            if src.resolve() != dst.resolve():
                if dst.exists():
                    shutil.rmtree(dst)
                shutil.copytree(src, dst)
            pinned.append(
                {"engine": name, "version": engine.version, "dataset_hash": engine.config.get("dataset_hash")}
            )
        self.config["base_engines"] = pinned
        self.config["candidates"] = self.m
        self.config["inference_threads"] = self.inference_threads
        # config.json is written last (by _write): a directory with a config.json is complete.
        return self._write(
            path,
            {"item_log_popularity": self.item_features.log_popularity, "item_age_days": self.item_features.age_days},
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        art = read_artifact(path, expect_engine=cls.name)
        n = art.items.n_items + 1
        log_pop = require(art, "item_log_popularity", (n,))
        age = require(art, "item_age_days", (n,))
        pinned = art.config.get("base_engines")
        names = art.config.get("features")
        if not isinstance(pinned, list) or not pinned or not isinstance(names, list):
            raise ArtifactError(f"{path}/config.json: no 'base_engines' list or 'features' list")
        bases: dict[str, Engine] = {}
        paths: dict[str, Path] = {}
        for record in pinned:
            name, version = record.get("engine"), record.get("version")
            where = path / BASE_DIR / str(name)
            if not (where / "config.json").is_file():
                raise ArtifactError(
                    f"{path}: base engine {name!r} (version {version}) is missing: expected its artifact at {where}"
                )
            engine = load_engine(where)
            if engine.name != name or engine.version != version:
                raise ArtifactError(
                    f"{where}: holds {engine.name} version {engine.version}, but the ranker was trained on "
                    f"{name} version {version}"
                )
            if engine.item_ids.ids != art.items.ids.ids:
                raise ArtifactError(f"{where}: its item catalogue differs from the ranker's")
            bases[str(name)] = engine
            paths[str(name)] = where
        if names != feature_names(list(bases)):
            raise ArtifactError(f"{path}/config.json: 'features' does not match the base engines {list(bases)}")
        booster_path = path / BOOSTER_FILE
        try:
            booster = lgb.Booster(model_str=booster_path.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{path}: missing {BOOSTER_FILE}; not a complete ranker artifact") from None
        except (OSError, UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
            raise ArtifactError(f"{booster_path}: not a LightGBM model ({exc})") from None
        if booster.num_feature() != len(names):
            raise ArtifactError(f"{booster_path}: the model reads {booster.num_feature()} features, not {len(names)}")
        threads = art.config.get("inference_threads")
        return cls(
            booster=booster,
            bases=bases,
            base_paths=paths,
            item_features=ItemFeatures(log_pop, age, art.items),
            candidates=int(art.config.get("candidates") or 100),
            inference_threads=int(threads) if isinstance(threads, int) else None,
            items=art.items,
            config=art.config,
            metrics=art.metrics,
        )


# ---- the pieces, as functions (the tests call them directly) ------------------------------------------------------
def find_bases(
    root: Path, names: Sequence[str], dataset: Dataset
) -> tuple[dict[str, Engine], dict[str, Path], dict[str, str]]:
    """The usable base engines under ``root``: CURRENT, trained on ``dataset`` (same hash), not refit."""
    bases: dict[str, Engine] = {}
    paths: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name in names:
        where = current_dir(root, name)
        if where is None:
            skipped[name] = f"no CURRENT model under {root / name}"
            continue
        engine = load_engine(where)
        if engine.config.get("dataset_hash") != dataset.content_hash:
            skipped[name] = (
                f"{where} was trained on data set {engine.config.get('dataset_hash')}, not {dataset.content_hash}"
            )
        elif engine.config.get("refit"):
            skipped[name] = f"{where} is a refit model: it has seen the validation targets the ranker learns from"
        elif engine.item_ids.ids != dataset.items.ids.ids:
            skipped[name] = f"{where}: its item catalogue differs from the data set's"
        else:
            bases[name], paths[name] = engine, where
    if not bases:
        raise ConfigError(
            "ranker: no usable base engine; train them on this data set first (recengine train --engine NAME). "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    return bases, paths, skipped


def build_candidates(
    bases: dict[str, Engine], items: ItemFeatures, histories: Sequence[np.ndarray], m: int, n_items: int
) -> Candidates:
    """Candidates and features of known-item ``histories`` (each non-empty), from every base engine's scores."""
    b = len(histories)
    m = max(1, min(m, n_items))
    member = torch.zeros((b, n_items + 1), dtype=torch.bool)
    scores, ranks = [], []
    positions = torch.arange(m, dtype=torch.int16 if m < 2**15 else torch.int32)
    for engine in bases.values():
        s = engine.score(histories).clone()  # (B, N+1); a clone: some engines hand out shared or inference tensors
        mask_scores(s, list(histories))
        values, top = torch.topk(s, m, dim=1)
        found = torch.isfinite(values)
        rank = torch.full((b, n_items + 1), m, dtype=positions.dtype)
        rank.scatter_(1, top, torch.where(found, positions.expand(b, m), torch.tensor(m, dtype=positions.dtype)))
        member |= rank < m
        scores.append(s)
        ranks.append(rank)
    rows_t, items_t = member.nonzero(as_tuple=True)  # row-major: sorted by row, then item
    n_pairs, n_bases = rows_t.numel(), len(bases)
    x = np.empty((n_pairs, 2 * n_bases + len(ITEM_FEATURES)), dtype=np.float32)
    votes = torch.zeros(n_pairs)
    for j, (s, rank) in enumerate(zip(scores, ranks, strict=True)):
        picked = s[rows_t, items_t]
        x[:, 2 * j] = torch.where(torch.isfinite(picked), picked, torch.nan).numpy()
        r = rank[rows_t, items_t]
        x[:, 2 * j + 1] = r.numpy()
        votes += (r < m).float()
    rows, cand = rows_t.numpy().astype(np.int64), items_t.numpy().astype(np.int64)
    f = 2 * n_bases
    x[:, f] = votes.numpy()
    x[:, f + 1] = items.log_popularity.numpy()[cand]
    x[:, f + 2] = items.age_days.numpy()[cand]
    x[:, f + 3] = np.asarray([np.unique(h).size for h in histories], dtype=np.float32)[rows]
    x[:, f + 4] = items.affinity(histories, rows, cand)
    return Candidates(rows=rows, items=cand, features=x, n_rows=b)


def scatter_scores(cand: Candidates, predicted: np.ndarray, tail_order: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, N+1) scores: the candidates' predictions, every other item below the row's lowest one, padding -inf."""
    rows, items = torch.from_numpy(cand.rows), torch.from_numpy(cand.items)
    pred = torch.from_numpy(np.asarray(predicted, dtype=np.float32))
    floor = torch.full((cand.n_rows,), torch.inf)
    if pred.numel():
        floor = floor.scatter_reduce(0, rows, pred, reduce="amin")
    floor = torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))
    out = (floor.unsqueeze(1) - 2.0) + tail_order.expand(cand.n_rows, n_items + 1)
    out[rows, items] = pred
    out[:, 0] = -torch.inf
    return out


def training_rows(
    bases: dict[str, Engine],
    items: ItemFeatures,
    histories: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    m: int,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels (1: a target) and query sizes of every history's candidates, built in chunks."""
    xs, ys, gs = [], [], []
    for start in range(0, len(histories), _CHUNK):
        hs = histories[start : start + _CHUNK]
        cand = build_candidates(bases, items, hs, m, n_items)
        label = np.zeros(cand.items.size, dtype=np.float32)
        bounds = np.searchsorted(cand.rows, np.arange(len(hs) + 1))
        for i in range(len(hs)):
            lo, hi = bounds[i], bounds[i + 1]
            label[lo:hi] = np.isin(cand.items[lo:hi], targets[start + i])
        xs.append(cand.features)
        ys.append(label)
        gs.append(cand.groups())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def _params(config: RankerSettings, num_leaves: int, lr: float) -> dict[str, Any]:
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": num_leaves,
        "learning_rate": lr,
        "min_data_in_leaf": config.min_data_in_leaf,
        "num_threads": config.training_threads or 0,  # 0: LightGBM's default (OpenMP's: every core)
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


def _subset(x: np.ndarray, y: np.ndarray, groups: np.ndarray, queries: np.ndarray, names: list[str]) -> lgb.Dataset:
    """The rows of the chosen queries (sorted query indices), as a LightGBM ranking data set."""
    starts = np.r_[0, np.cumsum(groups)[:-1]]
    rows = np.concatenate([np.arange(starts[q], starts[q] + groups[q]) for q in queries])
    return lgb.Dataset(x[rows], y[rows], group=groups[queries], feature_name=names, free_raw_data=False)


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    positive: np.ndarray,
    config: RankerSettings,
    names: list[str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Pick (num_leaves, learning rate) and the rounds by K-fold CV over the validation users.

    A user is in one fold; only users with a target among their candidates are trained on (the others carry no
    gradient), but every user counts in the score, at 0 when the target is not a candidate: the CV NDCG@10 is a
    full-ranking estimate, comparable with the other engines' validation figures. Each fold stops early on its own
    held-out users; the rounds kept are the folds' mean best round."""
    rng = np.random.default_rng(config.seed)
    fold_of = rng.permutation(groups.size) % config.folds
    table: dict[str, dict[str, float]] = {}
    best: dict[str, Any] | None = None
    for leaves in config.num_leaves:
        for lr in config.learning_rates:
            params = _params(config, leaves, lr)
            total, rounds = 0.0, []
            for k in range(config.folds):
                train_q = np.flatnonzero((fold_of != k) & positive)
                test_q = np.flatnonzero((fold_of == k) & positive)
                if train_q.size == 0 or test_q.size == 0:
                    raise DataError(
                        f"ranker: too few validation users with a target among the candidates ({int(positive.sum())}) "
                        f"for {config.folds}-fold cross-validation"
                    )
                train = _subset(x, y, groups, train_q, names)
                held = _subset(x, y, groups, test_q, names)
                booster = lgb.train(
                    params,
                    train,
                    num_boost_round=config.max_rounds,
                    valid_sets=[held],
                    callbacks=[lgb.early_stopping(config.early_stopping, verbose=False)],
                )
                ndcg = float(booster.best_score["valid_0"]["ndcg@10"])
                total += ndcg * test_q.size  # users of the fold without a candidate target add 0
                rounds.append(max(1, booster.best_iteration))
            score = total / groups.size
            mean_rounds = round(float(np.mean(rounds)))
            key = f"num_leaves={leaves},learning_rate={lr:g}"
            table[key] = {"cv_ndcg@10": round(score, 6), "rounds": mean_rounds}
            say(f"{key}: cv ndcg@10={score:.4f} after {mean_rounds} rounds")
            if best is None or score > best["score"]:
                best = {
                    "score": score,
                    "params": params,
                    "params_short": {"num_leaves": leaves, "learning_rate": lr},
                    "rounds": mean_rounds,
                }
    assert best is not None
    best["table"] = table
    return best


def train_booster(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    positive: np.ndarray,
    params: dict[str, Any],
    rounds: int,
    names: list[str],
) -> lgb.Booster:
    """The final model: every validation user with a candidate target, the chosen parameters and rounds."""
    data = _subset(x, y, groups, np.flatnonzero(positive), names)
    return lgb.train({k: v for k, v in params.items() if k not in ("metric", "eval_at")}, data, rounds)
