"""Evaluation reports: one self-contained HTML file of an engine's (or several engines') offline figures.

    runs = [evaluate_model(path, dataset) for path in model_dirs]     # analysis.py: the numbers
    label_runs(runs)
    html = render_report(runs, dataset, comparisons=compare_runs(runs))  # render.py + figures.py: the page

``recengine evaluate --report`` and ``recengine compare`` are the command-line front ends (``cli.py``).
"""

from recengine.report.analysis import ModelRun, evaluate_model, label_runs, run_scorer
from recengine.report.render import compare_runs, render_report
from recengine.report.stats import PairedDifference, paired_bootstrap

__all__ = [
    "ModelRun",
    "PairedDifference",
    "compare_runs",
    "evaluate_model",
    "label_runs",
    "paired_bootstrap",
    "render_report",
    "run_scorer",
]
