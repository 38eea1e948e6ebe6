"""The readout's statistics against scipy, and the readout of a small scripted experiment against a hand count."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from recengine.errors import NotFound
from recengine.serving.impressions import Attribution, Impression, MemoryImpressionStore
from recengine.serving.readout import readout, report, sign_test, two_proportion_z, wilson
from recengine.settings import ExperimentSettings


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (10, 10), (47, 1000), (500, 1000), (1, 3)])
def test_wilson_matches_scipy(x: int, n: int) -> None:
    ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(x, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_without_trials_says_nothing() -> None:
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("x1", "n1", "x0", "n0"), [(30, 200, 45, 210), (5, 50, 5, 50), (120, 1000, 80, 1000)])
def test_two_proportion_z_matches_the_chi_square_test(x1: int, n1: int, x0: int, n0: int) -> None:
    # The pooled two-proportion z-test is the uncorrected 2×2 chi-square test: z² = χ², same p-value.
    table = [[x1, n1 - x1], [x0, n0 - x0]]
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    result = two_proportion_z(x1, n1, x0, n0)
    assert result is not None
    z, pz = result
    assert z * z == pytest.approx(chi2, rel=1e-9) and pz == pytest.approx(p, rel=1e-9)
    assert math.copysign(1, z) == math.copysign(1, x1 / n1 - x0 / n0 or 1)


def test_two_proportion_z_is_undefined_for_empty_or_degenerate_groups() -> None:
    assert two_proportion_z(0, 0, 3, 10) is None
    assert two_proportion_z(0, 10, 0, 10) is None


@pytest.mark.parametrize(("wins", "losses"), [(0, 0), (1, 1), (9, 1), (1, 9), (60, 40), (520, 480), (0, 12)])
def test_sign_test_matches_scipys_binomial_test(wins: int, losses: int) -> None:
    expected = 1.0 if wins + losses == 0 else stats.binomtest(wins, wins + losses, 0.5).pvalue
    assert sign_test(wins, losses) == pytest.approx(expected, rel=1e-9)


# ---- a scripted experiment, counted by hand ----------------------------------------------------------------------
def _imp(rid: str, user: str, arm: str, ts: float, items: str, next_rank: int | None = None, credits: str = ""):
    return Impression(
        rid, user, arm, "v", tuple(items), ts, "exp", arm, tuple(credits.split()) if credits else (), "rec", next_rank
    )


def _att(event: str, rid: str, user: str, arm: str, credit: str | None = None) -> Attribution:
    return Attribution(event, rid, user, "a", 1, credit or arm, "id", 100.0, "exp", arm)


IMPRESSIONS = [
    _imp("r1", "u1", "ease", 1, "abc", next_rank=2),
    _imp("r2", "u1", "ease", 2, "def"),  # u1's last answer, but its next event never came: r1 counts for HR
    _imp("r3", "u2", "ease", 3, "abc", next_rank=0),  # the next event was for an item not shown
    _imp("r4", "u3", "transformer", 4, "xyz", next_rank=1),
    _imp("r5", "u4", "transformer", 5, "xyz", next_rank=3),
    _imp("r6", "u5", "transformer", 6, "pqr"),
]
ATTRIBUTIONS = [
    _att("e1", "r1", "u1", "ease"),
    _att("e2", "r1", "u1", "ease"),  # a second click on the same answer: one more event, not one more clicked answer
    _att("e3", "r3", "u2", "ease"),
    _att("e4", "r4", "u3", "transformer"),
    _att("e5", "r6", "u5", "transformer"),
]


def test_the_readout_of_a_scripted_experiment_equals_a_hand_count() -> None:
    out = readout(IMPRESSIONS, ATTRIBUTIONS, experiment="exp", arms=["ease", "transformer"], k=3)
    ease, trf = out["arms"]
    assert out["control"] == "ease" and ease["arm"] == "ease" and trf["arm"] == "transformer"
    # ease: u1 and u2; three answers; e1, e2, e3; r1 and r3 clicked → CTR 2/3.
    assert (ease["users"], ease["impressions"], ease["attributed_events"], ease["clicked_impressions"]) == (2, 3, 3, 2)
    assert ease["ctr"]["value"] == pytest.approx(2 / 3)
    # HR@3: u1's last judged answer r1 (next at rank 2: hit), u2's r3 (next not shown: miss) → 1 of 2 users.
    assert (ease["hr_at_k"]["users"], ease["hr_at_k"]["hits"]) == (2, 1)
    # transformer: u3, u4, u5; e4 and e5; r4 and r6 clicked → 2/3; HR@3: u3 rank 1, u4 rank 3 → 2 of 2; u5 unjudged.
    assert (trf["users"], trf["impressions"], trf["attributed_events"], trf["clicked_impressions"]) == (3, 3, 2, 2)
    assert (trf["hr_at_k"]["users"], trf["hr_at_k"]["hits"]) == (2, 2)
    assert ease["vs_control"] is None
    # CTR 2/3 against 2/3: no difference.
    assert trf["vs_control"]["ctr"]["diff"] == 0 and trf["vs_control"]["ctr"]["z"] == 0
    assert trf["vs_control"]["ctr"]["p_value"] == pytest.approx(1.0)
    # HR 2/2 against 1/2: pooled p = 3/4, z = 0.5 / sqrt(3/4 · 1/4 · (1/2 + 1/2)) = 0.5 / sqrt(0.1875).
    z = 0.5 / math.sqrt(0.1875)
    assert trf["vs_control"]["hr_at_k"]["z"] == pytest.approx(z)
    assert trf["vs_control"]["hr_at_k"]["p_value"] == pytest.approx(2 * stats.norm.sf(z))
    assert (ease["ctr"]["ci_low"], ease["ctr"]["ci_high"]) == wilson(2, 3)
    assert "two-proportion z-test" in out["methods"]["test"] and "Wilson" in out["methods"]["ci"]
    assert (out["since"], out["until"]) == (1, 6)


def test_a_smaller_k_turns_a_rank_3_hit_into_a_miss() -> None:
    out = readout(IMPRESSIONS, ATTRIBUTIONS, experiment="exp", arms=["ease", "transformer"], k=2)
    assert [(a["hr_at_k"]["users"], a["hr_at_k"]["hits"]) for a in out["arms"]] == [(2, 1), (2, 1)]


def test_a_configured_arm_without_answers_is_reported_empty_and_unseen_arms_follow() -> None:
    out = readout(IMPRESSIONS, ATTRIBUTIONS, experiment="exp", arms=["neural", "ease"], k=3)
    assert [a["arm"] for a in out["arms"]] == ["neural", "ease", "transformer"]
    neural = out["arms"][0]
    assert (neural["impressions"], neural["ctr"]["value"]) == (0, None)
    assert out["arms"][1]["vs_control"]["ctr"] == {"diff": None, "z": None, "p_value": None}


def test_the_interleaving_readout_counts_wins_ties_and_losses_per_user() -> None:
    mixed = [
        _imp("m1", "u1", "interleave", 1, "abcd", credits="A B A B"),
        _imp("m2", "u2", "interleave", 2, "abcd", credits="B A B A"),
        _imp("m3", "u3", "interleave", 3, "abcd", credits="A B A B"),
        _imp("m4", "u4", "interleave", 4, "abcd", credits="A B A B"),  # no click: neither win, tie nor loss
    ]
    attrs = [
        _att("e1", "m1", "u1", "interleave", "A"),
        _att("e2", "m1", "u1", "interleave", "A"),
        _att("e3", "m1", "u1", "interleave", "B"),  # u1: A 2, B 1 → win
        _att("e4", "m2", "u2", "interleave", "B"),  # u2: B 1 → loss
        _att("e5", "m3", "u3", "interleave", "A"),
        _att("e6", "m3", "u3", "interleave", "B"),  # u3: 1 each → tie
    ]
    out = readout(mixed, attrs, experiment="exp", k=10, interleave_engines=["A", "B"])
    il = out["interleave"]
    assert out["arms"] == []
    assert (il["users"], il["impressions"], il["attributed_events"]) == (4, 4, 6)
    assert il["credited"] == {"A": 3, "B": 3}
    assert (il["wins"], il["ties"], il["losses"], il["users_with_clicks"]) == (1, 1, 1, 3)
    assert il["sign_test"]["p_value"] == pytest.approx(1.0) and "sign test" in il["sign_test"]["method"]


@pytest.mark.anyio
async def test_report_reads_the_configured_experiment_and_refuses_an_unknown_one() -> None:
    store = MemoryImpressionStore()
    await store.add(IMPRESSIONS)
    await store.attribute(ATTRIBUTIONS)
    configured = ExperimentSettings(name="exp", weights={"ease": 1.0, "transformer": 1.0})
    out = await report(store, configured, None, 3)
    assert out["experiment"] == "exp" and out["mode"] == "split" and out["configured"] is True
    assert [a["impressions"] for a in out["arms"]] == [3, 3]
    empty = await report(store, ExperimentSettings(name="fresh", weights={"ease": 1.0}), None, 3)
    assert [a["arm"] for a in empty["arms"]] == ["ease"] and empty["arms"][0]["impressions"] == 0
    old = await report(store, ExperimentSettings(name="fresh"), "exp", 3)  # a past experiment, still retained
    assert old["configured"] is False and [a["arm"] for a in old["arms"]] == ["ease", "transformer"]
    with pytest.raises(NotFound, match="exp"):
        await report(store, configured, "nothing-here", 3)
