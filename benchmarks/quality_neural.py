"""Cold-start items for the neural two-tower engine on MovieLens-100K, with the engine's committed defaults.

    .venv/bin/python benchmarks/quality_neural.py [--write benchmarks/results/neural.md]

10 % of the items are hidden from training (their metadata kept, their interactions removed); the model embeds them
from titles and genres alone. For every user who interacted with a hidden item, the user's other interactions are
the history and the hidden items are ranked: Recall@20 among the hidden items, against a popularity-within-genre
baseline. The engine's ordinary quality rows (leave-one-out, both data sets) come from ``benchmarks/quality.py``
and are repeated in the markdown from ``results/quality.json``, so the figures of one run appear in both places.

Settings are ``load_settings(None)``: the committed defaults, plus ``RECENGINE_*`` environment overrides for
experiments (the command line is recorded). Data are read from ``$RECENGINE_BENCH_DATA`` and never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import provenance_lines, write_report
from quality import load_dataset
from recengine.engines.neural.coldstart import evaluate_cold_start
from recengine.settings import load_settings

RESULTS = Path(__file__).parent / "results"


def cold_start(fraction: float = 0.1, seed: int = 0, k: int = 20) -> dict[str, Any]:
    settings = load_settings(None)
    dataset = load_dataset("ml-100k")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate_cold_start(
            dataset,
            settings.engines.neural,
            settings.training,
            tracking_dir=Path(tmp),
            fraction=fraction,
            seed=seed,
            k=k,
        )
    return {**result, "seconds": round(time.perf_counter() - started, 1)}


def write_markdown(cold: dict[str, Any], command: str, out: Path) -> None:
    quality = RESULTS / "quality.json"
    stored = json.loads(quality.read_text()) if quality.is_file() else []
    rows = [r for r in stored if r["engine"] in ("popularity", "neural")]
    lines = [
        "# Neural two-tower engine",
        "",
        *provenance_lines(command),
        "- configuration: the committed defaults (`NeuralSettings()`, `TrainingSettings()`)",
        "",
        "## Leave-one-out quality (from `benchmarks/results/quality.json`, written by `benchmarks/quality.py`)",
        "",
        "| data set | engine | HR@10 | NDCG@10 | HR@20 | NDCG@20 | s/epoch | epochs (best) | fit s | peak RSS GB"
        " | run | commit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        t = r.get("training", {})
        epochs = ""
        if r["engine"] == "neural" and "epochs_run" in t:
            epochs = f"{t['epochs_run']} ({t['best_epoch']})"
        elif "epochs" in t:  # rows written before the one metrics schema: best_epoch was 0-based
            epochs = f"{t['epochs']} ({t['best_epoch'] + 1})"
        lines.append(
            f"| {r['dataset']} | {r['engine']} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} | {r['hr@20']:.4f} | "
            f"{r['ndcg@20']:.4f} | {t.get('seconds_per_epoch', '')} | {epochs} | {r['fit_s']:.1f} | "
            f"{r['peak_rss_gb']:.2f} | {r.get('date', '')} | {r.get('commit', 'not recorded')} |"
        )
    lines += [
        "",
        "Reference figures (../shared/data/README.md, same protocol): ItemKNN NDCG@10 0.0981 on ML-100K and 0.0372 "
        "on Beauty; popularity 0.0441 and 0.0054. Targets: NDCG@10 ≥ 2× popularity and ≥ ItemKNN.",
        "",
        "## Cold-start items (ML-100K, genres + titles as metadata)",
        "",
        f"{cold['n_hidden_items']} items ({cold['fraction']:.0%}) hidden from training (metadata kept, interactions "
        f"removed); {cold['n_users']} users who interacted with them. Each user's history is everything else they "
        "did; the candidates are the hidden items (history excluded); Recall@20 = share of each user's hidden "
        f"items in the top 20, averaged over users. Whole run (training included): {cold['seconds']} s.",
        "",
        "| scorer | Recall@20 among the hidden items | Recall@20 over the full catalogue |",
        "| --- | ---: | ---: |",
        f"| neural two-tower (item tower from metadata alone) | {cold['model_recall@20']:.4f} | "
        f"{cold['model_full_recall@20']:.4f} |",
        "| popularity within genre (Σ of the user's shares of the item's genres; ties by genre popularity) | "
        f"{cold['genre_pop_recall@20']:.4f} | — |",
        f"| global genre popularity (not personalised) | {cold['global_genre_recall@20']:.4f} | — |",
        f"| random order (expected) | {cold['random_recall@20']:.4f} | — |",
        "",
    ]
    write_report(out, "\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({**cold, "command": command}, indent=1, default=float) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, default=RESULTS / "neural.md")
    args = parser.parse_args()
    cold = cold_start()
    print(json.dumps(cold, default=float))
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("RECENGINE_") and "DATA" not in k)
    write_markdown(cold, " ".join(filter(None, [env, "python benchmarks/quality_neural.py"])), args.write)


if __name__ == "__main__":
    main()
