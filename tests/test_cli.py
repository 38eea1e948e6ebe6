"""The command line as a user drives it: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from recengine.cli import app
from recengine.data.dataset import Dataset
from recengine.engines.artifact import current_dir

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    code, output = run("data", "synth", "-o", str(root / "data"), "--users", "200", "--items", "60", "--seed", "3")
    assert code == 0, output
    return root


def test_synth_writes_a_loadable_dataset(workspace: Path) -> None:
    ds = Dataset.load(workspace / "data")
    assert ds.n_users == 200
    assert ds.items.titles is not None and ds.items.categories is not None


def test_train_evaluate_and_models(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    code, output = run("train", "--engine", "popularity", "--data", "data")
    assert code == 0, output
    assert "ndcg@10" in output
    served = current_dir(workspace / "artifacts", "popularity")
    assert served is not None
    assert json.loads((served / "config.json").read_text())["version"] == served.name
    code, output = run("train", "--engine", "ease", "--data", "data", "-o", "models/ease")
    assert code == 0, output
    assert (workspace / "models/ease/weights.safetensors").is_file()
    metrics = json.loads((workspace / "models/ease/metrics.json").read_text())
    assert 0 <= metrics["test"]["ndcg@10"] <= 1

    code, output = run(
        "evaluate",
        "--model",
        "models/ease",
        "--data",
        "data",
        "--split",
        "valid",
        "--k",
        "5",
        "--k",
        "10",
        "--output",
        "out/m.json",
    )
    assert code == 0, output
    written = json.loads((workspace / "out/m.json").read_text())
    assert {"hr@5", "ndcg@5", "hr@10", "ndcg@10", "mrr@10", "coverage@10", "n_users", "dataset_hash"} <= set(written)
    assert written["split"] == "valid" and written["engine"] == "ease"

    code, output = run("models")
    assert code == 0, output
    assert "popularity" in output


def test_train_configures_logging_before_training(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recengine.observability import logging as rlog
    from recengine.training import run as training_run

    monkeypatch.chdir(workspace)
    order: list[str] = []
    configure, train = rlog.configure_logging, training_run.train

    def configure_first(*args: Any, **kwargs: Any) -> None:
        order.append("configure_logging")
        configure(*args, **kwargs)

    def then_train(*args: Any, **kwargs: Any) -> Any:
        order.append("train")
        return train(*args, **kwargs)

    monkeypatch.setattr(rlog, "configure_logging", configure_first)
    monkeypatch.setattr(training_run, "train", then_train)
    code, output = run("train", "--engine", "popularity", "--data", "data", "-o", "models/logged")
    assert code == 0, output
    assert order == ["configure_logging", "train"]


def test_evaluate_refuses_a_mismatched_vocabulary(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("data", "synth", "-o", "other", "--users", "50", "--items", "30", "--seed", "9")[0] == 0
    assert run("train", "--engine", "popularity", "--data", "other", "-o", "pop")[0] == 0
    code, output = run("evaluate", "--model", "pop", "--data", str(workspace / "data"))
    assert code == 2
    assert "vocabulary does not match" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--engine", "nope", "--data", "data"), "unknown engine 'nope'"),
        (("train", "--engine", "ease", "--data", "missing"), "not a processed data set"),
        (("evaluate", "--model", "missing", "--data", "data"), "missing config.json"),
        (("evaluate", "--model", "m", "--data", "data", "--split", "train"), "--split must be test or valid"),
        (("models", "--artifacts", "nowhere"), "no models in nowhere"),
        (("data", "prepare", "x.csv", "-o", "out", "--split", "bogus"), "split = 'bogus'"),
        (("data", "prepare", "x.csv", "-o", "out", "--on-invalid", "skip"), "on_invalid = 'skip'"),
    ],
)
def test_errors_are_one_line_without_traceback(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    monkeypatch.chdir(workspace)
    code, output = run(*args)
    assert code == 2
    assert message in output.replace("\n", " ")
    assert "Traceback" not in output


def test_bad_config_is_reported(workspace: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[engines.ease]\nmax_items = 1\n")
    code, output = run("config", "--config", str(bad))
    assert code == 2
    assert "engines.ease.max_items" in output and "Traceback" not in output
    good = tmp_path / "good.toml"
    good.write_text("[cache]\nttl_s = 7\n")
    code, output = run("config", "--config", str(good))
    assert code == 0
    assert json.loads(output)["cache"]["ttl_s"] == 7


def test_config_dump_redacts_secrets(tmp_path: Path) -> None:
    path = tmp_path / "secret.toml"
    path.write_text('[serving]\nadmin_api_key = "an-admin-key-1234"\n[cache]\nredis_url = "redis://:pw9876@r:1/0"\n')
    code, output = run("config", "--config", str(path))
    assert code == 0, output
    assert "an-admin-key-1234" not in output and "pw9876" not in output
    dumped = json.loads(output)
    assert dumped["serving"]["admin_api_key"] == "**********"
    assert dumped["cache"]["redis_url"] == "redis://:****@r:1/0"


def test_every_engine_trains_and_evaluates_under_the_temporal_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A global time cut-off: the test window's newcomers have no history. They are left out of every average and
    # counted; the sequence engines train, evaluate and save as under leave-one-out.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECENGINE_DATA__SPLIT", "temporal")
    monkeypatch.setenv("RECENGINE_TRAINING__TRACKING_URI", (tmp_path / "mlruns").as_uri())
    code, output = run("data", "synth", "-o", "data", "--users", "150", "--items", "60", "--seed", "5")
    assert code == 0, output
    _, histories, _ = Dataset.load(tmp_path / "data").eval_cases("test")
    newcomers = sum(len(h) == 0 for h in histories)
    assert newcomers > 0, "the fixture must have test users without a history"
    for engine in ("transformer", "neural", "popularity", "ease"):
        code, output = run("train", "--engine", engine, "--data", "data", "--epochs", "1")
        assert code == 0, f"{engine}: {output}"
        served = current_dir(tmp_path / "artifacts", engine)
        assert served is not None, engine
        test = json.loads((served / "metrics.json").read_text())["test"]
        assert test["n_users_without_history"] == newcomers, engine
        assert test["n_users"] == len(histories) - newcomers > 0, engine
        assert 0.0 <= test["ndcg@10"] <= 1.0


def test_training_prints_no_library_noise(workspace: Path, tmp_path: Path) -> None:
    # A fresh process, as a new user's first `make demo` runs it: warnings fire once per process.
    import os
    import subprocess
    import sys

    env = {**os.environ, "RECENGINE_TRAINING__TRACKING_URI": (tmp_path / "mlruns").as_uri()}
    args = ["train", "--engine", "transformer", "--data", str(workspace / "data"), "--epochs", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "recengine.cli", *args, "-o", str(tmp_path / "model")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for noise in ("GPU available", "TPU available", "Tip:", "litlogger", "LeafSpec", "`Trainer.fit` stopped"):
        assert noise not in output, f"{noise!r} in:\n{output}"
    assert "ndcg@10" in output  # the figures a user came for are still there


def test_retrain_refuses_the_ranker_it_cannot_refit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = run("retrain", "--engine", "ranker")
    assert code == 2, output
    assert "ranker learns from the validation targets and cannot be refit" in " ".join(output.split())


def test_retrain_all_leaves_the_ranker_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts" / "ranker" / "r1").mkdir(parents=True)
    (tmp_path / "artifacts" / "ranker" / "CURRENT").write_text("r1\n")
    monkeypatch.setenv("RECENGINE_SERVING__ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    code, output = run("retrain", "--all")
    assert code == 2, output
    assert "only ranker served" in output and "cannot be refit" in " ".join(output.split())
