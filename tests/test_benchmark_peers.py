"""benchmarks/peers/: the export the peers read, the list scorer, and the driver's resume and labelling, end to end
with the stand-in peer (fake_peer.py, popularity lists) under the current interpreter: no peer package, no venv."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "peers"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def driver() -> ModuleType:
    return _load("peers_run", PEERS / "run.py")


@pytest.fixture(scope="module")
def peerlib() -> ModuleType:
    sys.path.insert(0, str(PEERS))
    try:
        return _load("peerlib", PEERS / "peerlib.py")
    finally:
        sys.path.remove(str(PEERS))


def write_beauty(root: Path, n_users: int = 80, n_items: int = 30) -> dict[str, list[str]]:
    """A small Beauty-format file with a strong popularity skew (so popularity beats noise on validation)."""
    rng = random.Random(7)
    weights = [1.0 / (i + 1) ** 1.2 for i in range(n_items)]
    seqs: dict[str, list[str]] = {}
    for u in range(1, n_users + 1):
        n = rng.randint(5, 9)
        items: list[int] = []
        while len(items) < n:
            it = rng.choices(range(1, n_items + 1), weights)[0]
            if it not in items:
                items.append(it)
        seqs[f"u{u}"] = [f"i{i}" for i in items]
    (root / "amazon-beauty").mkdir(parents=True, exist_ok=True)
    text = "".join(f"{u} {' '.join(s)}\n" for u, s in seqs.items())
    (root / "amazon-beauty" / "Beauty.txt").write_text(text)
    return seqs


@pytest.fixture()
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    data = tmp_path / "bench"
    seqs = write_beauty(data)
    monkeypatch.setenv("RECENGINE_BENCH_DATA", str(data))
    monkeypatch.setenv("RECENGINE_PEERS_HOME", str(tmp_path / "home"))
    for var in ("FAKE_PEER_CRASH_AFTER", "FAKE_PEER_SLEEP", "FAKE_PEER_PEAK"):
        monkeypatch.delenv(var, raising=False)
    return {"seqs": seqs, "results": tmp_path / "results", "md": tmp_path / "peers.md", "home": tmp_path / "home"}


def run(driver: ModuleType, bench: dict[str, object], *extra: str) -> int:
    argv = ["--peer", "fake", "--dataset", "beauty", "--seed", "5", "--patience", "2", "--threads", "1"]
    argv += ["--results-dir", str(bench["results"]), "--markdown", str(bench["md"]), *extra]
    return int(driver.main(argv))


def result(bench: dict[str, object], name: str = "fake-beauty-seed5") -> dict[str, object]:
    return json.loads((Path(str(bench["results"])) / f"{name}.json").read_text())


# ---- the export ----------------------------------------------------------------------------------------------------
def test_the_export_holds_the_training_split_and_the_leave_one_out_cases(
    driver: ModuleType, peerlib: ModuleType, bench: dict[str, object]
) -> None:
    assert run(driver, bench, "--max-epochs", "1") == 0
    work = Path(str(bench["home"])) / "work" / "fake-beauty-seed5"
    export = peerlib.load_export(work)
    from quality import load_dataset

    ds = load_dataset("beauty")
    seqs: dict[str, list[str]] = bench["seqs"]  # type: ignore[assignment]
    user_ids = ds.users.decode(range(ds.n_users + 1))
    item_of = ds.items.ids.decode
    train = export.train
    assert len(train["user"]) == sum(len(s) - 2 for s in seqs.values())
    for u in np.unique(train["user"]):
        rows = train["user"] == u
        # Time order is the position column, 0, 1, … per user; the items are everything but the last two.
        assert list(train["position"][rows]) == list(range(int(rows.sum())))
        assert item_of(train["item"][rows]) == seqs[user_ids[u]][:-2]
    for split, cut in (("valid", -2), ("test", -1)):
        cases = export.cases[split]
        assert len(cases.users) == len(seqs)
        for u, h, t in zip(cases.users, cases.histories, cases.targets, strict=True):
            full = seqs[user_ids[u]]
            assert item_of(h) == full[:cut] and item_of(t) == [full[cut]]
    assert export.n_items == ds.n_items == len({i for s in seqs.values() for i in s})
    assert export.meta["dataset_hash"] == ds.content_hash


# ---- the list scorer -----------------------------------------------------------------------------------------------
def test_lists_score_from_the_targets_rank_with_a_miss_outside_the_list(driver: ModuleType) -> None:
    n_items = 40
    base = [i for i in range(1, n_items + 1) if i not in (1, 2)]  # items 1, 2 are each user's history
    hist = [np.array([1, 2])] * 4
    targets = [np.array([base[0]]), np.array([base[4]]), np.array([base[14]]), np.array([base[30]])]
    top = np.array([base[:25]] * 4)  # target ranks: 0, 4, 14, and outside the 25 listed (a miss)
    m = driver.score_lists(top, hist, targets, n_items)
    assert m["ranks"] == [0, 4, 14, -1]
    assert m["hr@10"] == pytest.approx(2 / 4)
    assert m["hr@20"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(16)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 5) / 4)
    assert m["coverage@10"] == pytest.approx(10 / n_items)
    assert m["n_users"] == 4


def test_lists_our_protocol_would_not_accept_are_refused(driver: ModuleType) -> None:
    hist, tgt = [np.array([1])], [np.array([3])]
    with pytest.raises(ValueError, match="history"):
        driver.score_lists(np.array([[1, 3, 4]]), hist, tgt, 10)
    with pytest.raises(ValueError, match="repeats"):
        driver.score_lists(np.array([[3, 3, 4]]), hist, tgt, 10)
    with pytest.raises(ValueError, match="outside"):
        driver.score_lists(np.array([[3, 11]]), hist, tgt, 10)
    with pytest.raises(ValueError, match="padding"):
        driver.score_lists(np.array([[0, 3]]), hist, tgt, 10)
    # Padding after the last item is a short list, not an error.
    assert driver.score_lists(np.array([[3, 0, 0]]), hist, tgt, 10)["hr@10"] == 1.0


def test_peer_side_top_lists_exclude_history_and_rank_best_first(peerlib: ModuleType) -> None:
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 2.0], [9.0, 1.0, 2.0, 3.0, 4.0]])
    top = peerlib.top_k_from_scores(scores, [np.array([1]), np.array([4, 3])], k=4)
    assert top.tolist() == [[2, 3, 4, 0], [2, 1, 0, 0]]
    assert peerlib.ndcg_at(top, [np.array([3]), np.array([7])], 10) == pytest.approx(1 / math.log2(3) / 2)


# ---- the driver: caps, labels, resume --------------------------------------------------------------------------------
def test_a_capped_run_is_a_lower_bound_and_resume_carries_it_to_early_stopping(
    driver: ModuleType, bench: dict[str, object]
) -> None:
    assert run(driver, bench, "--max-epochs", "2") == 0
    capped = result(bench)
    assert capped["status"] == "capped: lower bound (--max-epochs 2)" and capped["stop_reason"] == "max_epochs"
    assert [c["epoch"] for c in capped["curve"]] == [1, 2]
    md = Path(str(bench["md"])).read_text()
    assert "capped: lower bound (--max-epochs 2)" in md and "- commit:" in md

    assert run(driver, bench, "--resume") == 0
    done = result(bench)
    assert done["status"] == "converged (early stopping, patience 2)"
    # The curve continues the capped one (its first two epochs are the same records), the peak epoch (3, plain
    # popularity) wins on validation, and training stopped two epochs after it.
    assert done["curve"][:2] == capped["curve"]
    assert [c["epoch"] for c in done["curve"]] == [1, 2, 3, 4, 5]
    assert done["curve_summary"]["best_epoch"] == 3
    pids = [c["pid"] for c in done["curve"]]
    assert pids[0] == pids[1] != pids[2] == pids[3]
    assert {c["commit"] for c in done["curve"]} == {done["commit"]}  # each epoch names the checkout that ran it
    # Scored by our evaluator: the test figures are those of the best epoch's lists.
    assert 0 < done["test"]["ndcg@10"] <= done["test"]["hr@10"] <= done["test"]["hr@20"] <= 1
    assert len(done["test_ranks"]) == done["test"]["n_users"] == 80


def test_an_interrupted_run_resumes_after_its_last_recorded_epoch(
    driver: ModuleType, bench: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PEER_CRASH_AFTER", "2")
    assert run(driver, bench) == 3  # the peer's exit status comes back; nothing is scored
    assert not (Path(str(bench["results"])) / "fake-beauty-seed5.json").exists()
    monkeypatch.delenv("FAKE_PEER_CRASH_AFTER")
    assert run(driver, bench, "--resume") == 0
    done = result(bench)
    assert [c["epoch"] for c in done["curve"]] == [1, 2, 3, 4, 5]
    pids = [c["pid"] for c in done["curve"]]
    assert len(set(pids[:2])) == 1 and pids[2] != pids[1]
    # A run started without --resume starts over, in one process.
    assert run(driver, bench) == 0
    assert len({c["pid"] for c in result(bench)["curve"]}) == 1


def test_a_time_cap_and_a_smoke_run_are_labelled_so(
    driver: ModuleType, bench: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PEER_SLEEP", "0.5")
    assert run(driver, bench, "--max-hours", "0.0004", "--smoke") == 0  # 1.44 s: three epochs of 0.5 s
    smoke = result(bench, "fake-beauty-seed5-smoke")
    assert smoke["smoke"] is True and smoke["stop_reason"] == "max_hours"
    assert smoke["status"] == "smoke run (path check, not a result); capped: lower bound (--max-hours 0.0004)"
    assert len(smoke["curve"]) == 3
    md = Path(str(bench["md"])).read_text()
    table, smoke_section = md.split("## Smoke runs", 1)
    assert "fake-beauty-seed5-smoke" not in table.split("## Validation curves")[0]
    assert "| beauty | fake | 5 | smoke run" in smoke_section


def test_status_names_the_cap_or_refuses_an_unknown_stop(driver: ModuleType) -> None:
    args = driver.parse_args(["--peer", "fake", "--dataset", "beauty", "--max-hours", "3", "--patience", "7"])
    assert driver.status_of({"stop_reason": "max_hours"}, args) == "capped: lower bound (--max-hours 3.0)"
    assert driver.status_of({"stop_reason": "early_stopped"}, args) == "converged (early stopping, patience 7)"
    with pytest.raises(ValueError):
        driver.status_of({}, args)


def test_a_ready_peer_environment_is_reused_without_installing(driver: ModuleType, tmp_path: Path) -> None:
    venv = tmp_path / "rectools"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / ".recengine-peer.json").write_text(json.dumps({"torch": driver.TORCH_PIN, "pins": driver.PINS["rectools"]}))
    # A base interpreter that does not exist: creating or installing anything would fail.
    assert driver.ensure_venv("rectools", venv, base_python=str(tmp_path / "none")) == venv / "bin" / "python"
    assert os.path.isfile(venv / "bin" / "python")


def test_peer_scripts_import_their_library_numpy_and_pandas_only() -> None:
    import ast

    allowed = {
        "peerlib.py": {"numpy"},
        "fake_peer.py": {"numpy", "peerlib"},
        "rectools_peer.py": {"numpy", "pandas", "torch", "pytorch_lightning", "rectools", "peerlib"},
        "recbole_peer.py": {"numpy", "torch", "recbole", "peerlib"},
    }
    for name, libraries in allowed.items():
        tree = ast.parse((PEERS / name).read_text())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
        third_party = found - set(sys.stdlib_module_names)
        assert third_party == libraries, (name, third_party)
