"""The SASRec module on its own: shapes, causality, padding, and that every loss learns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from recengine.engines.sequences import pad_histories
from recengine.engines.transformer.model import SASRec, SASRecConfig, targets_ahead
from recengine.settings import TransformerSettings


def make_config(n_items: int = 50, max_len: int = 12, **kw: Any) -> SASRecConfig:
    """A small model; what the test does not set is the settings' default, as in the engine."""
    return SASRecConfig.from_settings(TransformerSettings(**kw), n_items=n_items, max_len=max_len)


def make_model(
    n_items: int = 50, max_len: int = 12, dropout: float = 0.0, attn_dropout: float = 0.0, **kw: Any
) -> SASRec:
    torch.manual_seed(0)
    config = make_config(n_items, max_len, d_model=16, n_heads=2, dropout=dropout, attn_dropout=attn_dropout, **kw)
    return SASRec(config)


def test_attention_dropout_only_while_training() -> None:
    model = make_model(attn_dropout=0.5)
    seqs = torch.randint(1, 51, (2, 6))
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model.encode(seqs), model.encode(seqs))
        model.train()
        assert not torch.allclose(model.encode(seqs), model.encode(seqs))


def test_shapes() -> None:
    model = make_model().eval()
    seqs = torch.randint(1, 51, (3, 7))
    assert model.encode(seqs).shape == (3, 7, 16)
    scores = model.scores(seqs, torch.tensor([7, 3, 1]))
    assert scores.shape == (3, 51)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize(
    ("positions", "block"),
    [("from_oldest", "pre_ln"), ("from_newest", "pre_ln"), ("from_oldest", "gated"), ("from_oldest", "post_ln")],
)
def test_later_items_do_not_change_earlier_outputs(positions: str, block: str) -> None:
    model = make_model(positions=positions, block=block).eval()
    seqs = torch.randint(1, 51, (2, 10))
    changed = seqs.clone()
    changed[:, 6:] = torch.randint(1, 51, (2, 4))
    with torch.no_grad():
        a, b = model.encode(seqs), model.encode(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize(
    ("positions", "block"), [("from_oldest", "pre_ln"), ("from_newest", "pre_ln"), ("from_oldest", "post_ln")]
)
def test_right_padding_does_not_change_scores(positions: str, block: str) -> None:
    model = make_model(positions=positions, block=block).eval()
    histories = [np.array([3, 4, 5, 6, 7]), np.array([9, 2])]
    seqs, lengths = pad_histories(histories, max_len=12)
    assert seqs.tolist() == [[3, 4, 5, 6, 7], [9, 2, 0, 0, 0]] and lengths.tolist() == [5, 2]
    with torch.no_grad():
        together = model.scores(seqs, lengths)
        alone = model.scores(torch.tensor([[9, 2]]), torch.tensor([2]))
    torch.testing.assert_close(together[1], alone[0])


def test_an_empty_history_reads_the_padding_slot_at_position_zero() -> None:
    model = make_model().eval()
    seqs, lengths = pad_histories([np.array([3, 4, 5]), np.array([], dtype=np.int64)], max_len=12)
    assert lengths.tolist() == [3, 0]
    with torch.no_grad():
        together = model.scores(seqs, lengths)
        alone = model.scores(torch.tensor([[0]]), torch.tensor([1]))
    torch.testing.assert_close(together[1], alone[0])


def test_longer_than_max_len_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds max_len"):
        make_model(max_len=4).encode(torch.ones((1, 5), dtype=torch.long))


def test_heads_must_divide_width() -> None:
    with pytest.raises(ValueError, match="multiple of n_heads"):
        SASRec(make_config(n_items=10, d_model=10, n_heads=3))


@pytest.mark.parametrize(
    ("loss", "block"),
    [("ce", "pre_ln"), ("sampled_softmax", "pre_ln"), ("bce", "pre_ln"), ("ce", "gated"), ("ce", "post_ln")],
)
def test_loss_decreases_on_a_tiny_set(loss: str, block: str) -> None:
    # A deterministic cycle 1 → 2 → … → 20 → 1: any working loss learns it within a few dozen steps.
    model = make_model(n_items=20, max_len=8, block=block, attn_dropout=0.1)
    cycle = np.arange(40) % 20 + 1
    seqs = torch.tensor(np.stack([np.roll(cycle, -s)[:9] for s in range(16)]))
    inputs, targets = seqs[:, :-1], seqs[:, 1:].clone()
    targets[:3, 5:] = 0  # some padding positions, which must be ignored
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(1)
    losses = []
    for _ in range(60):
        value = model.loss(inputs, targets, kind=loss, n_negatives=8)  # type: ignore[arg-type]
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_sampled_softmax_uses_the_given_distribution() -> None:
    model = make_model(n_items=20, max_len=8)
    probs = torch.zeros(21)
    probs[5] = 1.0  # every negative is item 5
    seqs = torch.tensor([[1, 2, 3]])
    tgt_hit = torch.tensor([[5, 5, 5]])  # negatives equal the target: masked, so the loss is exactly 0
    value = model.loss(seqs, tgt_hit, kind="sampled_softmax", n_negatives=4, sampling_probs=probs)
    assert float(value) == pytest.approx(0.0, abs=1e-6)


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        make_model().loss(torch.ones((1, 2), dtype=torch.long), torch.ones((1, 2), dtype=torch.long), kind="x")  # type: ignore[arg-type]


def test_positions_from_newest_put_the_last_item_at_zero() -> None:
    model = make_model(positions="from_newest").eval()
    with torch.no_grad():
        # One item alone, or as the newest of three: either way its position embedding is position 0's.
        model.blocks = torch.nn.ModuleList()  # embeddings only, so the output shows the position used
        alone = model.encode(torch.tensor([[7]]))[0, 0]
        newest = model.encode(torch.tensor([[3, 4, 7, 0]]))[0, 2]
        oldest = model.encode(torch.tensor([[7, 4, 3, 0]]))[0, 0]
    torch.testing.assert_close(alone, newest)
    assert not torch.allclose(alone, oldest)


def test_post_ln_normalises_every_position() -> None:
    model = make_model(block="post_ln").eval()
    with torch.no_grad():
        h = model.encode(torch.randint(1, 51, (3, 9)))
    # The last block ends in a LayerNorm (weight 1, bias 0 at init): zero mean, unit variance per position.
    torch.testing.assert_close(h.mean(-1), torch.zeros(3, 9), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.var(-1, unbiased=False), torch.ones(3, 9), atol=1e-3, rtol=0)


def test_targets_ahead_weights_the_next_items_and_drops_missing_ones() -> None:
    targets = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]])
    ahead, share = targets_ahead(targets, targets > 0, k=3, decay=0.5)
    assert ahead.tolist() == [[2, 3, 4], [3, 4, 1], [4, 1, 1], [5, 6, 1], [6, 1, 1]]
    torch.testing.assert_close(share[0], torch.tensor([4 / 7, 2 / 7, 1 / 7]))
    torch.testing.assert_close(share[1], torch.tensor([2 / 3, 1 / 3, 0.0]))  # one item left in the window
    torch.testing.assert_close(share[2], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(share.sum(1), torch.ones(5))


def test_predicting_ahead_is_refused_without_the_full_softmax() -> None:
    seqs = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="full softmax"):
        make_model().loss(seqs, seqs + 1, kind="bce", ahead=2)


def test_the_config_takes_every_setting_it_shares_from_the_settings() -> None:
    import dataclasses

    settings = TransformerSettings()
    config = SASRecConfig.from_settings(settings, n_items=30, max_len=25)
    shared = {f.name for f in dataclasses.fields(SASRecConfig)} & set(TransformerSettings.model_fields)
    assert shared >= {"d_model", "n_layers", "n_heads", "dropout", "attn_dropout", "block", "positions"}
    for field in dataclasses.fields(SASRecConfig):
        if field.name in shared:
            assert field.default is dataclasses.MISSING, f"{field.name} has a default of its own"
            if field.name != "max_len":  # the settings may say "auto"; the engine resolves it
                assert getattr(config, field.name) == getattr(settings, field.name)
    assert (config.n_items, config.max_len) == (30, 25)
