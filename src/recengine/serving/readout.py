"""The experiment readout: per arm, what was shown, what it earned, and whether an arm differs from the control.

    report = readout(impressions, attributions, experiment="default", arms=["ease", "transformer"], k=10)

Per arm (the arm is the user's assignment, not the engine that finally answered: intention to treat):

- ``users``: distinct users shown an answer of the arm; ``impressions``: answers recorded;
- ``attributed_events``: events credited to those answers (by ``recommendation_id`` or by the window);
- ``ctr``: the share of impressions with at least one attributed event, with a 95 % Wilson score interval;
- ``hr_at_k`` (online HR@K): among the arm's users whose next event after an answer arrived within the attribution
  window, the share whose next event after their *last* such answer was one of its top-K items, with a 95 % Wilson
  interval (one Bernoulli trial per user, so users are the independent units);
- ``vs_control``: each arm against the first arm (the control) — the difference of both rates and a two-sided
  two-proportion z-test with the pooled variance.

The CTR's trials are impressions, and one user's impressions are not independent: its interval and test are
narrower than the truth when a few users see many answers. Online HR@K has one trial per user and no such caveat.

Interleaved answers (arm ``interleave``) are read out separately: per user, the attributed events credited to each
of the two engines; a user with more for engine A is a win for A, equal (non-zero) counts a tie; a two-sided exact
sign test (binomial, p = ½, ties dropped) says whether one engine wins more users than chance allows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from recengine.errors import NotFound
from recengine.serving.impressions import Attribution, Impression, ImpressionStore
from recengine.settings import ExperimentSettings

INTERLEAVE = "interleave"
Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal

CI_METHOD = "Wilson score interval, 95 %"
TEST_METHOD = "two-proportion z-test (pooled variance, two-sided) of each arm against the first arm (the control)"
SIGN_METHOD = "exact two-sided sign test (binomial, p = 0.5) on per-user wins and losses; ties dropped"


# ---- statistics ------------------------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when there are no trials."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_z(x1: int, n1: int, x0: int, n0: int) -> tuple[float, float] | None:
    """(z, two-sided p) of the pooled two-proportion z-test of x1/n1 against x0/n0; None when it is undefined (an
    empty group, or both rates 0 or both 1)."""
    if n1 <= 0 or n0 <= 0:
        return None
    pooled = (x1 + x0) / (n1 + n0)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n0)
    if var <= 0:
        return None
    z = (x1 / n1 - x0 / n0) / math.sqrt(var)
    return z, min(1.0, 2 * normal_sf(abs(z)))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a result at least as lopsided as ``wins`` : ``losses`` | no difference)."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    # P(X <= low) for X ~ Binomial(n, 1/2), summed in log space (n may be large).
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(low + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2 * tail)


def _rate(successes: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(successes, n)
    return {"value": successes / n if n else None, "ci_low": lo, "ci_high": hi}


def _test(x1: int, n1: int, x0: int, n0: int) -> dict[str, Any]:
    result = two_proportion_z(x1, n1, x0, n0)
    diff = x1 / n1 - x0 / n0 if n1 and n0 else None
    if result is None:
        return {"diff": diff, "z": None, "p_value": None}
    return {"diff": diff, "z": result[0], "p_value": result[1]}


# ---- the readout -----------------------------------------------------------------------------------------------
def _arm_stats(imps: Sequence[Impression], clicks: dict[str, int], k: int) -> dict[str, Any]:
    users = {i.user_id for i in imps if i.user_id is not None}
    clicked = sum(1 for i in imps if clicks.get(i.recommendation_id))
    # Online HR@K: each user's last answer whose next event is known.
    last: dict[str, Impression] = {}
    for i in imps:  # oldest first: a later one replaces an earlier one
        if i.user_id is not None and i.next_rank is not None:
            last[i.user_id] = i
    hits = sum(1 for i in last.values() if i.next_rank is not None and 0 < i.next_rank <= k)
    return {
        "users": len(users),
        "impressions": len(imps),
        "attributed_events": sum(clicks.get(i.recommendation_id, 0) for i in imps),
        "clicked_impressions": clicked,
        "ctr": _rate(clicked, len(imps)),
        "hr_at_k": {"users": len(last), "hits": hits, **_rate(hits, len(last))},
    }


def _interleave(imps: Sequence[Impression], attrs: Sequence[Attribution], engines: Sequence[str]) -> dict[str, Any]:
    ids = {i.recommendation_id for i in imps}
    names = list(engines)
    for i in imps:
        for credit in i.credits:
            if credit not in names:
                names.append(credit)
    a, b = [*names, "?", "?"][:2]
    per_user: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    credited: dict[str, int] = {a: 0, b: 0}
    n_attr = 0
    for att in attrs:
        if att.recommendation_id not in ids:
            continue
        n_attr += 1
        per_user[att.user_id][att.credit] += 1
        credited[att.credit] = credited.get(att.credit, 0) + 1
    wins = sum(1 for c in per_user.values() if c[a] > c[b])
    losses = sum(1 for c in per_user.values() if c[b] > c[a])
    ties = sum(1 for c in per_user.values() if c[a] == c[b] and c[a] > 0)
    return {
        "engines": [a, b],
        "users": len({i.user_id for i in imps if i.user_id is not None}),
        "impressions": len(imps),
        "attributed_events": n_attr,
        "credited": credited,
        "users_with_clicks": wins + losses + ties,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "sign_test": {"p_value": sign_test(wins, losses), "method": SIGN_METHOD},
        "note": f"wins: users who clicked more items of {a} than of {b}; losses: the reverse",
    }


def readout(
    impressions: Sequence[Impression],
    attributions: Sequence[Attribution],
    *,
    experiment: str,
    arms: Sequence[str] = (),
    k: int = 10,
    interleave_engines: Sequence[str] = (),
) -> dict[str, Any]:
    """The readout of one experiment from its retained impressions and attributions. ``arms``: the configured
    arms in order (the first is the control); arms seen only in the data follow, sorted."""
    clicks: dict[str, int] = defaultdict(int)
    for att in attributions:
        clicks[att.recommendation_id] += 1
    by_arm: dict[str, list[Impression]] = defaultdict(list)
    mixed: list[Impression] = []
    for imp in impressions:
        if imp.arm == INTERLEAVE:
            mixed.append(imp)
        elif imp.arm is not None:
            by_arm[imp.arm].append(imp)
    order = [a for a in arms if a != INTERLEAVE]
    order += sorted(a for a in by_arm if a not in order)
    rows = []
    control: dict[str, Any] | None = None
    for arm in order:
        stats = {"arm": arm, **_arm_stats(by_arm.get(arm, []), clicks, k)}
        if control is None:
            control = stats
            stats["vs_control"] = None
        else:
            stats["vs_control"] = {
                "ctr": _test(stats["clicked_impressions"], stats["impressions"],
                             control["clicked_impressions"], control["impressions"]),
                "hr_at_k": _test(stats["hr_at_k"]["hits"], stats["hr_at_k"]["users"],
                                 control["hr_at_k"]["hits"], control["hr_at_k"]["users"]),
            }  # fmt: skip
        rows.append(stats)
    times = [i.timestamp for i in impressions]
    return {
        "experiment": experiment,
        "k": k,
        "control": order[0] if order else None,
        "since": min(times) if times else None,
        "until": max(times) if times else None,
        "arms": rows,
        "interleave": _interleave(mixed, attributions, interleave_engines) if mixed or interleave_engines else None,
        "methods": {"ci": CI_METHOD, "test": TEST_METHOD, "sign_test": SIGN_METHOD},
    }


async def report(
    store: ImpressionStore,
    configured: ExperimentSettings,
    experiment: str | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """The readout of ``experiment`` (default: the configured one) from what ``store`` retains. Raises NotFound
    for an experiment that is neither configured nor has impressions."""
    name = experiment or configured.name
    impressions, attributions = await store.scan(name)
    is_current = name == configured.name
    split = is_current and configured.mode == "split"
    arms = [arm for arm, w in configured.weights.items() if w > 0] if split else []
    if not is_current and not impressions:
        known = await store.experiments()
        raise NotFound(
            f"no impressions retained for experiment {name!r} and it is not the configured one "
            f"({configured.name!r}); experiments with impressions: {', '.join(known) or 'none'}"
        )
    seen_interleaved = any(i.arm == INTERLEAVE for i in impressions)
    mode = configured.mode if is_current else ("interleave" if seen_interleaved else "split")
    out = readout(
        impressions,
        attributions,
        experiment=name,
        arms=arms,
        k=k,
        interleave_engines=configured.interleave if is_current else (),
    )
    return {
        "experiment": name,
        "mode": mode,
        "configured": is_current,
        **{k_: v for k_, v in out.items() if k_ != "experiment"},
    }
