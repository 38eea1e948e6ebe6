"""The two-tower model and its training task: shapes, the loss, log-Q correction, feature encoding."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recengine.data.dataset import TRAIN, Dataset, IdMap
from recengine.engines.neural.features import FeatureVocab, parse_new_items, title_tokens
from recengine.engines.neural.model import ItemInputs, TwoTower, TwoTowerConfig
from recengine.engines.neural.module import TwoTowerModule, inclusion_log_q, sampled_softmax_loss
from recengine.engines.sequences import pad_histories
from recengine.errors import DataError
from recengine.settings import NeuralSettings, TrainingSettings
from recengine.training.datamodule import SequenceDataModule


def config_for(ds: Dataset, vocab: FeatureVocab, d: int = 16) -> TwoTowerConfig:
    return TwoTowerConfig.from_settings(
        NeuralSettings(d_model=d, max_len=20, dropout=0.1),
        n_id_items=ds.n_items,
        n_categories=vocab.n_categories,
        title_buckets=vocab.title_buckets,
        n_numeric=len(vocab.numeric),
    )


def test_item_and_user_towers_have_the_documented_shapes(small_dataset: Dataset) -> None:
    vocab = FeatureVocab.fit(small_dataset.items, 64)
    items = vocab.encode_catalog(small_dataset.items, torch.ones(small_dataset.n_items + 1, dtype=torch.bool))
    model = TwoTower(config_for(small_dataset, vocab)).eval()
    n = small_dataset.n_items + 1
    assert items.categories.shape == (n, vocab.max_categories)
    assert items.numeric.shape == (n, 1)  # the synthetic price column
    vecs = model.item_vectors(items)
    assert vecs.shape == (n, 16)
    assert torch.allclose(vecs[1:].norm(dim=-1), torch.ones(n - 1), atol=1e-5)
    seqs, lengths = pad_histories([np.array([1, 2, 3]), np.array([4])], max_len=20)
    assert seqs.shape == (2, 3) and lengths.tolist() == [3, 1]
    every = model.user_vectors(vecs[seqs], seqs > 0)
    assert every.shape == (2, 3, 16)
    last = model.last_user_vectors(vecs[seqs], lengths)
    assert last.shape == (2, 16)
    # Causal: the vector after item 4 alone ignores the padding to its right.
    alone = model.last_user_vectors(vecs[torch.tensor([[4]])], torch.tensor([1]))
    assert torch.allclose(last[1], alone[0], atol=1e-5)


def test_metadata_alone_gives_an_item_vector(small_dataset: Dataset) -> None:
    vocab = FeatureVocab.fit(small_dataset.items, 64)
    model = TwoTower(config_for(small_dataset, vocab)).eval()
    cat, tit, num = vocab.encode(["Golden River drama"], [["drama"]], {"price": np.array([10.0])})
    vec = model.item_vectors(ItemInputs(torch.zeros(1, dtype=torch.long), cat, tit, num))
    assert torch.isfinite(vec).all() and vec.abs().sum() > 0


def test_title_tokens_are_stable_and_bounded() -> None:
    assert title_tokens("Toy Story (1995)", 100) == title_tokens("toy story 1995", 100)
    assert all(1 <= t <= 100 for t in title_tokens("a b c d e f g h i j k l m n o p q r", 100))
    assert len(title_tokens("a b c d e f g h i j k l m n o p q r", 100)) == 16
    assert title_tokens(None, 100) == []


@pytest.mark.parametrize("full_softmax_items", [0, 100_000], ids=["sampled", "full"])
def test_training_loss_decreases(small_dataset: Dataset, full_softmax_items: int) -> None:
    torch.manual_seed(0)
    vocab = FeatureVocab.fit(small_dataset.items, 64)
    counts = small_dataset.item_counts(max_split=TRAIN)
    has_id = torch.from_numpy(counts > 0)
    module = TwoTowerModule(
        config_for(small_dataset, vocab),
        vocab.encode_catalog(small_dataset.items, has_id),
        counts,
        NeuralSettings(feature_dropout=0.2, full_softmax_items=full_softmax_items, n_uniform_negatives=64),
        TrainingSettings(lr=3e-3),
    )
    assert module.full_softmax == (small_dataset.n_items <= full_softmax_items)
    batch = next(iter(SequenceDataModule(small_dataset, max_len=20, batch_size=64).train_dataloader()))
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.eval()  # no dropout: the same batch must get easier
    first = float(module.loss(*batch).detach())
    for _ in range(40):
        opt.zero_grad()
        loss = module.loss(*batch)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    assert float(module.loss(*batch).detach()) < 0.7 * first


def test_log_q_correction_moves_gradient_from_popular_to_rare_negatives() -> None:
    # One user, a positive and two negatives scored alike; the first negative is popular, the second rare.
    user = torch.tensor([[1.0, 0.0]])
    labels = torch.tensor([0])

    def negative_grads(log_q: torch.Tensor | None) -> torch.Tensor:
        cands = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
        sampled_softmax_loss(user, cands, labels, temperature=1.0, log_q=log_q).backward()  # type: ignore[no-untyped-call]
        assert cands.grad is not None
        return cands.grad[1:, 0]  # push on each negative along the user direction

    plain = negative_grads(None)
    assert torch.allclose(plain[0], plain[1])  # without correction both negatives are pushed down alike
    corrected = negative_grads(torch.log(torch.tensor([0.3, 0.9, 0.01])))
    assert corrected[0] < plain[0]  # the popular negative is pushed down less (it is over-sampled)
    assert corrected[1] > plain[1]  # the rare one more


def test_inclusion_probability_saturates_for_head_items() -> None:
    q = inclusion_log_q(torch.tensor([0.5, 1e-4]), n_draws=1000, n_uniform=0, n_items=100).exp()
    assert q[0] == pytest.approx(1.0, abs=1e-6)  # sure to be a candidate, not "500 times"
    assert q[1] == pytest.approx(1 - np.exp(-0.1), rel=1e-4)


def test_parse_new_items_accepts_good_rows_and_fills_missing_numbers(small_dataset: Dataset) -> None:
    vocab = FeatureVocab.fit(small_dataset.items, 64)
    frame = pl.DataFrame({"item": ["new1", "new2"], "title": ["A", None], "categories": [["drama"], None]})
    parsed = parse_new_items(frame, small_dataset.items.ids, vocab)
    assert parsed.ids == ["new1", "new2"] and parsed.categories == [["drama"], []]
    assert np.isfinite(parsed.numeric["price"]).all()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pl.DataFrame({"title": ["x"]}), "no 'item' column"),
        (pl.DataFrame({"item": ["a", None], "title": ["x", "y"]}), "row 1: 'item' is missing"),
        (pl.DataFrame({"item": ["a", "a"]}), "row 1 \\(item 'a'\\): the item appears twice"),
        (pl.DataFrame({"item": ["a", "b"], "title": [1, 2]}), "row 0 \\(item 'a'\\): 'title' must be a string"),
        (pl.DataFrame({"item": ["a"], "categories": ["drama"]}), "row 0 \\(item 'a'\\): 'categories' must be a list"),
        (pl.DataFrame({"item": ["a", "b"], "price": ["cheap", "dear"]}), "row 0 \\(item 'a'\\): 'price' must be"),
        (pl.DataFrame({"item": ["a", "b"], "price": [1.0, float("nan")]}), "row 1 \\(item 'b'\\): 'price'"),
        (pl.DataFrame({"item": ["b", "old"]}), "row 1 \\(item 'old'\\): the item is already in the catalogue"),
    ],
)
def test_malformed_metadata_names_the_row(frame: pl.DataFrame, message: str) -> None:
    vocab = FeatureVocab(categories=["drama"], title_buckets=16, numeric=[], max_categories=1)
    vocab = FeatureVocab.from_dict(
        {**vocab.to_dict(), "numeric": [{"name": "price", "log": True, "mean": 0, "std": 1}]}
    )
    with pytest.raises(DataError, match=message):
        parse_new_items(frame, IdMap(["", "old"]), vocab)


def test_parse_new_items_refuses_a_non_frame() -> None:
    vocab = FeatureVocab(categories=[], title_buckets=16)
    with pytest.raises(DataError, match="polars DataFrame"):
        parse_new_items([{"item": "a"}], IdMap([""]), vocab)  # type: ignore[arg-type]


def test_the_config_takes_every_setting_it_shares_from_the_settings() -> None:
    import dataclasses

    settings = NeuralSettings()
    config = TwoTowerConfig.from_settings(settings, n_id_items=9, n_categories=3, title_buckets=64, n_numeric=1)
    shared = {f.name for f in dataclasses.fields(TwoTowerConfig)} & set(NeuralSettings.model_fields)
    assert shared >= {"d_model", "max_len", "temperature", "dropout"}
    for field in dataclasses.fields(TwoTowerConfig):
        if field.name in shared:
            assert field.default is dataclasses.MISSING, f"{field.name} has a default of its own"
            if field.name != "title_buckets":  # from the fitted vocabulary, which takes it from the settings
                assert getattr(config, field.name) == getattr(settings, field.name)
    assert (config.n_id_items, config.n_categories, config.title_buckets, config.n_numeric) == (9, 3, 64, 1)


def _full_softmax_module(ds: Dataset) -> TwoTowerModule:
    vocab = FeatureVocab.fit(ds.items, 64)
    counts = ds.item_counts(max_split=TRAIN)
    return TwoTowerModule(
        config_for(ds, vocab),
        vocab.encode_catalog(ds.items, torch.from_numpy(counts > 0)),
        counts,
        NeuralSettings(full_softmax_items=100_000),
        TrainingSettings(),
    )


def test_the_exact_softmax_loss_and_its_gradients_equal_plain_cross_entropy(small_dataset: Dataset) -> None:
    """The fused loss (one buffer, temperature applied to the users) is the textbook softmax cross-entropy over
    every trained item, value and gradients, the learned temperature's included."""
    torch.manual_seed(0)
    module = _full_softmax_module(small_dataset).eval()
    seqs, targets = next(iter(SequenceDataModule(small_dataset, max_len=20, batch_size=32).train_dataloader()))

    def reference() -> torch.Tensor:
        mask, has_target = seqs > 0, targets > 0
        vecs = module.embed(torch.arange(module.n_items + 1), drop_ids=False)
        users = module.model.user_vectors(vecs[seqs] * mask.unsqueeze(-1), mask)[has_target]
        cand = module.trained_items
        logits = users @ vecs[cand].T / module.model.temperature
        return torch.nn.functional.cross_entropy(logits, torch.searchsorted(cand, targets[has_target]))

    grads = []
    for loss_fn in (lambda: module.loss(seqs, targets), reference):
        module.zero_grad()
        loss = loss_fn()
        loss.backward()  # type: ignore[no-untyped-call]
        named = module.named_parameters()
        grads.append((float(loss.detach()), {n: p.grad.clone() for n, p in named if p.grad is not None}))
    (fused, g_fused), (plain, g_plain) = grads
    assert fused == pytest.approx(plain, rel=1e-5)
    assert g_fused.keys() == g_plain.keys() and "model.log_temperature" in g_fused
    for name, g in g_plain.items():
        assert torch.allclose(g_fused[name], g, rtol=1e-3, atol=1e-6), name


def test_an_item_tower_without_categories_or_titles_skips_their_bags_to_the_same_vectors(
    small_dataset: Dataset,
) -> None:
    """Bags of padding only add zero: skipping them changes no bit of the item vectors."""
    vocab = FeatureVocab.fit(small_dataset.items, 64)
    items = vocab.encode_catalog(small_dataset.items, torch.ones(small_dataset.n_items + 1, dtype=torch.bool))
    bare = ItemInputs(items.ids, torch.zeros_like(items.categories), torch.zeros_like(items.title), items.numeric)
    tower = TwoTower(config_for(small_dataset, vocab)).eval().item_tower
    by_hand = tower.id_emb(bare.ids) + tower.cat_emb(bare.categories).sum(-2) + tower.title_emb(bare.title).sum(-2)
    assert tower.num_proj is not None
    by_hand = by_hand + tower.num_proj(bare.numeric)
    assert torch.equal(tower(bare), by_hand + tower.mlp(by_hand))
    assert not torch.equal(tower(items), tower(bare))  # and with metadata the bags do count
