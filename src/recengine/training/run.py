"""A training run, from a data set to a served artifact: its one owner.

    result = train("transformer", dataset, settings.engines.transformer, settings.training, artifacts_dir)
    result.path      # <artifacts_dir>/transformer/<version>, now CURRENT (or the explicit ``output``, left as is)
    result.metrics   # the test split's figures, also in metrics.json ("test") and in the run's MLflow record

    engine = fit("neural", dataset, section, training, tracking_dir)    # train and select only
    served = refit("neural", dataset, section, training, tracking_dir, engine)   # the same recipe, on everything

``train`` is ``fit`` plus the test evaluation, the version, the artifact and the ``CURRENT`` pointer, all inside one
MLflow run that is finished FAILED when any step raises and FINISHED after the last one. ``fit`` opens its own run
unless given one; the benchmarks and the cold-start evaluation call it directly. An engine trained by gradient
descent brings its training task (``training/task.py``); a closed-form one (popularity, EASE) its ``fit``. Every
engine's metrics share one schema:

    best_epoch          1-based epoch whose weights were kept (1 for a closed-form engine)
    epochs_run          epochs trained (1 for a closed-form engine)
    valid_ndcg@10       validation NDCG@10 of the kept model (None without validation users)
    seconds_per_epoch   wall seconds per epoch, its validation included
    train_seconds       wall seconds of the whole fit
    valid_history       one ``{"epoch": 0-based, "valid/<metric>": …}`` per epoch, as Lightning counts epochs
    test                (``train``) the test split's figures

Under distributed training (``training.strategy = "ddp"``, see docs/training.md) every rank runs this; rank zero
alone opens the MLflow run, evaluates on the test split, writes the artifact and moves ``CURRENT``. ``train``
returns None on the other ranks once training is done, and they write nothing.

Nothing global is configured here (logging belongs to the caller); the trainer sets torch's threads when the
settings ask for a number.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from pydantic import BaseModel

from recengine.data.dataset import Dataset
from recengine.engines import engine_class
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.base import Engine
from recengine.errors import ConfigError
from recengine.evaluation import evaluate
from recengine.settings import TrainingSettings
from recengine.training.distributed import agree_on_weights, is_rank_zero
from recengine.training.task import EngineTask, Progress
from recengine.training.tracking import NullTracker, Tracker, flatten
from recengine.training.validation import MONITOR, validation_metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    from lightning.pytorch.callbacks import Callback

TEST_KS = (10, 20)
"""Cut-offs of the test evaluation that ``train`` stores and reports."""
_SUMMARY_KEYS = ("best_epoch", "epochs_run", "valid_ndcg@10", "seconds_per_epoch", "train_seconds")
"""The scalar figures of the metrics schema, also logged to the run."""


@dataclass(frozen=True)
class TrainResult:
    engine: Engine
    path: Path
    """The artifact directory written."""
    metrics: dict[str, Any]
    """The test split's figures (``evaluate``'s flat keys)."""
    train_seconds: float
    mlflow_run_id: str


def train(
    engine: str,
    dataset: Dataset,
    section: BaseModel,
    training: TrainingSettings,
    artifacts_dir: Path,
    output: Path | None = None,
    progress: Progress | None = None,
    test_progress: Callable[[int, int], None] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult | None:
    """Fit ``engine`` with its settings ``section``, evaluate it on the test split and write its artifact.

    Without ``output`` the artifact becomes a new version in ``artifacts_dir/<engine>/`` (its directory name is the
    version the server reports) and ``CURRENT`` moves to it last, once everything else, tracking included, has
    succeeded; an explicit ``output`` is written as is and promoted nowhere. ``progress`` follows training,
    ``test_progress(done, total)`` the test evaluation. None on a rank other than zero of a distributed run.
    """
    from recengine.observability.logging import log_training_summary

    engine_class(engine)  # an unknown name fails before a tracking run is opened
    if not is_rank_zero():
        # The other ranks train alongside rank zero (tracking nothing), then leave it the rest.
        fit(engine, dataset, section, training, artifacts_dir, progress, callbacks)
        return None
    target = Path(output) if output is not None else version_dir(artifacts_dir, engine)
    with tracked_run(training, artifacts_dir, engine, dataset) as tracker:
        model = fit(engine, dataset, section, training, artifacts_dir, progress, callbacks, tracker=tracker)
        test = evaluate(model.score, dataset, split="test", ks=TEST_KS, progress=test_progress)
        model.metrics = {**model.metrics, "test": test}
        if output is None:
            model.config["version"] = target.name
        model.save(target)
        tracker.log_metrics({f"test/{k}": v for k, v in test.items() if "@" in k})
        tracker.log_artifact_dir(target)
        if output is None:
            set_current(target)
    seconds = float(model.metrics["train_seconds"])
    log_training_summary(engine, test, seconds, model_version=model.version, path=str(target))
    return TrainResult(engine=model, path=target, metrics=test, train_seconds=seconds, mlflow_run_id=tracker.run_id)


def fit(
    engine: str,
    dataset: Dataset,
    section: BaseModel,
    training: TrainingSettings,
    tracking_dir: Path,
    progress: Progress | None = None,
    callbacks: Sequence[Callback] = (),
    tracker: Tracker | None = None,
) -> Engine:
    """Train ``engine`` on the train split and keep the model that validates best; no test, nothing written.

    ``callbacks`` are extra Lightning callbacks, run after each epoch's validation (engines with a training task
    only). ``tracker``: log to this open run and leave it open; without one, a run of its own is opened and
    finished here.
    """
    cls = engine_class(engine)
    if callbacks and cls.training_task is None:
        raise ConfigError(f"engine {engine!r} is fitted in closed form: it runs no Lightning callbacks")
    started = time.perf_counter()
    run = nullcontext(tracker) if tracker is not None else tracked_run(training, tracking_dir, engine, dataset)
    with run as tracker:
        if cls.training_task is None:
            tracker.log_params(_params(section, training, dataset))
            model = _fit_closed_form(cls, dataset, section, training, progress, tracking_dir)
        else:
            model = _fit_task(
                cls.training_task, engine, dataset, section, training, tracking_dir, progress, callbacks, tracker
            )
        model.metrics["train_seconds"] = round(time.perf_counter() - started, 2)
        model.config["mlflow_run_id"] = tracker.run_id
        tracker.log_metrics(
            {k: v for k, v in model.metrics.items() if k in _SUMMARY_KEYS and v is not None},
            step=int(model.metrics["epochs_run"]),
        )
    return model


def refit(
    engine: str,
    dataset: Dataset,
    section: BaseModel,
    training: TrainingSettings,
    tracking_dir: Path,
    selected: Engine,
    progress: Progress | None = None,
) -> Engine:
    """Train ``engine`` again on every interaction of ``dataset`` (train, valid and test rows alike) with what
    selection chose for ``selected`` — its best epoch count, its λ, its sequence length — and no validation.

    The model to serve once held-out figures have picked the recipe: it has seen every user's newest items. Its
    metrics are ``selected``'s (the held-out figures; the refit has none of its own) plus a ``refit`` record;
    nothing is written here.
    """
    cls = engine_class(engine)
    if cls.learns_from_validation:
        raise ConfigError(
            f"engine {engine!r} learns from the validation targets: it cannot be refit on every interaction; "
            "train it again (recengine train) once its base engines are trained on the new data set"
        )
    everything = replace(dataset, split=np.zeros_like(dataset.split), manifest={**dataset.manifest}, path=None)
    everything.manifest["content_hash"] = None
    hyper = dict(selected.config.get("hyper_parameters") or {})
    pins: dict[str, Any] = {}
    fields = type(section).model_fields
    if "lambda" in hyper and "lambdas" in fields:
        pins["lambdas"] = [float(hyper["lambda"])]
    if "max_len" in hyper and "max_len" in fields:
        pins["max_len"] = int(hyper["max_len"])
    section = section.model_copy(update=pins)
    record: dict[str, Any] = {
        "on": "all",
        "n_interactions": dataset.n_interactions,
        "newest_timestamp": int(dataset.timestamp.max()) if dataset.n_interactions else None,
    }
    started = time.perf_counter()
    with tracked_run(training, tracking_dir, f"{engine}-refit", dataset) as tracker:
        tracker.log_params(_params(section, training, dataset, {"refit": record}))
        if cls.training_task is None:
            note = None if progress is None else (lambda message: progress(message, None, None))
            model = cls.fit(everything, section, progress=note)
            record["epochs"] = 1
        else:
            from recengine.training.trainer import build_trainer

            epochs = max(1, int(selected.metrics.get("best_epoch") or training.epochs))
            record["epochs"] = epochs
            engine_task = cast(EngineTask, importlib.import_module(cls.training_task))
            task = engine_task.build_task(everything, section, training.model_copy(update={"epochs": epochs}))
            # No validation callback, hence no early stopping: exactly the selected number of epochs.
            trainer = build_trainer(
                task.training, tracking_dir, progress=progress, tracker=tracker, run_name=f"{engine}-refit"
            )
            trainer.fit(task.module, datamodule=task.data)
            model = engine_task.from_trained(task.module, everything, section, task.training, {})
        if "lambdas" in pins:
            record["lambda"] = pins["lambdas"][0]
        record["train_seconds"] = round(time.perf_counter() - started, 2)
        record["note"] = (
            "trained on train + valid + test with the selected recipe; every held-out figure in this file is "
            "the selected model's, trained on the train split only"
        )
        model.config["dataset_hash"] = dataset.content_hash
        model.config["mlflow_run_id"] = tracker.run_id
        model.config["refit"] = {k: v for k, v in record.items() if k != "note"}
        model.metrics = {**selected.metrics, "refit": record}
        tracker.log_metrics({"refit_seconds": record["train_seconds"]})
    return model


@contextmanager
def tracked_run(training: TrainingSettings, tracking_dir: Path, engine: str, dataset: Dataset) -> Iterator[Tracker]:
    """An MLflow run that is always finished: FAILED when the body raises (interrupts included), else FINISHED.

    A :class:`NullTracker` on a rank other than zero of a distributed run: one run per training, not one per rank.
    """
    if not is_rank_zero():
        yield NullTracker()
        return
    tracker = Tracker.start(
        training,
        tracking_dir,
        run_name=f"{engine}-{dataset.content_hash}",
        tags={"engine": engine, "dataset_hash": dataset.content_hash},
    )
    try:
        yield tracker
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()


def _params(
    section: BaseModel, training: TrainingSettings, dataset: Dataset, extra: dict[str, Any] | None = None
) -> dict[str, str]:
    common = {
        "engine": section.model_dump(),
        "training": training.model_dump(),
        "dataset": {
            "hash": dataset.content_hash,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "n_interactions": dataset.n_interactions,
        },
    }
    return {**flatten(common), **flatten(extra or {})}


def _fit_closed_form(
    cls: type[Engine],
    dataset: Dataset,
    section: BaseModel,
    training: TrainingSettings,
    progress: Progress | None,
    artifacts_dir: Path | None = None,
) -> Engine:
    """One "epoch": the engine's own fit, then the validation every engine is reported on.

    ``artifacts_dir`` reaches the fit of an engine built on other engines' models (the ranker reads its base
    engines' CURRENT artifacts there); the others ignore it."""
    started = time.perf_counter()
    note = None if progress is None else (lambda message: progress(message, None, None))
    model = cls.fit(dataset, section, progress=note, artifacts_dir=artifacts_dir)
    valid = validation_metrics(model.score, dataset, max_users=training.valid_users)
    # An engine trained on the validation targets scores in-sample there: report its cross-validated estimate.
    held_out = model.metrics.get("cv_ndcg@10") if cls.learns_from_validation else valid.get(MONITOR)
    model.metrics = {
        **model.metrics,
        "best_epoch": 1,
        "epochs_run": 1,
        "valid_ndcg@10": held_out,
        "seconds_per_epoch": round(time.perf_counter() - started, 2),
        "valid_history": [{"epoch": 0.0, **valid}] if valid else [],
    }
    return model


def _fit_task(
    task_module: str,
    engine: str,
    dataset: Dataset,
    section: BaseModel,
    training: TrainingSettings,
    tracking_dir: Path,
    progress: Progress | None,
    callbacks: Sequence[Callback],
    tracker: Tracker,
) -> Engine:
    """Lightning: the engine's task, validated after every epoch, the best epoch's weights kept."""
    from recengine.training.trainer import RankingValidation, build_trainer

    engine_task = cast(EngineTask, importlib.import_module(task_module))
    task = engine_task.build_task(dataset, section, training)
    tracker.log_params(_params(section, task.training, dataset, task.params))
    validation = RankingValidation(dataset, max_users=task.training.valid_users)
    trainer = build_trainer(
        task.training,
        tracking_dir,
        callbacks=[validation, *callbacks],
        progress=progress,
        tracker=tracker,
        run_name=f"{engine}-{dataset.content_hash}",
    )
    if (trainer.global_rank == 0) != is_rank_zero():
        raise ConfigError(
            f"this process is rank {trainer.global_rank} to Lightning but was "
            f"{'' if is_rank_zero() else 'not '}taken for rank zero from the environment (RANK, LOCAL_RANK, NODE_RANK, "
            "SLURM_PROCID): start distributed training with Lightning's launcher, torchrun or srun"
        )
    if progress is not None and task.description:
        progress(task.description, 0, task.training.epochs)
    started = time.perf_counter()
    trainer.fit(task.module, datamodule=task.data)
    seconds = time.perf_counter() - started
    if trainer.world_size > 1:
        agree_on_weights(trainer, task.module)
    epochs_run = int(trainer.current_epoch)
    summary: dict[str, Any] = {
        "best_epoch": validation.best_epoch + 1,
        "valid_ndcg@10": validation.best_score,
        "epochs_run": epochs_run,
        "seconds_per_epoch": round(seconds / max(1, epochs_run), 2),
        "valid_history": validation.history,
    }
    return engine_task.from_trained(task.module, dataset, section, task.training, summary)
