"""One self-contained HTML file from evaluated runs: the figures inline as SVG, the styles inline, no script.

html = render_report(runs, dataset)                       # recengine evaluate … --report
html = render_report(runs, dataset, comparisons=pairs)    # recengine compare …
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from recengine import __version__
from recengine.data.dataset import Dataset
from recengine.report import figures
from recengine.report.analysis import (
    HEADLINE_K,
    ModelRun,
    by_history_length,
    curves,
    dataset_statistics,
    interaction_decile_share,
    item_frequencies,
    ks_of,
    popularity_bias,
    sequence_lengths,
    training_curves,
    training_summary,
)
from recengine.report.stats import PairedDifference, paired_bootstrap

SUMMARY_COLUMNS = ("hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "coverage@10", "popularity@10")


def environment() -> Environment:
    return Environment(
        loader=PackageLoader("recengine.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def compare_runs(runs: Sequence[ModelRun], metric: str = f"ndcg@{HEADLINE_K}", seed: int = 0) -> list[PairedDifference]:
    """Every pair of runs (in the given order, A before B), their per-user ``metric`` bootstrapped."""
    out = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if not (a.per_user.users.shape == b.per_user.users.shape and (a.per_user.users == b.per_user.users).all()):
                raise ValueError(f"{a.label} and {b.label} were not evaluated on the same users")
            out.append(
                paired_bootstrap(
                    a.per_user.metrics[metric], b.per_user.metrics[metric], names=(a.label, b.label), metric=metric,
                    seed=seed,
                )
            )  # fmt: skip
    return out


def render_report(
    runs: Sequence[ModelRun],
    dataset: Dataset,
    comparisons: Sequence[PairedDifference] | None = None,
    title: str | None = None,
) -> str:
    """The report as an HTML string."""
    if not runs:
        raise ValueError("a report needs at least one evaluated model")
    labels = [r.label for r in runs]
    split = runs[0].split
    svg = Markup  # every figure is markup we drew; everything else is escaped by the template

    accuracy = [curves(r) for r in runs]
    hr_plot = figures.line_plot(
        {r.label: (c["k"], c["hr"]) for r, c in zip(runs, accuracy, strict=True)},
        title=f"HR@K on the {split} split", xlabel="K", ylabel="HR@K",
    )  # fmt: skip
    ndcg_plot = figures.line_plot(
        {r.label: (c["k"], c["ndcg"]) for r, c in zip(runs, accuracy, strict=True)},
        title=f"NDCG@K on the {split} split", xlabel="K", ylabel="NDCG@K",
    )  # fmt: skip
    coverage = {
        r.label: (c["k"], [r.metrics[f"coverage@{int(k)}"] for k in c["k"]])
        for r, c in zip(runs, accuracy, strict=True)
    }
    coverage_plot = figures.line_plot(
        coverage,
        title="Catalogue coverage@K", xlabel="K", ylabel="share of items recommended to someone",
    )  # fmt: skip

    buckets = by_history_length(runs)
    bucket_plot = figures.bucket_plot(
        buckets, labels, title=f"NDCG@{HEADLINE_K} by history length", ylabel=f"mean NDCG@{HEADLINE_K} (95 % CI)"
    )

    bias = [popularity_bias(r, dataset) for r in runs]
    shares = {"training interactions": interaction_decile_share(dataset)}
    shares.update({r.label: b.decile_share for r, b in zip(runs, bias, strict=True)})
    decile_plot = figures.decile_plot(shares, title=f"Where the top-{bias[0].k} slots go, by item popularity")

    training = [training_curves(r) for r in runs]
    trained = {r.label: t for r, t in zip(runs, training, strict=True) if t and "valid/ndcg@10" in t}
    training_plot = (
        figures.line_plot(
            {label: (t["epoch"], t["valid/ndcg@10"]) for label, t in trained.items()},
            title="Validation NDCG@10 per epoch",
            xlabel="epoch",
            ylabel="NDCG@10 (valid)",
            markers=True,
        )
        if trained
        else None
    )

    stats = dataset_statistics(dataset)
    length_plot = figures.histogram(
        sequence_lengths(dataset), title="Interactions per user", xlabel="interactions (log scale)"
    )
    tail_plot = figures.rank_frequency(item_frequencies(dataset), title="The long tail: interactions per item")

    diff_plot = None
    if comparisons:
        diff_plot = figures.difference_plot(
            [(f"{c.a} − {c.b}", c.mean_diff, c.ci_low, c.ci_high) for c in comparisons],
            title=f"Paired differences of per-user {comparisons[0].metric} (95 % bootstrap CI)",
            xlabel=f"mean difference in {comparisons[0].metric}",
        )

    context: dict[str, Any] = {
        "title": title or ("Model comparison" if comparisons else f"Evaluation of {runs[0].label}"),
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "version": __version__,
        "split": split,
        "runs": runs,
        "summary_columns": [c for c in SUMMARY_COLUMNS if all(c in r.metrics for r in runs)],
        "max_k": max(max(ks_of(r)) for r in runs),
        "headline_k": HEADLINE_K,
        "buckets": buckets,
        "labels": labels,
        "bias": list(zip(runs, bias, strict=True)),
        "bias_ks": sorted(bias[0].coverage),
        "training": [(r, training_summary(r), bool(t)) for r, t in zip(runs, training, strict=True)],
        "stats": stats,
        "comparisons": list(comparisons or ()),
        "plots": {
            "hr": svg(hr_plot),
            "ndcg": svg(ndcg_plot),
            "coverage": svg(coverage_plot),
            "buckets": svg(bucket_plot),
            "deciles": svg(decile_plot),
            "training": svg(training_plot) if training_plot else None,
            "lengths": svg(length_plot),
            "tail": svg(tail_plot),
            "differences": svg(diff_plot) if diff_plot else None,
        },
    }
    return environment().get_template("report.html.j2").render(**context)
