"""``recengine experiments report``: the readout of what the server recorded, from the SQLite file or from Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from recengine.cli import app
from recengine.serving.impressions import ImpressionStore, RedisImpressionStore, SqliteImpressionStore
from recengine.serving.readout import readout
from recengine.serving.redis import redis_client
from tests.serving.test_readout import ATTRIBUTIONS, IMPRESSIONS, _att, _imp

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def fill(store: ImpressionStore, impressions: list, attributions: list) -> None:  # type: ignore[type-arg]
    async def go() -> None:
        await store.add(impressions)
        await store.attribute(attributions)
        await store.close()

    asyncio.run(go())


def config(tmp_path: Path, body: str) -> str:
    path = tmp_path / f"recengine-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(body)
    return str(path)


@pytest.fixture
def sqlite_config(tmp_path: Path) -> str:
    db = tmp_path / "impressions.sqlite3"
    fill(SqliteImpressionStore(db), IMPRESSIONS, ATTRIBUTIONS)
    return config(
        tmp_path,
        f'[serving]\nimpressions_db = "{db}"\n[routing.experiment]\nname = "exp"\n'
        "weights = { ease = 1.0, transformer = 1.0 }\n",
    )


def test_the_report_prints_each_arm_and_names_its_methods(sqlite_config: str) -> None:
    code, output = run("experiments", "report", "--config", sqlite_config, "--k", "3")
    assert code == 0, output
    assert "experiment exp (split)" in output
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]
    # ease: 2 users, 3 answers, 3 attributed events, CTR 2/3, HR@3 1 of 2 users; transformer: 3, 3, 2, 2/3, 2 of 2
    # (the hand count of tests/serving/test_readout.py); then the test against ease: CTR +0, HR +50 % (z 1.15).
    assert rows[0][:4] == ["ease", "2", "3", "3"] and rows[0][4].startswith("66.7% (20.8")
    assert rows[0][5].startswith("50.0%") and rows[0][6] == "2"
    assert rows[1][:4] == ["transformer", "3", "3", "2"] and rows[1][5].startswith("100.0%")
    assert rows[2] == ["transformer", "+0.0%", "+0.00", "1", "+50.0%", "+1.15", "0.248"]
    assert "against the control (ease)" in output
    assert "two-proportion z-test" in output and "Wilson score interval" in output


def test_the_json_report_is_the_readout_of_the_stored_rows(sqlite_config: str) -> None:
    code, output = run("experiments", "report", "--config", sqlite_config, "--k", "3", "--json")
    assert code == 0, output
    body = json.loads(output)
    expected = readout(IMPRESSIONS, ATTRIBUTIONS, experiment="exp", arms=["ease", "transformer"], k=3)
    assert body["arms"] == expected["arms"] and body["mode"] == "split" and body["configured"] is True


def test_an_interleaving_report_shows_wins_ties_losses_and_the_sign_test(tmp_path: Path) -> None:
    db = tmp_path / "impressions.sqlite3"
    mixed = [_imp(f"m{i}", f"u{i}", "interleave", i, "ab", credits="ease neural") for i in range(4)]
    clicks = [_att(f"e{i}", f"m{i}", f"u{i}", "interleave", "ease") for i in range(3)]
    clicks.append(_att("e9", "m3", "u3", "interleave", "neural"))
    fill(SqliteImpressionStore(db), mixed, clicks)
    cfg = config(
        tmp_path,
        f'[serving]\nimpressions_db = "{db}"\n[routing.experiment]\nname = "exp"\ninterleave = ["ease", "neural"]\n',
    )
    code, output = run("experiments", "report", "--config", cfg)
    assert code == 0, output
    assert "interleaving ease against neural" in output and "sign test" in output
    row = next(line for line in output.splitlines() if line.strip().startswith("│") and "4" in line)
    # 4 users, 4 answers, 4 events (3 ease, 1 neural); wins 3, ties 0, losses 1; p = 2 · 5/16 = 0.625.
    assert [c.strip() for c in row.split("│")[1:-1]] == ["4", "4", "4", "3", "1", "3", "0", "1", "0.625"]


def test_a_missing_store_or_bad_option_is_a_clear_failure(tmp_path: Path, sqlite_config: str) -> None:
    cfg = config(tmp_path, f'[serving]\nimpressions_db = "{tmp_path / "none.sqlite3"}"\n')
    code, output = run("experiments", "report", "--config", cfg)
    assert code == 2 and "no impression store at" in output and "Traceback" not in output
    code, output = run("experiments", "report", "--config", sqlite_config, "--experiment", "gone")
    assert code == 2 and "'gone'" in output and "exp" in output
    code, output = run("experiments", "report", "--config", sqlite_config, "--k", "0")
    assert code == 2 and "--k" in output
    code, output = run("experiments", "report", "--config", sqlite_config, "--experiment", "")
    assert code == 2 and "--experiment" in output


def test_the_report_reads_the_redis_store(tmp_path: Path, redis_url: str) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    rows = [_imp(f"{name}-{i.recommendation_id}", i.user_id or "", i.arm or "", i.timestamp, "".join(i.items),
                 i.next_rank) for i in IMPRESSIONS]  # fmt: skip
    rows = [r.__class__(**{**r.__dict__, "experiment": name}) for r in rows]
    attrs = [a.__class__(**{**a.__dict__, "experiment": name, "recommendation_id": f"{name}-{a.recommendation_id}"})
             for a in ATTRIBUTIONS]  # fmt: skip
    # Now-ish timestamps: the store keeps a week.
    import time

    now = time.time()
    rows = [r.__class__(**{**r.__dict__, "timestamp": now - 100 + r.timestamp}) for r in rows]
    attrs = [a.__class__(**{**a.__dict__, "timestamp": now}) for a in attrs]

    async def go() -> None:
        client = redis_client(redis_url, 1000)
        store = RedisImpressionStore(client)
        await store.add(rows)
        await store.attribute(attrs)
        await client.aclose()

    asyncio.run(go())
    cfg = config(
        tmp_path,
        f'[serving]\nevents_backend = "redis"\n[cache]\nredis_url = "{redis_url}"\n'
        f'[routing.experiment]\nname = "{name}"\nweights = {{ ease = 1.0, transformer = 1.0 }}\n',
    )
    try:
        code, output = run("experiments", "report", "--config", cfg, "--k", "3", "--json")
        assert code == 0, output
        body = json.loads(output)
        assert [(a["arm"], a["users"], a["impressions"], a["attributed_events"]) for a in body["arms"]] == [
            ("ease", 2, 3, 3),
            ("transformer", 3, 3, 2),
        ]
    finally:
        cleanup = redis.Redis.from_url(redis_url)
        keys = cleanup.keys("recengine:imp:*")
        if keys:
            cleanup.delete(*keys)
        cleanup.close()
