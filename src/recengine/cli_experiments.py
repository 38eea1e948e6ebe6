"""``recengine experiments …``: the experiment readout from the impression store, in a terminal (or as JSON).

    recengine experiments report                    # the configured experiment, K = 10
    recengine experiments report -e spring-ab --k 20 --json

It reads the store the server writes (``serving.events_backend``: the SQLite file beside the event log, or Redis),
so it answers with the server running or stopped; the figures are those of ``GET /api/v1/admin/experiments``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

experiments_app = typer.Typer(help="Read out experiments from the recorded impressions.", no_args_is_help=True)


def _pct(rate: dict[str, Any]) -> str:
    if rate["value"] is None:
        return "—"
    return f"{rate['value']:.1%} ({100 * rate['ci_low']:.1f}–{100 * rate['ci_high']:.1f})"


def _vs(test: dict[str, Any]) -> tuple[str, str, str]:
    """(difference, z, p) cells; dashes where the test is undefined (an empty arm)."""
    diff = "—" if test["diff"] is None else f"{test['diff']:+.1%}"
    if test["p_value"] is None:
        return diff, "—", "—"
    return diff, f"{test['z']:+.2f}", f"{test['p_value']:.3g}"


async def _report(settings: Any, experiment: str | None, k: int) -> dict[str, Any]:
    from recengine.serving.impressions import ImpressionStore, RedisImpressionStore, SqliteImpressionStore
    from recengine.serving.readout import report
    from recengine.serving.redis import redis_client

    serving = settings.serving
    store: ImpressionStore
    client = None
    if serving.events_backend == "redis":
        from recengine.errors import ConfigError

        if not settings.cache.redis_url:
            raise ConfigError("serving.events_backend = 'redis' needs cache.redis_url")
        client = redis_client(settings.cache.redis_url, max(settings.cache.redis_timeout_ms, 2000.0))
        store = RedisImpressionStore(client, retain_s=serving.impressions_retain_s)
    else:
        path: Path = serving.impressions_db_path
        if not path.is_file():
            from recengine.errors import DataError

            raise DataError(
                f"no impression store at {path}: nothing has been recorded yet (serve with serving.impressions "
                "on, or point serving.impressions_db / serving.artifacts_dir at the server's)"
            )
        store = SqliteImpressionStore(path, serving.impressions_retain_s)
    try:
        return await report(store, settings.routing.experiment, experiment, k)
    finally:
        await store.close()
        if client is not None:
            await client.aclose()


@experiments_app.command("report")
def experiments_report(
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", "-e", help="Experiment name (default: routing.experiment.name)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=10_000, help="The K of online HR@K.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the readout as JSON.")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="recengine.toml to read.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="dev, test or prod.")] = None,
) -> None:
    """Per arm: users, impressions, attributed events, CTR and online HR@K with 95 % Wilson intervals, each arm
    tested against the first (two-proportion z-test); interleaving: wins, ties, losses and a sign test."""
    from recengine.cli import errors_to_exit, fail, out, settings_from

    if experiment is not None and not 1 <= len(experiment) <= 128:
        raise fail("--experiment must be 1 to 128 characters")
    settings = settings_from(config, profile)
    with errors_to_exit():
        body = asyncio.run(_report(settings, experiment, k))
    if as_json:
        out.print_json(json.dumps(body))
        return
    title = f"experiment {body['experiment']} ({body['mode']}{'' if body['configured'] else ', not configured now'})"
    if body["arms"]:
        table = Table(title=title)
        for column in ("arm", "users", "impressions", "attributed", "CTR (95 % CI)", f"HR@{k} (95 % CI)", f"HR@{k} n"):
            table.add_column(column, justify="left" if column == "arm" else "right", no_wrap=True)
        for arm in body["arms"]:
            table.add_row(
                arm["arm"], str(arm["users"]), str(arm["impressions"]), str(arm["attributed_events"]),
                _pct(arm["ctr"]), _pct(arm["hr_at_k"]), str(arm["hr_at_k"]["users"]),
            )  # fmt: skip
        out.print(table)
        caption = f"against the control ({body['control']}): two-proportion z-test, two-sided"
        tests = Table(title=caption, min_width=len(caption) + 4)  # a narrow table would wrap its title
        for column in ("arm", "Δ CTR", "z", "p", f"Δ HR@{k}", "z ", "p "):
            tests.add_column(column, justify="left" if column == "arm" else "right", no_wrap=True)
        for arm in body["arms"][1:]:
            tests.add_row(arm["arm"], *_vs(arm["vs_control"]["ctr"]), *_vs(arm["vs_control"]["hr_at_k"]))
        if len(body["arms"]) > 1:
            out.print(tests)
        out.print(f"intervals: {body['methods']['ci']}; test: {body['methods']['test']}", highlight=False)
    il = body["interleave"]
    if il is not None:
        a, b = il["engines"]
        table = Table(title=f"{title}: interleaving {a} against {b}")
        for column in ("users", "impressions", "attributed", f"credited {a}", f"credited {b}"):
            table.add_column(column, justify="right")
        for column in (f"wins {a}", "ties", f"wins {b}", "sign test p"):
            table.add_column(column, justify="right")
        table.add_row(
            str(il["users"]), str(il["impressions"]), str(il["attributed_events"]), str(il["credited"].get(a, 0)),
            str(il["credited"].get(b, 0)), str(il["wins"]), str(il["ties"]), str(il["losses"]),
            f"{il['sign_test']['p_value']:.3g}",
        )  # fmt: skip
        out.print(table)
        out.print(f"test: {il['sign_test']['method']}", highlight=False)
    if not body["arms"] and il is None:
        out.print(f"{title}: no arms configured and no impressions retained", highlight=False)
