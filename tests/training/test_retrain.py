"""``recengine retrain``: the merged timeline is split again (no leakage), the gate keeps a worse challenger out, a
promoted model is refit on every interaction, and the run is safe to schedule (lock, watermark, retention)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from recengine.cli import REFUSED_EXIT, app
from recengine.data.dataset import TEST, TRAIN, VALID, Dataset
from recengine.data.events import Event, merge_event_log
from recengine.engines.artifact import current_dir
from recengine.engines.base import Engine
from recengine.engines.popularity import Popularity
from recengine.errors import ConfigError, RetrainBusy
from recengine.serving.events import EventLog, RedisStreamEventLog, Retention, SqliteEventLog
from recengine.serving.redis import redis_client
from recengine.settings import Settings, load_settings
from recengine.training import run
from recengine.training.retrain import (
    RedisLock,
    aligned_scorer,
    parse_every,
    retrain,
    retrain_lock,
    run_every,
)

QUIET = {"RECENGINE_OBSERVABILITY__LOG_LEVEL": "ERROR"}


def settings_for(tmp: Path, base: Dataset, **training: Any) -> Settings:
    return load_settings(
        None,
        serving={"artifacts_dir": str(tmp / "art"), "events_db": str(tmp / "events.sqlite3")},
        data={"dir": str(base.path)},
        training={"valid_users": None, "epochs": 1, "accelerator": "cpu", "devices": 1, **training},
        engines={
            "ease": {"lambdas": [50.0]},
            "transformer": {"max_len": 20, "d_model": 16, "n_layers": 1, "n_heads": 2},
            "neural": {"d_model": 16, "max_len": 20},
        },
        observability={"log_level": "ERROR"},
    )


def champion(settings: Settings, engine: str, dataset: Dataset) -> Path:
    """A served model of ``engine`` trained the ordinary way (``recengine train``): CURRENT names it."""
    result = run.train(
        engine, dataset, getattr(settings.engines, engine), settings.training, settings.serving.artifacts_dir
    )
    assert result is not None
    return result.path


def write_events(path: Path, events: Sequence[Event]) -> None:
    async def go() -> None:
        log = SqliteEventLog(path)
        await log.append(events)
        await log.close()

    asyncio.run(go())


def later_events(ds: Dataset, users: Sequence[str], item: str, after: int = 10, prefix: str = "e") -> list[Event]:
    newest = int(ds.timestamp.max())
    return [Event(f"{prefix}{i}", u, item, "view", newest + after + i) for i, u in enumerate(users)]


# ---- no leakage ----------------------------------------------------------------------------------------------------
def test_merged_events_are_split_again_so_nothing_later_than_a_test_item_is_trained_on(
    small_dataset: Dataset, tmp_path: Path
) -> None:
    ds = small_dataset
    u = 3
    user = ds.users.ids[u]
    rows = np.flatnonzero(ds.user == u)
    old_test = int(ds.item[rows][ds.split[rows] == TEST][0])
    test_time = int(ds.timestamp[rows][ds.split[rows] == TEST][0])
    newest_item, late_arrival = ds.items.ids.ids[9], ds.items.ids.ids[11]
    write_events(
        tmp_path / "ev.sqlite3",
        [
            Event("late", user, newest_item, "view", test_time + 1000),  # after the user's test item: the new target
            Event("early", user, late_arrival, "view", test_time - 1),  # logged late, happened before the test item
        ],
    )
    merged = merge_event_log(ds, tmp_path / "ev.sqlite3")
    mrows = np.flatnonzero(merged.user == u)
    splits, items, stamps = merged.split[mrows], merged.item[mrows], merged.timestamp[mrows]
    assert list(items[splits == TEST]) == [9]  # the newest interaction is the test target
    assert list(items[splits == VALID]) == [old_test]  # the old test item is now the validation target
    assert 11 in items[splits == TRAIN]
    # For every user: no train or validation row later than the test row (old behaviour: the 'late' event was train).
    for v in np.unique(merged.user):
        r = merged.user == v
        if (merged.split[r] == TEST).any():
            t = merged.timestamp[r][merged.split[r] == TEST][0]
            assert merged.timestamp[r][merged.split[r] != TEST].max() <= t
    assert stamps[splits == TRAIN].max() <= stamps[splits == TEST][0]
    # The test history of the user holds neither its test item nor anything after it.
    users, histories, targets = merged.eval_cases("test")
    h = histories[int(np.flatnonzero(users == u)[0])]
    assert list(targets[int(np.flatnonzero(users == u)[0])]) == [9] and 9 not in h
    assert len(h) == len(mrows) - 1


def test_train_with_events_evaluates_on_the_resplit_data(small_dataset: Dataset, tmp_path: Path) -> None:
    item = small_dataset.items.ids.ids[7]
    write_events(tmp_path / "ev.sqlite3", later_events(small_dataset, small_dataset.users.ids[1:41], item))
    env = {**QUIET, "RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "art")}
    args = ["train", "--engine", "popularity", "--data", str(small_dataset.path), "-o", str(tmp_path / "m")]
    done = CliRunner().invoke(app, [*args, "--events", str(tmp_path / "ev.sqlite3")], env=env)
    assert done.exit_code == 0, done.output
    merged = merge_event_log(small_dataset, tmp_path / "ev.sqlite3")
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    # Trained on the merged train split only: the 40 events are those users' test items, not training rows.
    counts = Popularity.load(tmp_path / "m").counts.numpy()
    assert np.array_equal(counts, merged.item_counts(max_split=TRAIN).astype(np.float32))
    assert counts[7] < small_dataset.item_counts(max_split=TEST)[7] + 40
    assert metrics["test"]["dataset_hash"] == merged.content_hash


# ---- the gate ------------------------------------------------------------------------------------------------------
def shuffled_fit(engine: str, dataset: Dataset, *args: Any, **kwargs: Any) -> Engine:
    """A deliberately worse challenger: trained on the same rows with their items shuffled."""
    rng = np.random.default_rng(0)
    return run.fit(engine, replace(dataset, item=rng.permutation(dataset.item), path=None), *args, **kwargs)


def test_the_gate_refuses_a_worse_challenger_and_the_champion_keeps_serving(
    small_dataset: Dataset, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, small_dataset)
    served = champion(settings, "ease", small_dataset)
    report = retrain(["ease"], settings, fit_fn=shuffled_fit)
    (outcome,) = report.outcomes
    assert not outcome.promoted and report.refused == [outcome]
    assert outcome.champion is not None and outcome.challenger < outcome.champion - 0.1
    assert outcome.champion_version == served.name
    assert f"{outcome.challenger:.4f}" in outcome.message and f"{outcome.champion:.4f}" in outcome.message
    assert current_dir(settings.serving.artifacts_dir, "ease") == served
    assert sorted(p.name for p in (tmp_path / "art" / "ease").iterdir() if p.is_dir()) == [served.name]


def test_the_cli_exits_non_zero_on_a_refusal_naming_both_figures(
    small_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, small_dataset)
    served = champion(settings, "ease", small_dataset)
    monkeypatch.setattr(run, "fit", _shuffled_through(run.fit))
    env = {
        **QUIET,
        "RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "art"),
        "RECENGINE_ENGINES__EASE__LAMBDAS": "[50]",
    }
    done = CliRunner().invoke(app, ["retrain", "--engine", "ease", "--data", str(small_dataset.path)], env=env)
    assert done.exit_code == REFUSED_EXIT, done.output
    text = " ".join(done.output.split())
    assert "challenger refused" in text and "champion keeps serving" in text and served.name in text
    assert current_dir(tmp_path / "art", "ease") == served


def _shuffled_through(fit: Callable[..., Engine]) -> Callable[..., Engine]:
    def bad(engine: str, dataset: Dataset, *args: Any, **kwargs: Any) -> Engine:
        rng = np.random.default_rng(0)
        return fit(engine, replace(dataset, item=rng.permutation(dataset.item), path=None), *args, **kwargs)

    return bad


def test_a_promotion_moves_current_and_the_refit_counts_every_users_last_items(
    small_dataset: Dataset, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, small_dataset, promotion_tolerance=1.0)
    served = champion(settings, "popularity", small_dataset)
    users = small_dataset.users.ids[1:31]
    write_events(tmp_path / "ev.sqlite3", later_events(small_dataset, users, small_dataset.items.ids.ids[7]))
    report = retrain(["popularity"], settings, events=str(tmp_path / "ev.sqlite3"))
    (outcome,) = report.outcomes
    assert outcome.promoted and outcome.path is not None
    assert current_dir(tmp_path / "art", "popularity") == outcome.path != served
    merged = report.dataset
    # The 30 events are those users' test items, and the served model counts them (train + valid + test).
    assert merged.item_counts(max_split=TRAIN)[7] < merged.item_counts(max_split=TEST)[7]
    counts = Popularity.load(outcome.path).counts.numpy()
    assert np.array_equal(counts, merged.item_counts(max_split=TEST).astype(np.float32))
    assert counts[7] == small_dataset.item_counts(max_split=TEST)[7] + 30
    metrics = json.loads((outcome.path / "metrics.json").read_text())
    assert metrics["refit"]["on"] == "all" and metrics["refit"]["n_interactions"] == merged.n_interactions
    assert "held-out" in metrics["refit"]["note"]
    assert metrics["test"]["dataset_hash"] == merged.content_hash  # selection's figures, on the merged split
    assert metrics["gate"]["champion_version"] == served.name
    assert metrics["gate"]["challenger"] == pytest.approx(outcome.challenger)
    config = json.loads((outcome.path / "config.json").read_text())
    assert config["dataset_hash"] == merged.content_hash and config["version"] == outcome.path.name


@pytest.mark.parametrize("engine", ["transformer", "neural"])
def test_a_trained_engine_is_refit_for_the_selected_number_of_epochs(
    engine: str, small_dataset: Dataset, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, small_dataset, epochs=2)
    report = retrain([engine], settings)
    (outcome,) = report.outcomes
    assert outcome.promoted and outcome.champion is None  # nothing served yet: nothing to beat
    assert outcome.path is not None
    metrics = json.loads((outcome.path / "metrics.json").read_text())
    assert metrics["refit"]["epochs"] == metrics["best_epoch"] >= 1
    assert metrics["refit"]["n_interactions"] == report.dataset.n_interactions
    assert len(metrics["valid_history"]) == metrics["epochs_run"]  # selection's record, kept
    config = json.loads((outcome.path / "config.json").read_text())
    assert config["hyper_parameters"]["max_len"] == 20
    assert config["refit"]["newest_timestamp"] == int(report.dataset.timestamp.max())


def test_a_refit_champion_is_judged_only_on_validation_items_it_has_not_seen(
    small_dataset: Dataset, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, small_dataset, promotion_tolerance=1.0)
    first = retrain(["popularity"], settings).outcomes[0]
    assert first.promoted
    # Nothing new: every validation item is one the refit champion trained on; no judgement, nothing moves.
    again = retrain(["popularity"], settings).outcomes[0]
    assert again.skipped and not again.promoted and "no new events" in again.message
    assert current_dir(tmp_path / "art", "popularity") == first.path
    users = small_dataset.users.ids[1:21]
    write_events(tmp_path / "ev.sqlite3", later_events(small_dataset, users, small_dataset.items.ids.ids[5]))
    write_events(tmp_path / "ev.sqlite3", later_events(small_dataset, users, small_dataset.items.ids.ids[6], 100, "f"))
    third = retrain(["popularity"], settings, events=str(tmp_path / "ev.sqlite3")).outcomes[0]
    assert third.promoted
    gate = json.loads((third.path / "metrics.json").read_text())["gate"]  # type: ignore[operator]
    assert gate["n_users"] == 20  # the users whose validation item is newer than the champion's data


def test_the_champion_is_scored_in_the_merged_vocabulary(small_dataset: Dataset, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, small_dataset)
    write_events(tmp_path / "ev.sqlite3", [Event("n", "new-user", "new-item", "view", 2e9)])
    merged = merge_event_log(small_dataset, tmp_path / "ev.sqlite3", grow=True)
    assert merged.n_items == small_dataset.n_items + 1 and merged.n_users == small_dataset.n_users + 1
    assert merged.items.ids.ids[: small_dataset.n_items + 1] == small_dataset.items.ids.ids  # indices kept
    pop = run.fit("popularity", small_dataset, settings.engines.popularity, settings.training, tmp_path / "art")
    scores = np.asarray(aligned_scorer(pop, merged.items)([np.asarray([1, merged.n_items])]))
    assert scores.shape == (1, merged.n_items + 1)
    assert scores[0, -1] == -np.inf and bool(np.isfinite(scores[0, 1 : small_dataset.n_items + 1]).all())


def test_a_catalogue_adds_items_whose_events_then_train(small_dataset: Dataset, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, small_dataset, promotion_tolerance=1.0)
    items = tmp_path / "items.csv"
    known = small_dataset.items.ids.ids[4]
    items.write_text(f"item_id,title\nbrand-new,The New One\n{known},Renamed\n")
    users = small_dataset.users.ids[1:11]
    write_events(tmp_path / "ev.sqlite3", later_events(small_dataset, users, "brand-new"))
    report = retrain(["popularity"], settings, events=str(tmp_path / "ev.sqlite3"), catalogue=items)
    ds = report.dataset
    new = ds.items.ids.index("brand-new")
    assert new == small_dataset.n_items + 1 and ds.items.titles is not None
    assert ds.items.titles[new] == "The New One" and ds.items.titles[4] == "Renamed"
    assert ds.items.titles[5] == small_dataset.items.titles[5]  # type: ignore[index]
    assert int((ds.item == new).sum()) == 10
    assert Popularity.load(report.outcomes[0].path).counts[new] == 10  # type: ignore[arg-type]
    assert Dataset.load(tmp_path / "art" / "datasets").content_hash == ds.content_hash  # CURRENT names it
    # A server whose data.dir is the versions folder seeds histories from the newest version, events included.
    from recengine.serving.stores import seed_histories

    seeded = seed_histories(tmp_path / "art" / "datasets")
    assert len(seeded) == ds.n_users and seeded.get(users[0], 1000)[-1] == "brand-new"


# ---- both backends: watermark and retention ------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Callable[..., Any], str]]:
    """``call(method, *args)`` runs one method of a fresh writer of the log, and the ``--events`` spec naming it."""
    if request.param == "sqlite":
        db = tmp_path / "ev.sqlite3"

        def make() -> EventLog:
            return SqliteEventLog(db, Retention(trim_every=10**9))

        spec = str(db)
        cleanup: Callable[[], Any] | None = None
    else:
        url = request.getfixturevalue("redis_url")
        stream = f"test:retrain:{uuid.uuid4().hex}"

        def make() -> EventLog:
            return RedisStreamEventLog(redis_client(url, 2000), stream=stream, retention=Retention(trim_every=10**9))

        spec = f"{url}?stream={stream}"

        async def drop() -> None:
            log = make()
            assert isinstance(log, RedisStreamEventLog)
            keys = await log.client.keys(stream + "*")
            if keys:
                await log.client.delete(*keys)
            await log.close()

        cleanup = drop

    def call(method: str, *args: Any) -> Any:
        async def go() -> Any:
            log = make()
            try:
                return await getattr(log, method)(*args)
            finally:
                await log.close()

        return asyncio.run(go())

    yield call, spec
    if cleanup is not None:
        asyncio.run(cleanup())


def test_either_backend_is_merged_and_only_merged_events_are_ever_trimmed(
    small_dataset: Dataset, tmp_path: Path, backend: tuple[Callable[..., Any], str]
) -> None:
    call, spec = backend
    settings = settings_for(tmp_path, small_dataset, promotion_tolerance=1.0)
    users = small_dataset.users.ids[1:26]
    call("append", later_events(small_dataset, users, small_dataset.items.ids.ids[7]))
    during: list[str] = []

    def fit_while_events_arrive(*args: Any, **kwargs: Any) -> Engine:
        # Events logged while the run trains are after its watermark: they must survive any trim.
        call("append", [Event("during", users[0], small_dataset.items.ids.ids[8], "view", 2e9)])
        during.append("during")
        return run.fit(*args, **kwargs)

    report = retrain(["popularity"], settings, events=spec, fit_fn=fit_while_events_arrive)
    assert report.merged is not None and report.merged["n_added"] == 25 and during
    state = call("state")
    rows = call("read")
    assert state.merged_up_to == rows[-2][0] < rows[-1][0] and state.unmerged == 1
    assert report.dataset.manifest["event_logs"][state.log_id] == state.merged_up_to  # the high-water mark
    call("trim")
    assert [e.event_id for _, e in call("read")] == ["during"]  # merged ones gone, the unmerged one kept
    # The next run starts from the newest version, which holds the trimmed events: nothing is lost.
    second = retrain(["popularity"], settings, events=spec)
    assert second.merged is not None and second.merged["n_added"] == 1
    assert second.dataset.n_interactions == small_dataset.n_interactions + 26
    assert call("state").unmerged == 0


def test_a_run_that_fails_before_its_data_set_is_written_moves_no_watermark(
    small_dataset: Dataset, tmp_path: Path, backend: tuple[Callable[..., Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import recengine.training.retrain as retrain_module

    call, spec = backend
    settings = settings_for(tmp_path, small_dataset)
    call("append", later_events(small_dataset, small_dataset.users.ids[1:6], small_dataset.items.ids.ids[7]))

    def disk_full(*args: Any, **kwargs: Any) -> Path:
        raise OSError("No space left on device")

    monkeypatch.setattr(retrain_module, "write_merged", disk_full)
    with pytest.raises(OSError, match="No space"):
        retrain(["popularity"], settings, events=spec)
    call("trim")
    assert call("state").merged_up_to == 0 and len(call("read")) == 5


# ---- one run at a time ---------------------------------------------------------------------------------------------
def test_a_second_run_is_refused_while_the_artifacts_folder_is_locked(small_dataset: Dataset, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, small_dataset)
    with retrain_lock(tmp_path / "art"):
        with pytest.raises(RetrainBusy, match="another recengine retrain is running"):
            retrain(["popularity"], settings)
        env = {**QUIET, "RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "art")}
        done = CliRunner().invoke(app, ["retrain", "-e", "popularity", "--data", str(small_dataset.path)], env=env)
        assert done.exit_code == 2 and "another recengine retrain is running" in " ".join(done.output.split())
    assert not (tmp_path / "art" / "popularity").exists()
    assert retrain(["popularity"], settings).outcomes[0].promoted  # released: the next run goes ahead


def test_a_redis_lock_keeps_two_schedulers_apart_and_expires(
    redis_url: str, small_dataset: Dataset, tmp_path: Path
) -> None:
    import redis

    stream = f"test:retrain:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)
    holder = RedisLock(client, f"{stream}:retrain-lock", ttl_s=30)
    holder.acquire()
    try:
        assert 0 < client.pttl(f"{stream}:retrain-lock") <= 30_000
        settings = settings_for(tmp_path, small_dataset)
        with pytest.raises(RetrainBusy, match="Redis lock"):
            retrain(["popularity"], settings, events=f"{redis_url}?stream={stream}")
        assert not (tmp_path / "art" / "popularity").exists()
        # Another holder's token cannot release it; expiry (the crashed-run case) can.
        RedisLock(client, f"{stream}:retrain-lock", ttl_s=30).release()
        assert client.exists(f"{stream}:retrain-lock")
    finally:
        holder.release()
    assert not client.exists(f"{stream}:retrain-lock")
    client.set(f"{stream}:retrain-lock", "crashed", px=1)
    import time

    time.sleep(0.01)
    assert retrain(["popularity"], settings, events=f"{redis_url}?stream={stream}").outcomes[0].promoted
    client.delete(*client.keys(stream + "*"))
    client.close()


# ---- scheduling and the command line ------------------------------------------------------------------------------
def test_a_distributed_setting_is_refused_before_anything_is_merged(small_dataset: Dataset, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, small_dataset, strategy="ddp")
    with pytest.raises(ConfigError, match="retrain runs in one process"):
        retrain(["popularity"], settings)
    assert not (tmp_path / "art").exists()


def test_every_parses_durations_and_refuses_nonsense() -> None:
    assert parse_every("6h") == 21_600 and parse_every("30m") == 1800 and parse_every("1d") == 86_400
    assert parse_every("90s") == 90 and parse_every("1.5h") == 5400
    for bad in ("6", "6x", "h", "-1h", "0.1s"):
        with pytest.raises(ConfigError, match="--every"):
            parse_every(bad)


def test_a_schedule_runs_on_after_a_failed_round() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def once() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("redis went away")

    run_every(60.0, once, sleep=slept.append, rounds=3)
    assert calls == [0, 1, 2] and len(slept) == 2 and all(55 < s <= 60 for s in slept)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "--engine NAME"),
        (["-e", "ease", "--all"], "not both"),
        (["-e", "nope"], "unknown engine 'nope'"),
        (["-e", "ease", "--every", "6x"], "--every"),
        (["-e", "ease", "--catalogue", "missing-items.csv"], "--catalogue: missing-items.csv not found"),
        (["--all"], "--all: no engine has a served model"),
        (["-e", "popularity", "--events", "missing.sqlite3"], "missing.sqlite3: event log not found"),
    ],
)
def test_bad_retrain_input_is_a_clear_error(
    args: list[str], needle: str, small_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**QUIET, "RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "art")}
    done = CliRunner().invoke(app, ["retrain", "--data", str(small_dataset.path), *args], env=env)
    assert done.exit_code == 2, done.output
    assert needle in " ".join(done.output.split())
    assert not (tmp_path / "art" / "datasets").exists()  # nothing merged, nothing written


def test_the_kubernetes_cronjob_never_overlaps_and_names_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    path = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "retrain-cronjob.yaml"
    job = yaml.safe_load(path.read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0  # a refusal (exit 3) is not retried
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["recengine", "retrain"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECENGINE_SERVING__ADMIN_API_KEY", "x" * 32)  # the prod profile's own requirement
    settings = load_settings(None)  # every variable names a real setting, with a valid value
    assert settings.training.promotion_tolerance == float(env["RECENGINE_TRAINING__PROMOTION_TOLERANCE"])
    assert settings.serving.events_backend == "redis"


def test_the_loop_end_to_end_through_a_live_app(small_dataset: Dataset, tmp_path: Path) -> None:
    """Events POSTed to the service are merged; a worse challenger is refused and the champion keeps answering; a
    promoted one is loaded by the service."""
    from fastapi.testclient import TestClient

    from recengine.api.app import create_app

    key = "k" * 32
    settings = load_settings(
        None,
        serving={
            "artifacts_dir": str(tmp_path / "art"),
            "events_db": str(tmp_path / "events.sqlite3"),
            "admin_api_key": key,
            "reload_poll_s": 0,
        },
        data={"dir": str(small_dataset.path)},
        training={"valid_users": None, "accelerator": "cpu", "devices": 1},
        engines={"ease": {"lambdas": [50.0]}},
        observability={"log_level": "ERROR"},
    )
    served = champion(settings, "ease", small_dataset)
    auth = {"X-API-Key": key}
    newest = int(small_dataset.timestamp.max())
    users = small_dataset.users.ids[1:41]
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        events = [
            {"user_id": u, "item_id": small_dataset.items.ids.ids[7], "timestamp": newest + i, "event_id": f"x{i}"}
            for i, u in enumerate(users)
        ]
        assert c.post("/api/v1/events", json=events).status_code in (200, 201, 202)

        def served_version() -> str:
            r = c.get("/api/v1/recommendations", params={"user_id": users[0], "k": 5, "engine": "ease"})
            assert r.status_code == 200, r.text
            return str(r.json()["model_version"])

        refused = retrain(["ease"], settings, events=str(tmp_path / "events.sqlite3"), fit_fn=shuffled_fit)
        assert refused.merged is not None and refused.merged["n_added"] == 40
        assert not refused.outcomes[0].promoted
        c.post("/api/v1/admin/reload", headers=auth)
        assert served_version() == served.name  # the champion keeps serving

        settings.training.promotion_tolerance = 1.0
        promoted = retrain(["ease"], settings, events=str(tmp_path / "events.sqlite3")).outcomes[0]
        assert promoted.promoted and promoted.version is not None
        r = c.post("/api/v1/admin/reload", headers=auth, json={"engines": ["ease"]})
        assert r.status_code == 200 and r.json()["results"][0]["status"] == "loaded"
        assert served_version() == promoted.version


def test_the_compose_retrainer_is_opt_in_and_runs_a_valid_schedule() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml").read_text())
    retrainer = compose["services"]["retrainer"]
    assert retrainer["profiles"] == ["retrain"]  # not part of a plain `up`
    command = retrainer["command"]
    assert command[:2] == ["retrain", "--all"] and parse_every(command[command.index("--every") + 1]) == 6 * 3600
    assert retrainer["environment"]["RECENGINE_SERVING__EVENTS_BACKEND"] == "redis"  # the Redis lock applies


def test_evaluating_a_refit_model_on_its_own_data_set_warns_that_nothing_is_held_out(
    small_dataset: Dataset, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, small_dataset)
    write_events(
        tmp_path / "ev.sqlite3",
        later_events(small_dataset, small_dataset.users.ids[1:6], small_dataset.items.ids.ids[1]),
    )
    outcome = retrain(["popularity"], settings, events=str(tmp_path / "ev.sqlite3")).outcomes[0]
    assert outcome.path is not None
    args = ["evaluate", "--model", str(outcome.path), "--data", str(tmp_path / "art" / "datasets")]
    done = CliRunner().invoke(app, args, env=QUIET)
    assert done.exit_code == 0, done.output
    assert "not held out" in " ".join(done.output.split())
    # On another data set (the base, without the events) it says so instead.
    other = CliRunner().invoke(app, ["evaluate", "--model", str(outcome.path), "--data", str(small_dataset.path)])
    assert other.exit_code == 0 and "not held out" not in " ".join(other.output.split())
    assert "model was trained on data set" in " ".join(other.output.split())


def test_every_loops_the_command_and_a_refusal_does_not_end_it(
    small_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recengine.training.retrain as retrain_module

    settings = settings_for(tmp_path, small_dataset)
    served = champion(settings, "ease", small_dataset)
    monkeypatch.setattr(run, "fit", _shuffled_through(run.fit))  # every round's challenger is refused
    slept: list[float] = []

    def two_rounds(interval_s: float, once: Callable[[], Any], **_: Any) -> None:
        run_every(interval_s, once, sleep=slept.append, rounds=2)

    monkeypatch.setattr(retrain_module, "run_every", two_rounds)
    env = {
        **QUIET,
        "RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "art"),
        "RECENGINE_ENGINES__EASE__LAMBDAS": "[50]",
    }
    done = CliRunner().invoke(app, ["retrain", "--all", "--every", "2h", "--data", str(small_dataset.path)], env=env)
    assert done.exit_code == 0, done.output
    assert " ".join(done.output.split()).count("challenger refused") == 2
    assert len(slept) == 1 and 7000 < slept[0] <= 7200
    assert current_dir(tmp_path / "art", "ease") == served


def test_retrain_reads_the_catalogue_the_items_api_writes(small_dataset: Dataset, tmp_path: Path) -> None:
    """The server's catalogue store (what PUT /api/v1/items writes) is the default --catalogue: a new item with its
    metadata and its logged events is in the next data set; a retired item's interactions stay training data."""
    from recengine.catalogue import source_of
    from recengine.catalogue.records import CatalogueItem
    from recengine.catalogue.sqlite_store import sqlite_connect, sqlite_mark_unavailable, sqlite_put
    from recengine.cli import _default_catalogue

    settings = settings_for(tmp_path, small_dataset, promotion_tolerance=1.0)
    assert _default_catalogue(settings) is None  # the items API never wrote one
    store = Path(source_of(settings))
    store.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite_connect(store)
    retired = small_dataset.items.ids.ids[3]
    sqlite_put(conn, [CatalogueItem("brand-new", "The New One", ("drama",), {"price": 9.5})])
    sqlite_mark_unavailable(conn, retired, None)
    conn.close()
    assert _default_catalogue(settings) == str(store)
    users = small_dataset.users.ids[1:6]
    write_events(tmp_path / "ev.sqlite3", later_events(small_dataset, users, "brand-new"))
    report = retrain(
        ["popularity"], settings, events=str(tmp_path / "ev.sqlite3"), catalogue=_default_catalogue(settings)
    )
    ds = report.dataset
    new = ds.items.ids.index("brand-new")
    assert ds.items.titles is not None and ds.items.titles[new] == "The New One"
    assert int((ds.item == new).sum()) == 5
    old = small_dataset.items.ids.index(retired)
    assert int((ds.item == old).sum()) == int((small_dataset.item == old).sum())
    assert ds.manifest["retrain"]["catalogue"] == str(store)
