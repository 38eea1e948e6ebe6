"""The evaluation report: every section, every plot drawn, from a tiny trained set; and the CLI front ends."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recengine.cli import app
from recengine.data.dataset import Dataset
from recengine.evaluation import PerUser, evaluate
from recengine.report import compare_runs, evaluate_model, label_runs, render_report
from recengine.report.analysis import by_history_length, dataset_statistics, popularity_bias
from tests.engines.conftest import fitted_engine

SECTIONS = ("summary", "accuracy", "history-length", "popularity", "training", "dataset")


@pytest.fixture(scope="module")
def models(small_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Popularity, EASE and a one-epoch transformer on the small data set, saved as artifacts."""
    root = tmp_path_factory.mktemp("report-models")
    out = {}
    for name in ("popularity", "ease", "transformer"):
        engine = fitted_engine(name, small_dataset, root / "mlruns")
        out[name] = engine.save(root / name)
    return out


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, flags=re.S)


def section(html: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', html, flags=re.S)
    assert found, f"section {name!r} missing"
    return found.group(1)


def assert_self_contained(html: str) -> None:
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must not load anything"
    assert "<link" not in html


def test_per_user_figures_average_to_the_reported_ones(small_dataset: Dataset, models: dict[str, Path]) -> None:
    from recengine.engines import load_engine

    engine = load_engine(models["ease"])
    plain = evaluate(engine.score, small_dataset, ks=(5, 10, 20))
    detailed = evaluate(engine.score, small_dataset, ks=(5, 10, 20), per_user=True)
    per_user = detailed.pop("per_user")
    assert detailed == plain  # the flat figures do not change
    assert isinstance(per_user, PerUser)
    assert per_user.users.shape == (plain["n_users"],)
    for key in ("hr@10", "ndcg@10", "mrr@20", "recall@5"):
        assert per_user.metrics[key].mean() == pytest.approx(plain[key], abs=1e-6)
    assert per_user.recommended_k == 10
    assert per_user.recommended[0] == 0
    _, histories, _ = small_dataset.eval_cases("test")
    histories = [h for h in histories if len(h)]
    assert per_user.history_length.tolist() == [len(h) for h in histories]
    # Every top-10 slot holds an item, except where fewer than 10 items are left outside the history.
    free = [min(10, small_dataset.n_items - len(np.unique(h))) for h in histories]
    assert per_user.recommended.sum() == sum(free)


def test_report_has_every_section_and_every_plot_drawn(small_dataset: Dataset, models: dict[str, Path]) -> None:
    runs = [evaluate_model(path, small_dataset) for path in models.values()]
    label_runs(runs)
    html = render_report(runs, small_dataset, comparisons=compare_runs(runs))
    assert_self_contained(html)
    for name in (*SECTIONS, "comparison"):
        body = section(html, name)
        if name not in ("summary",):
            assert svgs(body), f"section {name!r} has no plot"
    plots = svgs(html)
    # HR, NDCG, coverage, buckets, deciles, training, lengths, tail, differences
    assert len(plots) == 9
    for svg in plots:
        assert "<path" in svg, svg[:200]
        # Drawn data, not just axes: a line, bars (patches past the background) or markers.
        assert re.search(r'id="[^"]*(line2d|patch_3|PathCollection)', svg), svg[:300]
    for label in ("popularity", "ease", "transformer"):
        assert label in section(html, "summary")
        assert label in section(html, "training")
    # The training section draws each engine's validation history; the transformer's one epoch is a point.
    assert "Validation NDCG@10 per epoch" in section(html, "training")
    assert "no clear difference" in html or "better" in html
    assert str(small_dataset.n_users) in section(html, "dataset")


def test_history_buckets_and_popularity_bias_are_consistent(small_dataset: Dataset, models: dict[str, Path]) -> None:
    runs = [evaluate_model(models[n], small_dataset) for n in ("popularity", "ease")]
    buckets = by_history_length(runs)
    assert sum(b.n_users for b in buckets) == runs[0].metrics["n_users"]
    weighted = sum(b.n_users * b.mean["ease"] for b in buckets) / runs[0].metrics["n_users"]
    assert weighted == pytest.approx(runs[1].metrics["ndcg@10"], abs=1e-6)
    pop = popularity_bias(runs[0], small_dataset)
    ease = popularity_bias(runs[1], small_dataset)
    assert sum(pop.decile_share) == pytest.approx(1.0)
    # Popularity recommends the most popular items: its slots go to the top decile and it covers less.
    assert pop.decile_share[0] > ease.decile_share[0]
    assert pop.coverage[10] < ease.coverage[10]
    assert pop.gini > ease.gini
    stats = dataset_statistics(small_dataset)
    assert 0.2 <= stats["share_of_interactions_top20pct_items"] <= 1.0


def test_evaluate_report_and_compare_from_the_command_line(
    small_dataset: Dataset, models: dict[str, Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    report = tmp_path / "out" / "report.html"
    metrics = tmp_path / "m.json"
    result = runner.invoke(
        app,
        ["evaluate", "--model", str(models["ease"]), "--data", str(small_dataset.path), "--report", str(report),
         "--output", str(metrics), "--k", "10"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    html = report.read_text()
    assert_self_contained(html)
    for name in SECTIONS:
        section(html, name)
    assert 'id="comparison"' not in html
    import json

    written = json.loads(metrics.read_text())
    assert "hr@10" in written and "hr@20" not in written and "hr@1" not in written  # as asked, not the report's Ks

    out = tmp_path / "compare.html"
    args = ["compare", str(models["popularity"]), str(models["transformer"]), "--data", str(small_dataset.path)]
    result = runner.invoke(app, [*args, "--report", str(out)])
    assert result.exit_code == 0, result.output
    assert "popularity" in result.output and "95% CI" in result.output
    html = out.read_text()
    assert svgs(section(html, "comparison"))

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(
        app, [*args, "--report", str(blocker / "sub" / "r.html")]
    )  # a folder that cannot be made: one line, exit 2
    assert result.exit_code == 2 and "cannot write the report" in result.output

    result = runner.invoke(app, ["compare", str(models["popularity"]), "--data", str(small_dataset.path)])
    assert result.exit_code == 2 and "at least two" in result.output
    result = runner.invoke(
        app, ["compare", str(models["popularity"]), str(tmp_path / "nope"), "--data", str(small_dataset.path)]
    )
    assert result.exit_code == 2 and "config.json" in result.output


def test_paired_bootstrap_excludes_zero_when_one_model_is_always_better() -> None:
    from recengine.report.stats import paired_bootstrap

    rng = np.random.default_rng(3)
    b = rng.uniform(0, 0.5, size=400)
    a = b + rng.uniform(0.01, 0.05, size=400)  # A better for every user, by a little
    diff = paired_bootstrap(a, b, names=("A", "B"))
    assert diff.ci_low > 0 and diff.ci_high > diff.ci_low
    assert diff.ci_low <= diff.mean_diff <= diff.ci_high
    assert diff.verdict == "A better" and diff.p_not_better == 0.0
    swapped = paired_bootstrap(b, a, names=("B", "A"))
    assert swapped.ci_high < 0 and swapped.verdict == "A better"


def test_paired_bootstrap_contains_zero_for_identical_or_balanced_models() -> None:
    from recengine.report.stats import paired_bootstrap

    a = np.random.default_rng(4).uniform(0, 1, size=300)
    same = paired_bootstrap(a, a.copy())
    assert same.ci_low == same.ci_high == same.mean_diff == 0.0
    assert same.verdict == "no clear difference"
    # Each user's difference is ±0.1, half each way: a mean of exactly zero with real spread.
    b = a + np.where(np.arange(300) % 2 == 0, 0.1, -0.1)
    balanced = paired_bootstrap(a, b)
    assert balanced.ci_low < 0 < balanced.ci_high
    assert balanced.verdict == "no clear difference"
    with pytest.raises(ValueError, match="differ in size"):
        paired_bootstrap(a, a[:10])
