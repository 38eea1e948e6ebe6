from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from recengine.engines import FLOOR
from recengine.serving.routing import RuntimeConfig, assign, bucket, decide

ALL = {"popularity": True, "ease": True, "transformer": True, "neural": True}


def cfg(**kw: object) -> RuntimeConfig:
    base: dict[str, object] = {"enabled": dict(ALL), "short_history": 5}
    base.update(kw)
    return RuntimeConfig(**base)  # type: ignore[arg-type]


def test_rules_by_history_length() -> None:
    c = cfg()
    assert decide(c, "u", 0).primary == FLOOR
    assert decide(c, "u", 0).reason == "rule:no_history"
    assert decide(c, "u", 4).primary == "neural"
    assert decide(c, "u", 5).primary == "transformer"
    assert decide(cfg(short_history=10), "u", 9).primary == "neural"


def test_explicit_engine_wins_when_enabled_and_is_noted_when_disabled() -> None:
    d = decide(cfg(), "u", 50, requested="ease")
    assert (d.primary, d.reason, d.note) == ("ease", "explicit", None)
    off = decide(cfg(enabled={**ALL, "ease": False}), "u", 50, requested="ease")
    assert off.primary == "transformer" and off.note is not None and "ease" in off.note
    assert "ease" not in off.chain


def test_chain_follows_fallback_order_skips_disabled_and_ends_with_the_floor() -> None:
    c = cfg(enabled={**ALL, "neural": False}, fallback=("ease", "transformer", "neural"))
    d = decide(c, "u", 50)
    assert d.chain == ("transformer", "ease", FLOOR)
    # the floor stays the last resort even when switched off for routing
    d2 = decide(cfg(enabled={**ALL, "popularity": False}), "u", 50)
    assert d2.chain[-1] == FLOOR


def test_experiment_split_is_sticky_weighted_and_overrides_rules() -> None:
    c = cfg(experiment_name="exp1", experiment_weights={"ease": 1.0, "transformer": 3.0})
    users = [f"user{i}" for i in range(4000)]
    first = [decide(c, u, 0).primary for u in users]
    again = [decide(c, u, 0).primary for u in users]
    assert first == again
    share = Counter(first)["transformer"] / len(users)
    assert 0.72 < share < 0.78
    assert decide(c, "user1", 0).reason == "experiment:exp1"


def test_experiment_arm_that_is_disabled_falls_back_to_rules() -> None:
    c = cfg(enabled={**ALL, "ease": False}, experiment_weights={"ease": 1.0})
    d = decide(c, "someone", 0)
    assert d.primary == FLOOR and d.reason == "rule:no_history"


def test_anonymous_requests_are_not_in_the_experiment() -> None:
    c = cfg(experiment_weights={"ease": 1.0})
    assert decide(c, None, 7).reason == "rule:long_history"


def test_different_experiments_split_independently() -> None:
    users = [f"u{i}" for i in range(2000)]
    a = [assign("a", {"ease": 1, "neural": 1}, u) for u in users]
    b = [assign("b", {"ease": 1, "neural": 1}, u) for u in users]
    agree = sum(x == y for x, y in zip(a, b, strict=True)) / len(users)
    assert 0.4 < agree < 0.6


def test_raising_one_weight_only_moves_users_into_that_arm() -> None:
    users = [f"u{i}" for i in range(3000)]
    before = {u: assign("e", {"ease": 1, "transformer": 1}, u) for u in users}
    after = {u: assign("e", {"ease": 1, "transformer": 3}, u) for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert moved and all(before[u] == "ease" and after[u] == "transformer" for u in moved)


def test_no_positive_weight_means_no_experiment() -> None:
    assert assign("e", {}, "u") is None
    assert assign("e", {"ease": 0.0}, "u") is None


def test_bucket_is_the_same_in_another_process() -> None:
    # Python's hash() is salted per process; the split must not be.
    from pathlib import Path

    import recengine.serving.routing as routing

    # Load the module file alone: importing the package would pull in torch and take seconds. What it imports
    # (the engine table, the settings models) comes from this source tree.
    src = str(Path(routing.__file__).resolve().parents[2])
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('routing', {routing.__file__!r}); "
        "m = importlib.util.module_from_spec(spec); sys.modules['routing'] = m; spec.loader.exec_module(m); "
        "print(repr(m.bucket('exp', 'user-42')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PYTHONPATH": src},
    ).stdout
    assert float(out) == bucket("exp", "user-42")
    assert 0.0 <= bucket("exp", "user-42") < 1.0


def _arms(weights: dict[str, float], users: list[str]) -> dict[str, str | None]:
    return {u: assign("e", weights, u) for u in users}


def test_arm_shares_follow_the_weights() -> None:
    users = [f"u{i}" for i in range(20_000)]
    arms = list(_arms({"ease": 1, "neural": 2, "transformer": 1}, users).values())
    for name, share in (("ease", 0.25), ("neural", 0.5), ("transformer", 0.25)):
        assert abs(arms.count(name) / len(users) - share) < 0.015, name


def test_adding_an_equal_third_arm_moves_a_third_of_the_users_into_it() -> None:
    # The minimum: the new arm's third must come from somewhere, and nobody else changes arm.
    users = [f"u{i}" for i in range(20_000)]
    before = _arms({"ease": 1, "neural": 1}, users)
    after = _arms({"ease": 1, "neural": 1, "transformer": 1}, users)
    moved = [u for u in users if before[u] != after[u]]
    assert abs(len(moved) / len(users) - 1 / 3) < 0.015
    assert all(after[u] == "transformer" for u in moved)


def test_removing_an_arm_moves_only_its_users() -> None:
    users = [f"u{i}" for i in range(5_000)]
    before = _arms({"ease": 1, "neural": 1, "transformer": 1}, users)
    after = _arms({"ease": 1, "neural": 1}, users)
    assert all(before[u] == "transformer" for u in users if before[u] != after[u])
    assert {after[u] for u in users if before[u] == "transformer"} == {"ease", "neural"}


# ---- interleaving ------------------------------------------------------------------------------------------------
def test_interleave_mode_decides_both_engines_for_a_known_user() -> None:
    Config = RuntimeConfig
    enabled = {"popularity": True, "ease": True, "transformer": True, "neural": True}
    cfg = Config(enabled=enabled, experiment_name="x", experiment_interleave=("ease", "neural"))
    d = decide(cfg, "u1", 10)
    assert d.interleave == ("ease", "neural") and d.experiment == "x" and d.primary == "ease"
    assert decide(cfg, None, 10).interleave is None  # anonymous: the rules
    assert decide(cfg, "u1", 10, "popularity").interleave is None  # an explicit engine wins
    off = Config(enabled={**enabled, "neural": False}, experiment_name="x", experiment_interleave=("ease", "neural"))
    assert decide(off, "u1", 10).interleave is None and decide(off, "u1", 10).experiment is None
    split = decide(Config(enabled=enabled, experiment_name="x", experiment_weights={"ease": 1}), "u1", 10)
    assert split.experiment == "x" and split.interleave is None
    assert decide(Config(enabled=enabled), "u1", 10).experiment is None


def test_interleave_settings_need_exactly_two_engines_and_a_sane_window() -> None:
    from recengine.errors import ConfigError
    from recengine.settings import load_settings

    ok = load_settings(None, routing={"experiment": {"interleave": ["ease", "neural"]}})
    assert ok.routing.experiment.mode == "interleave"
    assert load_settings(None).routing.experiment.mode == "split"
    for pair in (["ease"], ["ease", "neural", "popularity"], ["ease", "ease"]):
        with pytest.raises(ConfigError, match="two different engines"):
            load_settings(None, routing={"experiment": {"interleave": pair}})
    with pytest.raises(ConfigError, match=r"routing\.experiment\.interleave.*unknown engine"):
        load_settings(None, routing={"experiment": {"interleave": ["ease", "bert"]}})
    with pytest.raises(ConfigError, match="attribution_window_s"):
        load_settings(None, serving={"attribution_window_s": 7200, "impressions_retain_s": 3600})
    with pytest.raises(ConfigError, match=r"routing\.experiment\.name"):
        load_settings(None, routing={"experiment": {"name": ""}})
