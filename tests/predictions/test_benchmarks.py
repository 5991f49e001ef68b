"""The risk models' benchmarks run end to end at a tiny size and report their figures (never
their timings: the machine is shared), queueing nothing on the registry's own queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.core.management import CommandError, call_command
from django.db import connection

from predictions.benchmarks import LATENCY_SAMPLES, cohort_sites, score_benchmark

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = 300


def _benchmark(name: str, *args: str) -> dict[str, dict]:
    """Run `benchmark NAME --json` in a scratch database beside this run's test database, with
    one candidate and a short bootstrap (the figures' fields, not the models, are under test)."""
    db = connection.settings_dict
    url = (f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
           f"/{db['NAME']}_benchcheck")
    result = subprocess.run(
        [sys.executable, "manage.py", "benchmark", name, "--patients", str(PATIENTS), "--json",
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "DATABASE_URL": url, "DEBUG": "true",
             "CELERY_TASK_ALWAYS_EAGER": "false",
             "RISK_MODEL_CANDIDATES": "naive_bayes,logistic_regression",
             "RISK_MODEL_BOOTSTRAP": "20"})
    assert result.returncode == 0, result.stderr
    figures = [json.loads(line) for line in result.stdout.strip().splitlines()]
    return {figure["name"]: figure for figure in figures}


def _default_queue_length() -> int:
    return redis.Redis.from_url(os.environ.get("REDIS_URL") or
                                os.environ["CELERY_BROKER_URL"]).llen("celery")


def test_too_few_saves_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="at least 100 saves"):
        score_benchmark(patients=10, samples=LATENCY_SAMPLES - 1)
    with pytest.raises(CommandError, match="at least 100 saves"):
        call_command("benchmark", "score", "--patients", "10", "--samples", "99")
    with pytest.raises(CommandError, match="benchmark train takes no --samples"):
        call_command("benchmark", "train", "--patients", "10", "--samples", "200")


def test_a_small_cohort_still_has_sites_to_leave_out():
    assert cohort_sites(300) == 3
    assert cohort_sites(15_000) == 10
    assert cohort_sites(450_000) == 300


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_benchmark_train_reports_the_run_against_the_same_fits_in_scikit_learn():
    queued_before = _default_queue_length()
    figure = _benchmark("train")["train"]
    assert {"name", "ours_s", "baseline", "baseline_s", "ratio", "rows", "rows_per_s",
            "peak_rss_mib"} <= set(figure)
    assert figure["baseline"] == "sklearn_same_fits"
    assert figure["ours_s"] > 0 and figure["baseline_s"] > 0 and figure["peak_rss_mib"] > 0
    assert figure["ratio"] == pytest.approx(figure["ours_s"] / figure["baseline_s"], rel=0.01)
    # Rows are the cohort's cycles; both risk models train on every one of them.
    assert figure["rows"] == figure["cinv_cycles"] == figure["neutropenia_cycles"] > 1000
    assert figure["patients"] == PATIENTS
    for name in ("cinv", "neutropenia"):
        assert set(figure[f"{name}_candidates"]) == {"naive_bayes", "logistic_regression"}
        assert figure[f"{name}_champion"] in figure[f"{name}_candidates"]
        assert figure[f"{name}_s"] > 0 and figure[f"{name}_sklearn_loso_s"] > 0
        assert figure[f"{name}_sklearn_final_fit_s"] > 0
        assert figure[f"{name}_sklearn_s"] == pytest.approx(sum(
            figure[f"{name}_sklearn_{part}_s"]
            for part in ("loso", "recalibration", "ordinary_cv", "final_fit")), abs=0.05)
    assert figure["extraction_s"] > 0 and figure["bootstrap"] == 20
    # The champions' rescores went to the benchmark's own queue, not the registry's workers'.
    assert _default_queue_length() == queued_before


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_benchmark_score_reports_the_rescore_and_save_to_score_on_a_worker():
    queued_before = _default_queue_length()
    figures = _benchmark("score")
    rescore = figures["score:rescore"]
    assert {"ours_s", "baseline", "baseline_s", "ratio", "rows", "rows_per_s"} <= set(rescore)
    assert rescore["baseline"] == "predict_proba_and_copy_unlogged"
    # Every cycle scored by both champions; the COPY baseline wrote as many rows.
    assert rescore["rows"] > 1000 and rescore["score_rows"] == 2 * rescore["rows"]
    assert rescore["cycles_per_s"] == pytest.approx(rescore["rows_per_s"], rel=0.01)
    assert rescore["ratio"] == pytest.approx(rescore["ours_s"] / rescore["baseline_s"],
                                             rel=0.01)
    assert rescore["baseline_s"] == pytest.approx(
        rescore["baseline_predict_s"] + rescore["baseline_copy_s"], abs=0.002)

    latency = figures["score:save_to_score"]
    assert latency["baseline"] == "in_process_scoring"
    assert latency["samples"] == LATENCY_SAMPLES
    assert 1 <= latency["clerks"] <= cohort_sites(PATIENTS)  # a clerk per site edited
    assert 0 < latency["p50_s"] <= latency["p95_s"] <= latency["p99_s"] <= latency["max_s"]
    assert latency["ours_s"] == pytest.approx(latency["p50_s"], abs=0.001)
    assert latency["rows"] >= 1  # the cycles each save queued for scoring
    assert _default_queue_length() == queued_before
