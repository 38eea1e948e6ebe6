"""The Engine contract (``engines/base.py``), one suite for every engine: mix it into a test class, name the engine.

    class TestPopularityContract(EngineContract):
        engine_name = "popularity"
        needs_history = False

Every check runs on ``fitted(engine_name)`` from ``tests/engines/conftest.py``: the engine with tiny settings,
fitted once per session on the small synthetic data set.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from recengine.data.dataset import Dataset
from recengine.engines import load_engine
from recengine.engines.base import Engine
from recengine.errors import ArtifactError, NoHistory

EMPTY = np.zeros(0, dtype=np.int64)


def unknown_indices(n_items: int) -> np.ndarray:
    """Indices that name no item: padding, negative, past the catalogue."""
    return np.array([0, -1, -7, n_items + 1, n_items + 50], dtype=np.int64)


def rewrite_weights(path: Path, tensors: dict[str, torch.Tensor], bookkeeping: str) -> None:
    """Replace the artifact's tensors; ``bookkeeping="consistent"`` updates config.json's declared shapes to match,
    so the engine's own checks (not the artifact reader's) must catch what is wrong."""
    save_file(tensors, str(path / "weights.safetensors"))
    if bookkeeping == "consistent":
        config = json.loads((path / "config.json").read_text())
        config["tensor_shapes"] = {name: list(t.shape) for name, t in tensors.items()}
        (path / "config.json").write_text(json.dumps(config))


def wrong_shape(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros((t.shape[0] + 1, *t.shape[1:]) if t.ndim else (2,), dtype=t.dtype)


class EngineContract:
    """What every engine promises. Subclasses name the engine and say whether it needs a history; nothing else
    is engine-specific."""

    engine_name: ClassVar[str]
    needs_history: ClassVar[bool]

    @pytest.fixture
    def engine(self, fitted: Callable[[str], Engine]) -> Engine:
        return fitted(self.engine_name)

    @pytest.fixture
    def histories(self, small_dataset: Dataset) -> list[np.ndarray]:
        """Eight users' histories before their test item (none empty)."""
        _, histories, _ = small_dataset.eval_cases("test")
        return histories[:8]

    # ---- scores ------------------------------------------------------------------------------------------------
    def test_scores_cover_the_catalogue_with_padding_at_minus_inf(
        self, engine: Engine, histories: list[np.ndarray]
    ) -> None:
        scores = engine.score(histories)
        assert isinstance(scores, torch.Tensor) and scores.dtype == torch.float32
        assert scores.shape == (len(histories), engine.n_items + 1)
        assert torch.isneginf(scores[:, 0]).all(), "column 0 is padding: it must never be chosen"
        assert torch.isfinite(scores[:, 1:]).all()

    def test_a_batch_scores_each_history_as_if_alone(self, engine: Engine, histories: list[np.ndarray]) -> None:
        batch = engine.score(histories)
        for i, history in enumerate(histories):
            torch.testing.assert_close(batch[i], engine.score([history])[0], rtol=1e-5, atol=1e-5)

    # ---- recommend ---------------------------------------------------------------------------------------------
    def test_recommend_returns_the_best_k_best_first_without_history_or_padding(
        self, engine: Engine, histories: list[np.ndarray]
    ) -> None:
        n = engine.n_items
        ids, scores = engine.recommend(histories, k=10)
        assert ids.shape == scores.shape == (len(histories), 10)
        assert np.all(np.diff(scores, axis=1) <= 0), "best first"
        full = engine.score(histories).numpy()
        for i, (row, row_scores, history) in enumerate(zip(ids, scores, histories, strict=True)):
            assert len(set(row.tolist())) == 10
            assert ((row >= 1) & (row <= n)).all(), "padding returned while candidates remain"
            assert not np.isin(row, history).any(), "the history is excluded by default"
            np.testing.assert_allclose(row_scores, full[i, row], rtol=1e-6)  # the engine's own scores
            left_out = np.setdiff1d(np.arange(1, n + 1), np.concatenate([row, history]))
            assert full[i, left_out].max() <= row_scores[-1], "a better candidate was left out"

    def test_explicit_exclusions_are_honoured(self, engine: Engine, histories: list[np.ndarray]) -> None:
        first, _ = engine.recommend(histories, k=5)
        extra = [row[:2] for row in first]
        ids, _ = engine.recommend(histories, k=5, exclude=extra)
        assert ids.shape == (len(histories), 5)
        for row, history, more in zip(ids, histories, extra, strict=True):
            assert (row > 0).all()
            assert not np.isin(row, np.concatenate([history, more])).any()

    def test_exclude_history_false_lets_history_items_through(
        self, engine: Engine, histories: list[np.ndarray]
    ) -> None:
        n = engine.n_items
        everything, _ = engine.recommend(histories, k=n, exclude_history=False)
        assert everything.shape == (len(histories), n)
        for row in everything:
            assert sorted(row.tolist()) == list(range(1, n + 1)), "every item, the history's included"
        # An explicit exclusion still applies: excluding the history by hand is the default behaviour.
        by_hand, _ = engine.recommend(histories, k=n, exclude=histories, exclude_history=False)
        default, _ = engine.recommend(histories, k=n)
        np.testing.assert_array_equal(by_hand, default)

    def test_an_allow_list_keeps_a_row_to_its_items_and_fills_k_from_them(
        self, engine: Engine, histories: list[np.ndarray]
    ) -> None:
        n = engine.n_items
        rng = np.random.default_rng(0)
        picks = [rng.choice(np.arange(1, n + 1), size=25, replace=False) for _ in histories]
        allow: list[np.ndarray | None] = list(picks)
        allow[1] = None  # no filter on this row
        allow[2] = np.concatenate([histories[2][:3], unknown_indices(n)])  # history items only, and unknown ones
        named = [picks[0][:3]] + [EMPTY] * (len(histories) - 1)  # an exclusion inside the allow-list
        ids, scores = engine.recommend(histories, k=10, exclude=named, allow=allow)
        assert ids.shape == scores.shape == (len(histories), 10)
        full = engine.score(histories).numpy()
        plain, _ = engine.recommend(histories[1:2], k=10)
        np.testing.assert_array_equal(ids[1], plain[0])
        for i, (row, row_scores, history) in enumerate(zip(ids, scores, histories, strict=True)):
            if allow[i] is None:
                continue
            rows = np.asarray(allow[i])
            left = np.setdiff1d(rows[(rows >= 1) & (rows <= n)], np.concatenate([history, named[i]]))
            m = min(10, len(left))
            assert set(row[:m].tolist()) <= set(left.tolist()) and len(set(row[:m].tolist())) == m
            assert (row[m:] == 0).all() and np.isneginf(row_scores[m:]).all(), "short rows are padding"
            assert np.all(np.diff(row_scores[:m]) <= 0), "best first"
            np.testing.assert_allclose(row_scores[:m], full[i, row[:m]], rtol=1e-5)
            if m and len(left) > m:
                assert full[i, np.setdiff1d(left, row[:m])].max() <= row_scores[m - 1], "a better allowed item left out"
        assert (ids[2] == 0).all(), "an allow-list of history items and unknown ones leaves nothing"
        nothing, _ = engine.recommend(histories[:1], k=5, allow=[EMPTY])
        assert (nothing == 0).all(), "an empty allow-list allows no item"
        everything, _ = engine.recommend(histories[:1], k=n, exclude_history=False, allow=[np.arange(1, n + 1)])
        np.testing.assert_array_equal(everything, engine.recommend(histories[:1], k=n, exclude_history=False)[0])

    def test_rows_short_of_candidates_are_padded_with_zero_and_minus_inf(self, engine: Engine) -> None:
        n = engine.n_items
        everything = np.arange(1, n + 1)
        ids, scores = engine.recommend([everything[:-2]], k=5)
        assert set(ids[0, :2].tolist()) == set(everything[-2:].tolist())
        assert np.isfinite(scores[0, :2]).all()
        assert ids[0, 2:].tolist() == [0, 0, 0] and np.isneginf(scores[0, 2:]).all()
        ids, scores = engine.recommend([everything[:5]], k=n + 10)
        assert ids.shape == (1, n), "k is capped at the catalogue size"
        assert (ids[0, : n - 5] > 0).all() and (ids[0, n - 5 :] == 0).all()
        assert np.isneginf(scores[0, n - 5 :]).all()

    # ---- similar items -----------------------------------------------------------------------------------------
    def test_similar_items_leave_the_item_out(self, engine: Engine) -> None:
        ids, scores = engine.similar_items(np.array([3, 7]), k=5)
        assert ids.shape == scores.shape == (2, 5)
        assert 3 not in ids[0] and 7 not in ids[1]
        assert ((ids >= 1) & (ids <= engine.n_items)).all()
        assert all(len(set(row.tolist())) == 5 for row in ids)
        assert np.all(np.diff(scores, axis=1) <= 0), "best first"

    # ---- persistence -------------------------------------------------------------------------------------------
    def test_save_then_load_gives_identical_answers(
        self, engine: Engine, histories: list[np.ndarray], small_dataset: Dataset, tmp_path: Path
    ) -> None:
        path = engine.save(tmp_path / "model")
        loaded = load_engine(path)
        assert type(loaded) is type(engine)
        assert torch.equal(loaded.score(histories), engine.score(histories))
        for got, want in zip(loaded.recommend(histories, k=10), engine.recommend(histories, k=10), strict=True):
            np.testing.assert_array_equal(got, want)
        items = np.array([3, 7])
        for got, want in zip(loaded.similar_items(items, k=5), engine.similar_items(items, k=5), strict=True):
            np.testing.assert_array_equal(got, want)
        assert loaded.item_ids.ids == engine.item_ids.ids
        assert loaded.items.titles == small_dataset.items.titles
        assert loaded.version == json.loads((path / "config.json").read_text())["version"] != "unversioned"
        assert getattr(loaded, "inference_threads", None) == getattr(engine, "inference_threads", None)

    def test_load_refuses_a_missing_weights_file(self, engine: Engine, tmp_path: Path) -> None:
        path = engine.save(tmp_path / "model")
        (path / "weights.safetensors").unlink()
        with pytest.raises(ArtifactError, match=r"missing weights\.safetensors"):
            type(engine).load(path)

    @pytest.mark.parametrize("defect", ["missing", "wrong shape"])
    @pytest.mark.parametrize("bookkeeping", ["stale", "consistent"])
    def test_load_refuses_any_missing_or_misshapen_tensor_and_names_it(
        self, engine: Engine, tmp_path: Path, bookkeeping: str, defect: str
    ) -> None:
        saved = engine.save(tmp_path / "model")
        tensors = load_file(str(saved / "weights.safetensors"))
        for name in sorted(tensors):
            path = shutil.copytree(saved, tmp_path / f"{defect}-{name}".replace(" ", "-"))
            if defect == "missing":
                rewrite_weights(path, {k: v for k, v in tensors.items() if k != name}, bookkeeping)
                expected = [repr(name)]
            else:
                bad = wrong_shape(tensors[name])
                rewrite_weights(path, {**tensors, name: bad}, bookkeeping)
                expected = [repr(name), str(list(bad.shape))]
            with pytest.raises(ArtifactError, match=re.escape(repr(name))) as refused:
                type(engine).load(path)
            assert all(part in str(refused.value) for part in [str(path), *expected])

    # ---- empty histories and unknown items ---------------------------------------------------------------------
    def test_an_empty_history_raises_no_history_iff_the_engine_needs_one(
        self, engine: Engine, histories: list[np.ndarray]
    ) -> None:
        assert engine.needs_history is self.needs_history
        batch = [histories[0], EMPTY]
        if engine.needs_history:
            with pytest.raises(NoHistory, match="history 1"):
                engine.score(batch)
            with pytest.raises(NoHistory, match="history 1"):
                engine.recommend(batch, k=5)
        else:
            assert engine.score(batch).shape == (2, engine.n_items + 1)
            ids, _ = engine.recommend(batch, k=5)
            assert (ids[1] > 0).all()

    def test_unknown_items_in_a_history_are_skipped(self, engine: Engine, histories: list[np.ndarray]) -> None:
        n = engine.n_items
        history = histories[0]
        noise = unknown_indices(n)
        noisy = np.concatenate([noise[:2], history[:2], noise[2:4], history[2:], noise[4:]])
        assert torch.equal(engine.score([noisy]), engine.score([history]))
        for got, want in zip(engine.recommend([noisy], k=n), engine.recommend([history], k=n), strict=True):
            np.testing.assert_array_equal(got, want)

    def test_unknown_items_in_exclude_are_skipped(self, engine: Engine, histories: list[np.ndarray]) -> None:
        n = engine.n_items
        # The whole ranking: a negative index must not wrap around onto the last items.
        noisy = engine.recommend(histories[:1], k=n, exclude=[unknown_indices(n)])
        clean = engine.recommend(histories[:1], k=n)
        for got, want in zip(noisy, clean, strict=True):
            np.testing.assert_array_equal(got, want)

    def test_a_history_of_unknown_items_is_an_empty_history(self, engine: Engine) -> None:
        unknown = unknown_indices(engine.n_items)
        if engine.needs_history:
            with pytest.raises(NoHistory):
                engine.score([unknown])
            with pytest.raises(NoHistory):
                engine.recommend([unknown], k=5)
            return
        assert torch.equal(engine.score([unknown]), engine.score([EMPTY]))
        for got, want in zip(engine.recommend([unknown], k=5), engine.recommend([EMPTY], k=5), strict=True):
            np.testing.assert_array_equal(got, want)

    def test_similar_items_of_an_unknown_item_answer_as_for_an_empty_history(self, engine: Engine) -> None:
        for item in unknown_indices(engine.n_items):
            if engine.needs_history:
                with pytest.raises(NoHistory):
                    engine.similar_items(np.array([item]), k=5)
                continue
            got = engine.similar_items(np.array([item]), k=5)
            for a, b in zip(got, engine.recommend([EMPTY], k=5), strict=True):
                np.testing.assert_array_equal(a, b)

    # ---- smoke -------------------------------------------------------------------------------------------------
    def test_smoke_recommends_k_distinct_known_items_to_users(self, engine: Engine, small_dataset: Dataset) -> None:
        sequences = small_dataset.sequences()
        users = [1, 2, 3, 100, small_dataset.n_users]
        ids, _ = engine.recommend([sequences[u] for u in users], k=10)
        known = set(small_dataset.items.ids.ids[1:])
        for user, row in zip(users, ids, strict=True):
            assert len(set(row.tolist())) == 10
            assert set(engine.item_ids.decode(row)) <= known
            assert not np.isin(row, sequences[user]).any()
