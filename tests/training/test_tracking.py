"""The MLflow tracking helper against a real local file store."""

from __future__ import annotations

from pathlib import Path

from recengine.settings import TrainingSettings
from recengine.training.tracking import Tracker, flatten, metric_name, tracking_uri


def test_metric_names_are_made_mlflow_safe() -> None:
    assert metric_name("valid/ndcg@10") == "valid/ndcg_at_10"
    assert metric_name("a[b]=c") == "a_b__c"


def test_flatten_nested_params() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": "x" * 600}) == {
        "a.b": "1",
        "a.c.d": "None",
        "e": "x" * 500,
    }


def test_default_store_is_under_the_tracking_dir(tmp_path: Path) -> None:
    assert tracking_uri(TrainingSettings(), tmp_path) == (tmp_path / "mlruns").resolve().as_uri()
    assert tracking_uri(TrainingSettings(tracking_uri="http://mlflow:5000"), tmp_path) == "http://mlflow:5000"


def test_run_records_params_metrics_and_artifacts(tmp_path: Path) -> None:
    tracker = Tracker.start(TrainingSettings(experiment="t"), tmp_path, run_name="r", tags={"dataset_hash": "abc"})
    tracker.log_params({"training": {"lr": 0.5}})
    tracker.log_metrics({"train/loss": 2.0, "valid/ndcg@10": 0.1, "note": "text", "flag": True}, step=0)
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    tracker.finish()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    tracker.log_metrics({"test/hr@10": 0.3})  # after finish: still the same run
    tracker.log_artifact_dir(model)

    run = tracker.run_dir()
    assert run is not None and run.is_relative_to(tmp_path / "mlruns")
    assert (run / "params" / "training.lr").read_text() == "0.5"
    assert [line.split()[1:] for line in (run / "metrics" / "train" / "loss").read_text().splitlines()] == [
        ["2.0", "0"],
        ["1.0", "1"],
    ]
    assert (run / "metrics" / "valid" / "ndcg_at_10").is_file()
    assert (run / "metrics" / "test" / "hr_at_10").is_file()
    assert not (run / "metrics" / "note").exists() and not (run / "metrics" / "flag").exists()
    assert (run / "tags" / "dataset_hash").read_text() == "abc"
    assert (run / "artifacts" / "model" / "config.json").is_file()
    assert "status: 3" in (run / "meta.yaml").read_text()  # FINISHED


def test_second_run_reuses_the_experiment(tmp_path: Path) -> None:
    a = Tracker.start(TrainingSettings(), tmp_path, run_name="a")
    b = Tracker.start(TrainingSettings(), tmp_path, run_name="b")
    assert a.experiment_id == b.experiment_id and a.run_id != b.run_id


def test_store_is_never_below_a_folder_named_artifacts(tmp_path: Path) -> None:
    # MLflow's file store does not find runs below a folder named "artifacts", the CLI's default artifacts folder.
    uri = tracking_uri(TrainingSettings(), tmp_path / "artifacts" / "x")
    assert uri == (tmp_path / "mlruns").resolve().as_uri()
    tracker = Tracker.start(TrainingSettings(), tmp_path / "artifacts", run_name="r")
    tracker.log_metrics({"m": 1.0})
    tracker.finish()
    run = tracker.run_dir()
    assert run is not None and (run / "metrics" / "m").is_file()
