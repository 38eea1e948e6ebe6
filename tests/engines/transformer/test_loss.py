"""The fused full-softmax cross-entropy against the plain one: values, gradients, padding, target distributions."""

from __future__ import annotations

import pytest
import torch

from recengine.engines.softmax import full_softmax_ce


@pytest.mark.parametrize("rows", [1, 2, 65, 200])
def test_full_softmax_ce_equals_cross_entropy_over_every_item(rows: int) -> None:
    torch.manual_seed(rows)
    h = torch.randn(rows, 16, requires_grad=True)
    w = torch.randn(301, 16, requires_grad=True)
    y = torch.randint(1, 301, (rows,))
    ours = full_softmax_ce(h, w, y)
    g_ours = torch.autograd.grad(2.5 * ours, (h, w))
    ref = torch.nn.functional.cross_entropy(h @ w[1:].T, y - 1)
    g_ref = torch.autograd.grad(2.5 * ref, (h, w))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours[0], g_ref[0])
    torch.testing.assert_close(g_ours[1], g_ref[1])
    assert float(g_ours[1][0].abs().sum()) == 0.0  # padding is never a class


def test_full_softmax_ce_refuses_a_second_backward_instead_of_a_wrong_one() -> None:
    h = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(11, 8, requires_grad=True)
    loss = full_softmax_ce(h, w, torch.tensor([1, 2, 3, 10]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_full_softmax_ce_against_a_target_distribution() -> None:
    torch.manual_seed(0)
    h = torch.randn(70, 8, requires_grad=True)
    w = torch.randn(41, 8, requires_grad=True)
    y = torch.randint(1, 41, (70, 3))
    y[5] = torch.tensor([7, 7, 9])  # the same item twice in one row: both shares count
    share = torch.softmax(torch.randn(70, 3), dim=1)
    ours = full_softmax_ce(h, w, y, share)
    g_ours = torch.autograd.grad(ours, (h, w))
    ref = -(share * torch.log_softmax(h @ w[1:].T, 1).gather(1, y - 1)).sum(1).mean()
    g_ref = torch.autograd.grad(ref, (h, w))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours[0], g_ref[0])
    torch.testing.assert_close(g_ours[1], g_ref[1])
