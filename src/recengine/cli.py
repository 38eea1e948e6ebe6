"""The ``recengine`` command line. Thin: it reads the settings, calls the library and prints.

Every expected failure (bad input, bad config, bad artifact) is a :class:`RecengineError`, printed as one line on
stderr with exit code 2 — never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recengine.errors import RecengineError
from recengine.settings import Settings, format_validation_error, load_settings

app = typer.Typer(
    name="recengine",
    help="Train, evaluate and serve recommendation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare processed data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
# Tables need room: outside a terminal (pipes, CI logs) rich would otherwise squeeze them into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 132)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="recengine.toml to read.")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="dev, test or prod.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    # Messages quote user data (cells, file names): escape them so "[x]" is not read as rich markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    try:
        yield
    except RecengineError as exc:
        raise fail(str(exc)) from None


def settings_from(config: Path | None, profile: str | None = None) -> Settings:
    with errors_to_exit():
        return load_settings(config, profile=profile)


def progress_bar(transient: bool = True, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        disable=disable,
    )


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title, min_width=len(title) + 4)  # a narrow two-column table would wrap its title
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


# ---- data ----------------------------------------------------------------------------------------------------------
@data_app.command("synth")
def data_synth(
    output: Annotated[Path, typer.Option("-o", "--output", help="Data set directory to write.")],
    users: Annotated[int, typer.Option(min=1, max=10_000_000)] = 2000,
    items: Annotated[int, typer.Option(min=10, max=10_000_000)] = 1000,
    seed: int = 0,
    p_sequential: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.6,
    config: ConfigOpt = None,
) -> None:
    """Generate the deterministic synthetic data set and write it processed."""
    from recengine.data.synthetic import SynthConfig, generate
    from recengine.data.transforms import build_dataset

    settings = settings_from(config)
    with errors_to_exit():
        raw, meta = generate(SynthConfig(n_users=users, n_items=items, seed=seed, p_sequential=p_sequential))
        options = prepare_options(settings, {"kind": "synthetic", "users": users, "items": items, "seed": seed})
        ds = build_dataset(raw, meta, options)
        ds.save(output)
    console.print(
        f"wrote {output}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions "
        f"(hash {ds.content_hash})"
    )


def prepare_options(settings: Settings, source: dict[str, Any]) -> Any:
    from recengine.data.transforms import PrepareOptions

    d = settings.data
    return PrepareOptions(
        min_rating=d.min_rating,
        dedupe=d.dedupe,
        user_core=d.user_core,
        item_core=d.item_core,
        split=d.split,
        temporal_valid_fraction=d.temporal_valid_fraction,
        temporal_test_fraction=d.temporal_test_fraction,
        source=source,
    )


@data_app.command("prepare")
def data_prepare(
    source: Annotated[Path, typer.Argument(help="Interaction file (or a MovieLens folder).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Data set directory to write.")],
    fmt: Annotated[
        str, typer.Option("--format", help="auto, csv, tsv, parquet, movielens, sequences or pairs.")
    ] = "auto",
    items: Annotated[Path | None, typer.Option("--items", help="Item metadata file.")] = None,
    user_col: Annotated[str | None, typer.Option(help="Column holding the user id.")] = None,
    item_col: Annotated[str | None, typer.Option(help="Column holding the item id.")] = None,
    time_col: Annotated[str | None, typer.Option(help="Column holding the timestamp.")] = None,
    rating_col: Annotated[str | None, typer.Option(help="Column holding the rating.")] = None,
    on_invalid: Annotated[str | None, typer.Option(help="fail or drop (default from config).")] = None,
    min_rating: Annotated[float | None, typer.Option(help="Implicit-feedback threshold.")] = None,
    split: Annotated[str | None, typer.Option(help="leave_one_out or temporal.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Read raw interactions, validate, transform, split and write a processed data set."""
    from recengine.data.readers import ColumnMapping, find_item_metadata, read_interactions, read_items
    from recengine.data.transforms import build_dataset

    settings = settings_from(config)
    with errors_to_exit():
        flags = {"on_invalid": on_invalid, "min_rating": min_rating, "split": split}
        try:
            for key, value in flags.items():
                if value is not None:
                    setattr(settings.data, key, value)  # sections validate on assignment
        except ValidationError as exc:
            raise fail(format_validation_error(exc, Path("command line"))) from None
        mapping = ColumnMapping.from_options(user=user_col, item=item_col, timestamp=time_col, rating=rating_col)
        raw, report = read_interactions(source, fmt=fmt, mapping=mapping, on_invalid=settings.data.on_invalid)
        meta = None
        if items is None:
            # MovieLens ships its item file beside the ratings: pick it up unless told otherwise.
            items = find_item_metadata(source)
        if items is not None:
            meta, item_report = read_items(items, on_invalid=settings.data.on_invalid)
            report = report.merge(item_report)
        options = prepare_options(settings, {"path": str(source), "format": fmt, "items": str(items or "")})
        ds = build_dataset(raw, meta, options)
        ds.manifest["validation"] = report.to_dict()
        ds.save(output)
    if report.n_rejected:
        console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"wrote {output}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions "
        f"(hash {ds.content_hash})"
    )


@data_app.command("merge-events")
def data_merge_events(
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            help="SQLite event log, or redis://host:port/db[?stream=NAME]; default: the log the server writes.",
        ),
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Data set to merge into (data.dir).")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Where to write it (default: replace --data; the old one is kept as DIR.previous)."
        ),
    ] = None,
    allow_gap: Annotated[
        bool, typer.Option("--allow-gap", help="Merge even though the log trimmed events this data set lacks.")
    ] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Fold the logged events into a data set, then let the log trim them (it never trims unmerged events)."""
    from recengine.data.dataset import Dataset
    from recengine.data.events import merge_events, open_event_log, write_merged

    settings = settings_from(config, profile)
    spec = events or _configured_event_log(settings)
    with errors_to_exit():
        base = data or settings.data.dir
        dataset = Dataset.load(base)
        log = open_event_log(spec)
        try:
            merge = merge_events(dataset, log, allow_gap=allow_gap)
            target = write_merged(merge, output or base)
            # Only now, with the data set on disk, may the log let go of these events.
            log.mark_merged(merge.up_to)
            state = log.state()
        finally:
            log.close()
    info = merge.dataset.manifest["events_merged"]
    console.print(
        f"wrote {target}: {info['n_added']} of {info['n_events']} logged events added, {info['n_pending']} pending "
        f"(unknown users or items); {log.source} merged up to #{state.merged_up_to}, {state.unmerged} unmerged"
    )


def _configured_event_log(settings: Settings) -> str:
    if settings.serving.events_backend == "redis":
        if not settings.cache.redis_url:
            raise fail("serving.events_backend = 'redis' needs cache.redis_url (or pass --events)")
        return settings.cache.redis_url
    return str(settings.serving.events_db_path)


# ---- train / evaluate ----------------------------------------------------------------------------------------------
@app.command()
def train(
    engine: Annotated[str, typer.Option("--engine", "-e", help="popularity, ease, transformer or neural.")],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Processed data set directory.")] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Model directory (default: a new version in artifacts/)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override training.epochs.")] = None,
    events: Annotated[
        str | None,
        typer.Option("--events", help="Also train on the events of this event log (SQLite file or redis:// URL)."),
    ] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Train an engine, evaluate it on the test split and write its artifact."""
    from recengine.data.dataset import Dataset
    from recengine.engines import engine_class
    from recengine.observability.logging import configure_logging
    from recengine.training.distributed import is_rank_zero
    from recengine.training.run import train as train_run

    settings = settings_from(config, profile)
    if epochs is not None:
        settings.training.epochs = epochs
    # Before training: Lightning's and MLflow's own log lines then share the configured format and level.
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    with errors_to_exit():
        engine_class(engine)  # an unknown name is a one-line error, not a missing settings section
        dataset = Dataset.load(data or settings.data.dir)
        if events is not None:
            from recengine.data.events import merge_event_log

            dataset = merge_event_log(dataset, events)
        # Under DDP every rank runs this command; one bar and one report, rank zero's.
        with progress_bar(transient=False, disable=not is_rank_zero()) as bar:
            task = bar.add_task(f"train {engine}", total=None, info="")
            testing: list[Any] = []

            def report(message: str, done: int | None = None, total: int | None = None) -> None:
                bar.update(task, info=message, completed=done, total=total)

            def report_test(done: int, total: int) -> None:
                if not testing:
                    testing.append(bar.add_task("evaluate test", total=total, info=""))
                bar.update(testing[0], completed=done, total=total)

            result = train_run(
                engine,
                dataset,
                getattr(settings.engines, engine),
                settings.training,
                settings.serving.artifacts_dir,
                output=output,
                progress=report,
                test_progress=report_test,
            )
            for done in testing:  # the evaluation's bar goes once it is done, as a transient one would
                bar.remove_task(done)
    if result is None:
        return
    print_metrics(f"{engine} — test ({result.metrics['n_users']} users)", _headline(result.metrics))
    console.print(f"model written to {result.path} in {result.train_seconds:.1f} s")


REFUSED_EXIT = 3
"""``recengine retrain``'s exit code when the gate refused a challenger (the champion keeps serving)."""


@app.command()
def retrain(
    engine: Annotated[
        list[str] | None, typer.Option("--engine", "-e", help="Engine to retrain (repeat for several).")
    ] = None,
    all_engines: Annotated[bool, typer.Option("--all", help="Every engine that has a served model.")] = False,
    events: Annotated[
        str | None,
        typer.Option("--events", help="SQLite event log or redis://host:port/db[?stream=NAME]; default: the server's."),
    ] = None,
    catalogue: Annotated[
        str | None,
        typer.Option(
            "--catalogue",
            help="Catalogue store (its SQLite file or redis://host:port/db?prefix=NAME) or an items table file; "
            "default: the server's catalogue when it has one.",
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Base data set (default: the newest retrain version).")
    ] = None,
    every: Annotated[str | None, typer.Option("--every", help="Run again every 30m, 6h, 1d … until stopped.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override training.epochs.")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Merge the logged events into a new data set, train challengers, promote those that pass the gate, refit them
    on every interaction. Exit code 3 when the gate refused a challenger."""
    from recengine.engines import ENGINE_NAMES, engine_class
    from recengine.engines.artifact import current_dir
    from recengine.observability.logging import configure_logging
    from recengine.training.retrain import parse_every, run_every
    from recengine.training.retrain import retrain as retrain_run

    settings = settings_from(config, profile)
    if epochs is not None:
        settings.training.epochs = epochs
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    if bool(engine) == all_engines:
        raise fail("retrain: pass --engine NAME (one or more) or --all, not both and not neither")
    with errors_to_exit():
        interval = parse_every(every) if every is not None else None
        for name in engine or ():
            if engine_class(name).learns_from_validation:
                raise fail(
                    f"retrain: {name} learns from the validation targets and cannot be refit; once its base "
                    f"engines are retrained, train it again on a split data set (recengine train --engine {name})"
                )
    artifacts = settings.serving.artifacts_dir
    served = [n for n in ENGINE_NAMES if current_dir(artifacts, n) is not None]
    # --all leaves out what cannot be refit (the ranker): it is trained again with `recengine train`.
    names = list(engine or [n for n in served if not engine_class(n).learns_from_validation])
    if not names and served:
        raise fail(f"--all: only {', '.join(served)} served in {artifacts}, and it cannot be refit")
    if not names:
        raise fail(f"--all: no engine has a served model in {artifacts}; name one with --engine")
    from recengine.training.retrain import is_catalogue_store

    if catalogue is not None and not is_catalogue_store(catalogue) and not Path(catalogue).exists():
        raise fail(f"--catalogue: {catalogue} not found")
    if catalogue is None:
        catalogue = _default_catalogue(settings)
    spec = events if events is not None else _default_event_log(settings)
    if spec is None:
        console.print(f"no event log at {settings.serving.events_db_path}: retraining on the data set alone")

    def once() -> int:
        report = retrain_run(names, settings, events=spec, catalogue=catalogue, data=data)
        merged = report.merged
        added = "" if merged is None else f", {merged['n_added']} of {merged['n_events']} logged events added"
        console.print(
            f"data set {report.dataset_dir}: {report.dataset.n_users} users, {report.dataset.n_items} items, "
            f"{report.dataset.n_interactions} interactions{added}"
        )
        for outcome in report.outcomes:
            console.print(outcome.message, markup=False, highlight=False, soft_wrap=True)
        return REFUSED_EXIT if report.refused else 0

    if interval is not None:
        run_every(interval, once)
        return
    with errors_to_exit():
        code = once()
    if code:
        raise fail("the gate refused a challenger (figures above); the champion keeps serving", code)


def _default_event_log(settings: Settings) -> str | None:
    """The server's event log when there is one to read; None when the embedded log was never written."""
    if settings.serving.events_backend == "redis":
        return _configured_event_log(settings)
    path = settings.serving.events_db_path
    return str(path) if path.is_file() else None


def _default_catalogue(settings: Settings) -> str | None:
    """The server's catalogue store when there is one to read: Redis when configured, else its SQLite file if the
    items API ever wrote it."""
    from recengine.catalogue import backend_of, source_of

    if backend_of(settings) == "redis":
        return source_of(settings)
    path = Path(source_of(settings))
    return str(path) if path.is_file() else None


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if "@" in k or k == "n_users"}


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Processed data set directory.")] = None,
    split: Annotated[str, typer.Option(help="test or valid.")] = "test",
    k: Annotated[list[int] | None, typer.Option("--k", help="Cut-offs, e.g. --k 10 --k 20.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write the metrics as JSON here.")] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write an HTML report with plots (K = 1…50) here.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Full-ranking evaluation of a trained model on a data set split."""
    from recengine.data.dataset import Dataset
    from recengine.engines import load_engine
    from recengine.evaluation import evaluate

    settings = settings_from(config)
    ks = tuple(k or (10, 20))
    if split not in ("test", "valid"):
        raise fail(f"--split must be test or valid, got {split!r}")
    if any(x < 1 for x in ks):
        raise fail("--k values must be ≥ 1")
    with errors_to_exit():
        engine = load_engine(model)
        dataset = Dataset.load(data or settings.data.dir)
        trained_on = engine.config.get("dataset_hash")
        if trained_on and trained_on != dataset.content_hash:
            console.print(
                f"[yellow]warning:[/] model was trained on data set {trained_on}, evaluating on {dataset.content_hash}"
            )
        elif engine.config.get("refit"):
            console.print(
                "[yellow]warning:[/] this model was refit on every interaction of this data set, its valid and test "
                "splits included: these figures are not held out (its metrics.json has the held-out ones)"
            )
        if len(engine.item_ids) != dataset.n_items or engine.item_ids.ids != dataset.items.ids.ids:
            raise fail(f"{model}: the model's item vocabulary does not match the data set at {dataset.path}")
        with progress_bar() as bar:
            task = bar.add_task(f"evaluate {split}", total=None, info="")

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if report is None:
                metrics = evaluate(engine.score, dataset, split=split, ks=ks, progress=tick)
            else:
                from recengine.report import render_report, run_scorer

                run = run_scorer(
                    engine.score, dataset, label=engine.name, engine=engine.name, version=engine.version,
                    path=model, split=split, artifact_metrics=engine.metrics, progress=tick, extra_ks=ks,
                )  # fmt: skip
                # One pass serves both: the report's K = 1…50 and the figures asked for, printed as without it.
                asked = {f"{m}@{x}" for m in ("hr", "recall", "ndcg", "mrr", "coverage", "popularity") for x in ks}
                metrics = {key: v for key, v in run.metrics.items() if "@" not in key or key in asked}
                _write_report(report, render_report([run], dataset))
    metrics["engine"] = engine.name
    metrics["model_version"] = engine.version
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print_metrics(f"{engine.name} — {split} ({metrics['n_users']} users)", _headline(metrics))
    if report is not None:
        console.print(f"report written to {report}")


def _write_report(path: Path, html: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise fail(f"{path}: cannot write the report ({exc.strerror or exc})") from None


@app.command("compare")
def compare_cmd(
    models: Annotated[list[Path], typer.Argument(help="Two or more model directories.")],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Processed data set directory.")] = None,
    split: Annotated[str, typer.Option(help="test or valid.")] = "test",
    report: Annotated[Path | None, typer.Option("--report", help="Write the HTML report here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
    config: ConfigOpt = None,
) -> None:
    """Several models on one data set split: every figure side by side, and a paired bootstrap of the per-user
    NDCG@10 differences (is A better than B, and by how much)."""
    from recengine.data.dataset import Dataset
    from recengine.report import compare_runs, evaluate_model, label_runs, render_report

    settings = settings_from(config)
    if len(models) < 2:
        raise fail("compare needs at least two model directories")
    if split not in ("test", "valid"):
        raise fail(f"--split must be test or valid, got {split!r}")
    with errors_to_exit():
        dataset = Dataset.load(data or settings.data.dir)
        runs = []
        with progress_bar() as bar:
            for path in models:
                task = bar.add_task(f"evaluate {path.name}", total=None, info="")

                def tick(done: int, total: int, task: Any = task) -> None:
                    bar.update(task, completed=done, total=total)

                runs.append(evaluate_model(path, dataset, split, progress=tick))
        label_runs(runs)
        pairs = compare_runs(runs, seed=seed)
        if report is not None:
            _write_report(report, render_report(runs, dataset, comparisons=pairs))
    table = Table(title=f"paired bootstrap of per-user ndcg@10 — {split} ({runs[0].metrics['n_users']} users)")
    for column in ("A", "B", "A", "B", "A − B", "95% CI", "verdict"):
        table.add_column(column, justify="left" if column in ("verdict",) else "right")
    for c in pairs:
        table.add_row(
            c.a, c.b, f"{c.mean_a:.4f}", f"{c.mean_b:.4f}", f"{c.mean_diff:+.4f}",
            f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]", c.verdict,
        )  # fmt: skip
    out.print(table)
    if report is not None:
        console.print(f"report written to {report}")


@app.command("evaluate-cold-start")
def evaluate_cold_start_cmd(
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Processed data set directory.")] = None,
    fraction: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share of items hidden from training.")] = 0.1,
    k: Annotated[int, typer.Option("--k", min=1, help="Recall cut-off.")] = 20,
    seed: int = 0,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override training.epochs.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write the figures as JSON here.")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Neural engine on new items: hide a share of the items from training (metadata kept), then measure Recall@k
    of those items for the users who interacted with them, against genre-popularity baselines."""
    from recengine.data.dataset import Dataset
    from recengine.engines.neural.coldstart import evaluate_cold_start

    settings = settings_from(config, profile)
    if epochs is not None:
        settings.training.epochs = epochs
    with errors_to_exit():
        dataset = Dataset.load(data or settings.data.dir)
        with progress_bar(transient=False) as bar:
            task = bar.add_task("train neural (cold start)", total=None, info="")
            result = evaluate_cold_start(
                dataset,
                settings.engines.neural,
                settings.training,
                tracking_dir=settings.serving.artifacts_dir,
                fraction=fraction,
                seed=seed,
                k=k,
                progress=lambda m, d, t: bar.update(task, info=m, completed=d, total=t),
            )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2, sort_keys=True))
    print_metrics(f"cold-start items ({result['n_hidden_items']} hidden, {result['n_users']} users)", result)


@app.command()
def models(
    artifacts: Annotated[
        Path | None, typer.Option("--artifacts", help="Artifacts folder (default from config).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """List the current model of each engine with its test metrics, side by side."""
    from recengine.engines import ENGINE_CLASSES
    from recengine.engines.artifact import current_dir

    settings = settings_from(config)
    root = artifacts or settings.serving.artifacts_dir
    table = Table(title=f"current models in {root}")
    table.add_column("engine", no_wrap=True, min_width=11)
    table.add_column("version", overflow="fold")
    for column in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage@10", "train s"):
        table.add_column(column, justify="right")
    found = 0
    for name in ENGINE_CLASSES:
        path = current_dir(root, name)
        if path is None:
            continue
        found += 1
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            metrics = {}
        test = metrics.get("test", {})
        cells = [
            f"{test[k]:.4f}" if k in test else "—" for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage@10")
        ]
        table.add_row(name, path.name, *cells, str(metrics.get("train_seconds", "—")))
    if not found:
        raise fail(f"no models in {root}; train one with `recengine train --engine popularity --data DIR`")
    out.print(table)


@app.command()
def config(
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Print the effective configuration (file + environment + profile) as JSON."""
    settings = settings_from(config, profile)
    out.print_json(settings.model_dump_json())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65_535, help="Port (default: serving.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Worker processes (default: serving.workers).")
    ] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Serve the current models of the artifacts folder over HTTP (OpenAPI at /docs)."""
    import os

    from recengine.engines import ENGINE_CLASSES
    from recengine.engines.artifact import current_dir

    settings = settings_from(config, profile)
    root = settings.serving.artifacts_dir
    if not any(current_dir(root, name) is not None for name in ENGINE_CLASSES):
        raise fail(
            f"no trained models in {root}/ — train one first: recengine data synth -o data/demo && "
            "recengine train --engine popularity --data data/demo"
        )
    # Workers build their own settings: hand them the same file and profile through the environment.
    if config is not None:
        os.environ["RECENGINE_CONFIG"] = str(config.resolve())
    if profile is not None:
        os.environ["RECENGINE_PROFILE"] = profile
    from recengine.settings import startup_warnings

    for warning in startup_warnings(settings):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    n_workers = workers or settings.serving.workers
    if n_workers > 1 and not settings.cache.redis_url:
        console.print(
            "[yellow]warning:[/] several workers without cache.redis_url: each keeps its own cache and user "
            "histories, so an event reaches only the worker that took it; set cache.redis_url to share them"
        )
    if n_workers > 1 and settings.observability.metrics:
        from recengine.observability.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir()
    import uvicorn

    uvicorn.run(
        "recengine.api.app:create_app",
        factory=True,
        host=host or settings.serving.host,
        port=port or settings.serving.port,
        workers=n_workers,
        log_config=None,
        access_log=False,  # the gateway writes its own access line, with request id and engine
        server_header=False,
    )


# Last: the sub-command module imports this one's helpers lazily, inside its commands.
from recengine.cli_experiments import experiments_app  # noqa: E402

app.add_typer(experiments_app, name="experiments")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
