"""The SASRec module on its own: shapes, causality, padding, and that every loss learns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from recengine.engines.transformer.model import SASRec, SASRecConfig, pad_histories


def make_model(n_items: int = 50, max_len: int = 12, dropout: float = 0.0, **kw: Any) -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items=n_items, max_len=max_len, d_model=16, n_heads=2, dropout=dropout, **kw))


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
    ("positions", "block"), [("from_oldest", "pre_ln"), ("from_newest", "pre_ln"), ("from_oldest", "gated")]
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


@pytest.mark.parametrize("positions", ["from_oldest", "from_newest"])
def test_right_padding_does_not_change_scores(positions: str) -> None:
    model = make_model(positions=positions).eval()
    histories = [np.array([3, 4, 5, 6, 7]), np.array([9, 2])]
    seqs, lengths = pad_histories(histories, max_len=12)
    assert seqs.tolist() == [[3, 4, 5, 6, 7], [9, 2, 0, 0, 0]] and lengths.tolist() == [5, 2]
    with torch.no_grad():
        together = model.scores(seqs, lengths)
        alone = model.scores(torch.tensor([[9, 2]]), torch.tensor([2]))
    torch.testing.assert_close(together[1], alone[0])


def test_pad_histories_keeps_the_newest_items() -> None:
    seqs, lengths = pad_histories([np.arange(1, 21)], max_len=5)
    assert seqs.tolist() == [[16, 17, 18, 19, 20]] and lengths.tolist() == [5]


def test_longer_than_max_len_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds max_len"):
        make_model(max_len=4).encode(torch.ones((1, 5), dtype=torch.long))


def test_heads_must_divide_width() -> None:
    with pytest.raises(ValueError, match="multiple of n_heads"):
        SASRec(SASRecConfig(n_items=10, d_model=10, n_heads=3))


@pytest.mark.parametrize(
    ("loss", "block"), [("ce", "pre_ln"), ("sampled_softmax", "pre_ln"), ("bce", "pre_ln"), ("ce", "gated")]
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
