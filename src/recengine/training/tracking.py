"""Experiment tracking with MLflow: one run per ``recengine train``, readable offline.

    tracker = Tracker.start(training, tracking_dir, run_name="transformer")
    tracker.log_params({...}); tracker.log_metrics({"train/loss": 7.1}, step=epoch)
    tracker.finish()                       # training done; the run stays addressable by id
    tracker.log_metrics(test_metrics)      # later: final test figures go to the same run
    tracker.log_artifact_dir(model_dir)    # and the exported artifact

The default store is a local folder, ``<artifacts_dir>/mlruns`` (``./mlruns`` beside a folder named ``artifacts``,
see :func:`tracking_uri`; browse it with ``mlflow ui --backend-store-uri``);
``training.tracking_uri`` (env ``RECENGINE_TRAINING__TRACKING_URI``) points it at an MLflow server instead.
Under distributed training only rank zero opens a run; the other ranks get a :class:`NullTracker`.
The client API is used rather than ``mlflow.start_run`` so that no process-global "active run" leaks between
trainings (tests and the benchmark train several models in one process).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recengine.settings import TrainingSettings

_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_name(name: str) -> str:
    """MLflow names allow only ``[A-Za-z0-9_-. :/]``: ``valid/ndcg@10`` → ``valid/ndcg_at_10``."""
    return _BAD_CHARS.sub("_", name.replace("@", "_at_"))


def tracking_uri(training: TrainingSettings, tracking_dir: Path) -> str:
    """The configured MLflow URI, else a file store ``mlruns`` in ``tracking_dir``.

    MLflow's file store refuses any run below a folder named ``artifacts`` (a guard against path traversal through
    its own artifact folders), and ``artifacts`` is the default artifacts folder: the store then goes next to the
    outermost such folder instead of inside it.
    """
    if training.tracking_uri:
        return training.tracking_uri
    base = Path(tracking_dir).resolve()
    if "artifacts" in base.parts:
        base = Path(*base.parts[: base.parts.index("artifacts")])
    return (base / "mlruns").as_uri()


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings → ``{"section.key": "value"}`` strings, as MLflow params want."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:500]  # MLflow refuses longer param values
    return out


class Tracker:
    """One MLflow run. Every method is safe to call after :meth:`finish` (it logs to the finished run)."""

    def __init__(self, client: Any, run_id: str, uri: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id
        self._finished = False

    @classmethod
    def start(
        cls,
        training: TrainingSettings,
        tracking_dir: Path,
        run_name: str,
        tags: Mapping[str, str] | None = None,
    ) -> Tracker:
        uri = tracking_uri(training, tracking_dir)
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode behind this switch; it is the one store that needs
            # no server and no database, which is what an offline default must be.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            Path(uri.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(training.experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(training.experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        return cls(client, run.info.run_id, uri, experiment_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in sorted(flat.items())]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Numeric entries only; names are made MLflow-safe (see :func:`metric_name`)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_name(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact_dir(self, path: Path, artifact_path: str = "model") -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if not self._finished:
            self.client.set_terminated(self.run_id, status=status)
            self._finished = True

    def run_dir(self) -> Path | None:
        """The run's folder for a local file store (None for a server)."""
        if not self.uri.startswith("file:"):
            return None
        return Path(self.uri.removeprefix("file://")) / self.experiment_id / self.run_id


class NullTracker(Tracker):
    """The tracker of a rank other than zero in distributed training: it records nothing (rank zero's run does)."""

    def __init__(self) -> None:
        super().__init__(client=None, run_id="", uri="", experiment_id="")

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact_dir(self, path: Path, artifact_path: str = "model") -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def run_dir(self) -> Path | None:
        return None
