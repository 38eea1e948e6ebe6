"""``recengine train`` under DDP, for real: two CPU processes over gloo, started by Lightning's own launcher (the
transformer) and by torchrun (the neural engine). One MLflow run, one artifact, one ``CURRENT`` move, and the same
weights on both ranks at the end."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import recengine
from recengine.data.dataset import Dataset

pytestmark = pytest.mark.ddp

LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
"""What launchers tell a rank: none may leak from the test's own environment into the ranks it starts."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow 3 opens a file store only when asked to (the training run asks for itself, see tracking.py).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


CONFIG = """
[serving]
artifacts_dir = "{artifacts}"

[training]
tracking_uri = "{tracking}"
valid_users = 100
lr_schedule = "cosine"
batch_size = 16

[engines.transformer]
max_len = 20
d_model = 16
n_layers = 1
n_heads = 2
batch_size = 16
warmup_steps = 0

[engines.neural]
max_len = 20
d_model = 16
"""


def ddp_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("RECENGINE_")}
    src = str(Path(recengine.__file__).parents[1])  # the ranks import this checkout, as the test does
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        RECENGINE_TRAINING__STRATEGY="ddp",
        RECENGINE_TRAINING__DEVICES="2",
        RECENGINE_TRAINING__ACCELERATOR="cpu",
        RECENGINE_TRAINING__NUM_THREADS="1",
        RECENGINE_OBSERVABILITY__LOG_FORMAT="json",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )
    return env


def train(launcher: list[str], engine: str, data: Path, tmp: Path) -> tuple[list[dict[str, Any]], Path, str]:
    """Run ``recengine train`` under ``launcher``; its JSON log events, artifacts folder and tracking URI."""
    artifacts, tracking = tmp / "models", (tmp / "mlruns").as_uri()
    config = tmp / "recengine.toml"
    config.write_text(CONFIG.format(artifacts=artifacts, tracking=tracking))
    command = [*launcher, "-m", "recengine.cli", "train", "--engine", engine, "--data", str(data), "--epochs", "2"]
    command += ["--config", str(config)]
    done = subprocess.run(command, env=ddp_env(tmp), cwd=tmp, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # Under Lightning's launcher the exit status is rank zero's: a rank that failed after it would show here.
    assert "Traceback" not in output, output[-6000:]
    events = []
    for line in output.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):  # other output may start with a brace too
                events.append(json.loads(line))
    return events, artifacts, tracking


def assert_trained_once(events: list[dict[str, Any]], artifacts: Path, tracking: str, engine: str) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["engine"] == engine
    assert any(k.startswith("test/") for k in runs[0].data.metrics)
    versions = [p.name for p in (artifacts / engine).iterdir() if p.is_dir()]
    assert len(versions) == 1, versions
    assert (artifacts / engine / "CURRENT").read_text().strip() == versions[0]
    assert sorted(p.name for p in (artifacts / engine).iterdir()) == sorted(["CURRENT", versions[0]])
    assert [e["model_version"] for e in events if e.get("event") == "training finished"] == versions

    trained = {e["rank"]: e for e in events if e.get("event") == "weights trained"}
    assert sorted(trained) == [0, 1] and {e["world_size"] for e in trained.values()} == {2}
    assert trained[0]["weights_sha256"] == trained[1]["weights_sha256"]
    return runs[0]


def test_lightnings_launcher_trains_the_transformer_once_on_two_ranks(small_dataset: Dataset, tmp_path: Path) -> None:
    assert small_dataset.path is not None
    events, artifacts, tracking = train([sys.executable], "transformer", small_dataset.path, tmp_path)
    mlflow_run = assert_trained_once(events, artifacts, tracking, "transformer")
    # The cosine schedule ends at zero after this rank's steps: each rank steps through half of the batches.
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=tracking).get_metric_history(mlflow_run.info.run_id, "lr")
    lr = sorted(history, key=lambda m: m.step)
    assert [m.step for m in lr] == [0, 1]
    assert lr[0].value > 0 and lr[-1].value < 1e-9


def test_torchrun_trains_the_neural_engine_once_on_two_ranks(small_dataset: Dataset, tmp_path: Path) -> None:
    assert small_dataset.path is not None
    port = free_port()
    # torchrun fails when any rank does: a zero exit means both ranks finished cleanly.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
    events, artifacts, tracking = train(torchrun, "neural", small_dataset.path, tmp_path)
    assert_trained_once(events, artifacts, tracking, "neural")
