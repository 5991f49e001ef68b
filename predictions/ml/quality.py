"""The quality bar on the synthetic cohort (issue 16): the champion's pooled leave-site-out
AUROC beside the oracle's (the generator's true probabilities on the same cycles), its
calibration, Naive Bayes alone, and what ordinary cross-validation would have claimed.

    python manage.py shell -c "from predictions.extract import training_data_dump as d; d('F')"
    python -m predictions.ml.quality --data F --truth truth.csv.gz [--json]

The truth file is seed_demo's (--truth); it is joined on the cycle's natural key
(registry_id, line_no, cycle_no) and read only here, never by the features.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from predictions.ml import evaluation as ev
from predictions.ml.definitions import DEFINITIONS
from predictions.ml.training import train

BAR = {"auroc_gap": 0.02, "slope": (0.9, 1.1), "e_avg": 0.03}
_KEY = ["registry_id", "line_no", "cycle_no"]


def oracle_probabilities(meta: pd.DataFrame, truth: pd.DataFrame, model: str) -> np.ndarray:
    """The true probability of `model`'s event for each row of `meta`, in its order."""
    joined = meta[_KEY].merge(truth[[*_KEY, f"p_{model}"]], on=_KEY, how="left",
                              validate="one_to_one")
    if joined[f"p_{model}"].isna().any():
        raise ValueError("Some cycles have no truth row: is it the same seed?")
    return joined[f"p_{model}"].to_numpy()


def quality_report(model: str, X, y, groups, meta: pd.DataFrame, truth: pd.DataFrame, *,
                   n_boot: int = 300, progress=None) -> dict:
    """Train `model` and compare it with the oracle and the bar."""
    started = time.perf_counter()
    result = train(DEFINITIONS[model], X, y, groups, meta=meta, n_boot=n_boot,
                   progress=progress)
    y = np.asarray(y, dtype=int)
    oracle_p = oracle_probabilities(meta, truth, model)
    oracle_auroc = float(roc_auc_score(y, oracle_p))
    champion = result.champion.summary()
    by_name = {c.algorithm: c.summary() for c in result.candidates}
    slope = champion["calibration_slope"]
    checks = {
        "auroc_within_gap": oracle_auroc - champion["loso_auroc"] <= BAR["auroc_gap"],
        "slope_in_range": BAR["slope"][0] <= slope <= BAR["slope"][1],
        "e_avg_ok": champion["e_avg"] <= BAR["e_avg"],
    }
    return {
        "risk_model": model,
        "cycles": result.cycles,
        "events": result.events,
        "oracle": {"auroc": oracle_auroc,
                   "auroc_ci": list(ev.bootstrap_auroc_ci(y, oracle_p, n_boot=n_boot,
                                                          clusters=meta["patient_id"])),
                   "brier": float(np.mean((oracle_p - y) ** 2)),
                   "e_avg": ev.e_avg(y, oracle_p)},
        "champion": champion,
        "naive_bayes": by_name.get("naive_bayes"),
        "candidates": list(by_name.values()),
        "ordinary_cv": {"algorithm": champion["algorithm"],
                        "auroc": champion["ordinary_cv_auroc"],
                        "optimism": champion["ordinary_cv_auroc"] - champion["loso_auroc"]},
        "per_site": result.per_site,
        "bar": checks,
        "meets_bar": all(checks.values()),
        "seconds": round(time.perf_counter() - started, 1),
    }


def format_report(report: dict) -> str:
    c, o, nb = report["champion"], report["oracle"], report["naive_bayes"]
    lines = [
        f"{report['risk_model']}: {report['cycles']:,} cycles, {report['events']:,} events",
        f"  oracle AUROC {o['auroc']:.3f} [{o['auroc_ci'][0]:.3f}, {o['auroc_ci'][1]:.3f}]"
        f"  Brier {o['brier']:.4f}  E-avg {o['e_avg']:.4f}",
    ]
    for cand in report["candidates"]:
        mark = "*" if cand["algorithm"] == c["algorithm"] else " "
        lines.append(
            f" {mark}{cand['algorithm']:<20} LOSO AUROC {cand['loso_auroc']:.3f} "
            f"[{cand['loso_auroc_ci'][0]:.3f}, {cand['loso_auroc_ci'][1]:.3f}]  "
            f"AUPRC {cand['auprc']:.3f}  Brier {cand['brier']:.4f}  "
            f"slope {cand['calibration_slope']:.3f}  intercept "
            f"{cand['calibration_intercept']:+.3f}  CITL {cand['calibration_in_the_large']:+.3f}"
            f"  E-avg {cand['e_avg']:.4f}  recal {cand['recalibration'] or '-'}  "
            f"ordinary-CV AUROC {cand['ordinary_cv_auroc']:.3f}  ({cand['seconds']} s)")
    lines.append(f"  gap to oracle {o['auroc'] - c['loso_auroc']:+.3f}; Naive Bayes alone "
                 f"{nb['loso_auroc']:.3f}; ordinary-CV optimism "
                 f"{report['ordinary_cv']['optimism']:+.3f}")
    sites = [s for s in report["per_site"] if s["auroc"] is not None]
    lines.append(f"  per-site AUROC ({len(sites)} sites with >= 30 events): "
                 + ", ".join(f"{s['site']} {s['auroc']:.3f}" for s in sites))
    lines.append(f"  bar: {report['bar']} -> {'MET' if report['meets_bar'] else 'NOT MET'}"
                 f"  ({report['seconds']} s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="pickle from training_data_dump")
    parser.add_argument("--truth", required=True, help="seed_demo's truth .csv.gz")
    parser.add_argument("--model", choices=list(DEFINITIONS), action="append")
    parser.add_argument("--boot", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with open(args.data, "rb") as handle:
        data = pickle.load(handle)  # noqa: S301 - a file this project wrote
    truth = pd.read_csv(args.truth)
    for model in args.model or list(DEFINITIONS):
        X, y, groups, meta = data[model]
        report = quality_report(
            model, X, y, groups, meta, truth, n_boot=args.boot,
            progress=None if args.json else
            (lambda f, m: print(f"  [{100 * f:3.0f}%] {m}", file=sys.stderr, flush=True)))
        print(json.dumps(report) if args.json else format_report(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
