"""Benchmarks of the risk models (see registry/benchmarking.py).

`benchmark train`: a full training run of both risk models, as the worker runs it, against bare
scikit-learn making the same fits on the same matrices. `benchmark score`: a full rescore with
both champions against bare predict_proba plus a raw COPY of the same rows, and the time from a
cycle's save to its scores with a real Celery worker (a process of its own, on Redis).

Both run in the scratch database, with their model files in a folder of their own and every
task they queue routed to a queue of their own: nothing reaches the registry's models, its
files or its workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import numpy as np
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.test import override_settings

from registry.benchmarking import Figure, Stopwatch, benchmark, peak_rss_mib, scratch_database
from registry.benchmarks import _percentile, _tables
from registry.services.terminology import starter_vocabulary_load
from registry.synth.run import seed

# Save-to-score samples: below this a p95 (let alone a p99) is one or two saves on a noisy
# shared machine, not a percentile.
LATENCY_SAMPLES = 100
# Saves before the samples (the worker's first task imports and loads the models).
LATENCY_WARMUP = 3
LATENCY_TIMEOUT_S = 120.0
POLL_S = 0.01
WORKER_STOP_S = 30
MIN_SITES = 3


def _predictions_tables() -> list[str]:
    return [m._meta.db_table for m in apps.get_app_config("predictions").get_models()]


def cohort_sites(patients: int) -> int:
    """Sites of the seeded cohort: one per 1,500 patients as the registry's benchmarks seed,
    but at least MIN_SITES (leave-site-out validation needs sites to leave out)."""
    return max(MIN_SITES, min(300, patients // 1500))


def _cohort(patients: int, progress) -> None:
    """The scratch database holds a seeded cohort of `patients` over cohort_sites(patients)
    sites (reseeded, with no risk model left, when it holds another)."""
    from registry.models import Patient, Site

    sites = cohort_sites(patients)
    if Patient.objects.count() != patients or Site.objects.count() != sites:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(_tables() + _predictions_tables())}, "
                           "registry_siteterm, registry_termmapping, registry_department, "
                           "registry_site CASCADE")
        starter_vocabulary_load(acting_user=None)
        seed(patients=patients, sites=sites, seed=42, progress=progress)
    with connection.cursor() as cursor:
        for table in _tables():
            cursor.execute(f"ANALYZE {table}")


@contextlib.contextmanager
def _bench_models(database: str, *, keep: bool) -> Iterator[Path]:
    """Model files in a folder of the scratch database's own (kept with it under --keepdb):
    a training run purges files its database's versions do not name."""
    folder = Path(tempfile.gettempdir()) / f"{database}-models"
    folder.mkdir(exist_ok=True)
    try:
        with override_settings(MODEL_ARTIFACT_DIR=folder):
            yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _celery_app():
    from registry.celery import app

    if not settings.CELERY_BROKER_URL or settings.CELERY_TASK_ALWAYS_EAGER:
        raise RuntimeError("The risk-model benchmarks queue tasks as production does: set "
                           "REDIS_URL (or CELERY_BROKER_URL) and leave tasks not eager.")
    return app


@contextlib.contextmanager
def _tasks_routed_to(queue: str) -> Iterator[str]:
    """Every task this process queues goes to `queue` (the benchmark worker's alone), and the
    queue is emptied and deleted at the end."""
    app = _celery_app()
    previous = app.conf.task_routes

    def route(routes) -> None:
        app.conf.task_routes = routes
        app.amqp.flush_routes()
        app.amqp.__dict__.pop("router", None)  # a cached property: rebuilt from the routes

    route({"*": {"queue": queue}})
    try:
        yield queue
    finally:
        route(previous)
        _queue_delete(app, queue)


def _queue_delete(app, queue: str) -> None:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with contextlib.suppress(Exception):  # never declared: nothing to delete
            channel.queue_purge(queue)
            channel.queue_delete(queue)


def _admin():
    from registry.models import Role
    from registry.services.organisation import user_add

    return user_add(username="bench_admin", role=Role.ADMIN, acting_user=None)[0]


# --- benchmark train --------------------------------------------------------------------------

@contextlib.contextmanager
def _timed_parts() -> Iterator[dict]:
    """The run's extraction and each risk model's training timed apart, and each model's
    matrices and result kept (for the baseline's fits on the same data)."""
    from predictions.services import training as service

    parts: dict = {"extraction_s": 0.0, "models": {}}
    extract, train = service.feature_set_extract, service.train

    def extracted(**kwargs):
        started = time.perf_counter()
        try:
            return extract(**kwargs)
        finally:
            parts["extraction_s"] += time.perf_counter() - started

    def trained(name, X, y, groups, **kwargs):
        started = time.perf_counter()
        result = train(name, X, y, groups, **kwargs)
        parts["models"][name] = {"seconds": time.perf_counter() - started, "X": X, "y": y,
                                 "groups": groups, "result": result}
        return result

    with (mock.patch.object(service, "feature_set_extract", extracted),
          mock.patch.object(service, "train", trained)):
        yield parts


def _training_run(progress) -> tuple[float, dict]:
    """A training run executed in this process, as the worker executes it: (seconds, parts)."""
    from predictions.models import TrainingRun
    from predictions.services.training import training_run_execute, training_run_request

    watch = Stopwatch()
    with _timed_parts() as parts:
        run = training_run_request(trigger=TrainingRun.Trigger.MANUAL, queue=False)
        with watch.running():
            run = training_run_execute(run_id=run.pk)
    if run is None or run.status != TrainingRun.Status.DONE:
        raise RuntimeError(f"the training run ended {getattr(run, 'status', None)}: "
                           f"{getattr(run, 'error', '')}")
    progress(f"training run {run.pk}: {watch.seconds:.1f} s")
    return watch.seconds, parts


def sklearn_fits(name: str, X, y, groups, result) -> dict[str, float]:
    """Bare scikit-learn making the fits the run made for one risk model, on the same matrix:
    for each candidate, the leave-site-out folds (the same fold labels, LeaveOneGroupOut), the
    nested fits of its recalibration where the run tried one, the ordinary 5-fold CV; then the
    champion's final fit. Same estimators (pipelines.build), same parameters; no metrics, no
    saving. Seconds of each part."""
    from sklearn.base import clone
    from sklearn.model_selection import (
        GroupKFold,
        LeaveOneGroupOut,
        StratifiedKFold,
        cross_val_predict,
    )

    from predictions.ml import evaluation as ev
    from predictions.ml import pipelines
    from predictions.ml.definitions import definition as get_definition
    from predictions.ml.training import MIN_FOLD_EVENTS, _needs_recalibration

    definition = get_definition(name)
    X = X[list(definition.features)]
    y = np.asarray(y, dtype=int)
    groups = np.asarray(groups).astype(str)
    folds = ev.site_folds(groups, y, min_events=MIN_FOLD_EVENTS)
    loso, recalibration, ordinary, final = Stopwatch(), Stopwatch(), Stopwatch(), Stopwatch()
    for candidate in result.candidates:
        pipeline = pipelines.build(candidate.algorithm, definition, random_state=0)
        with loso.running():
            cross_val_predict(pipeline, X, y, groups=folds, cv=LeaveOneGroupOut(),
                              method="predict_proba")
        if _needs_recalibration(candidate.raw_metrics):
            with recalibration.running():
                for train, _ in LeaveOneGroupOut().split(X, y, folds):
                    inner = groups[train]
                    n_splits = min(3, len(set(inner)))
                    cv = (GroupKFold(n_splits=n_splits) if n_splits >= 2 else
                          StratifiedKFold(n_splits=3, shuffle=True, random_state=0))
                    cross_val_predict(pipeline, X.iloc[train], y[train],
                                      groups=inner if n_splits >= 2 else None, cv=cv,
                                      method="predict_proba")
        with ordinary.running():
            cross_val_predict(pipeline, X, y, method="predict_proba",
                              cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=0))
    with final.running():
        clone(pipelines.build(result.champion.algorithm, definition, random_state=0)).fit(X, y)
    return {"loso_s": loso.seconds, "recalibration_s": recalibration.seconds,
            "ordinary_cv_s": ordinary.seconds, "final_fit_s": final.seconds}


@benchmark("train")
def train_benchmark(*, patients: int, progress=print, keepdb: bool = False) -> list[Figure]:
    """A full retrain of both risk models as the worker runs it (extraction, candidates with
    leave-site-out CV, calibration, final fit, versions saved) against bare scikit-learn making
    the same fits on the same matrices in the same run."""
    _celery_app()  # refused before any database is made
    with (scratch_database(keep=keepdb) as database, _bench_models(database, keep=keepdb),
          _tasks_routed_to(f"benchmark-train-{os.getpid()}")):
        _cohort(patients, progress)
        ours_s, parts = _training_run(progress)
        ours_rss = peak_rss_mib()
        extra: dict = {"patients": patients, "extraction_s": round(parts["extraction_s"], 2)}
        baseline_s, cycles = 0.0, 0
        for name, part in parts["models"].items():
            result = part["result"]
            cycles = max(cycles, result.cycles)
            fits = sklearn_fits(name, part["X"], part["y"], part["groups"], result)
            seconds = sum(fits.values())
            baseline_s += seconds
            progress(f"{name}: ours {part['seconds']:.1f} s, scikit-learn {seconds:.1f} s")
            extra |= {f"{name}_s": round(part["seconds"], 2),
                      f"{name}_sklearn_s": round(seconds, 2),
                      f"{name}_cycles": result.cycles, f"{name}_events": result.events,
                      f"{name}_candidates": {c.algorithm: round(c.seconds, 2)
                                             for c in result.candidates},
                      f"{name}_recalibrated": [c.algorithm for c in result.candidates
                                               if c.recalibration],
                      f"{name}_champion": result.champion.algorithm}
            extra |= {f"{name}_sklearn_{k}": round(v, 2) for k, v in fits.items()}
        extra["rest_s"] = round(ours_s - parts["extraction_s"] - sum(
            p["seconds"] for p in parts["models"].values()), 2)
        extra["bootstrap"] = settings.RISK_MODEL_BOOTSTRAP
    return [Figure(name="train", ours_s=ours_s, baseline="sklearn_same_fits",
                   baseline_s=baseline_s, rows=cycles, peak_rss_mib=ours_rss, extra=extra)]


# --- benchmark score --------------------------------------------------------------------------

def _champions_ready(progress) -> dict:
    """Both risk models' champions, their files loadable: trained once (not timed) when a risk
    model has no version; a latest version that missed the automatic rule (a small cohort) is
    promoted by hand."""
    from predictions.ml.definitions import DEFINITIONS
    from predictions.models import ModelVersion
    from predictions.services.scoring import champions
    from predictions.services.versions import champion_move, version_load

    try:
        for version in ModelVersion.objects.all():
            version_load(version)
    except (OSError, ValueError):  # a kept database whose model files are gone
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(_predictions_tables())} CASCADE")
    if set(ModelVersion.objects.values_list("risk_model", flat=True)) != set(DEFINITIONS):
        progress("no versions: training once (not timed)")
        _training_run(progress)
    current = champions()
    for name in DEFINITIONS:
        if name not in current:
            latest = ModelVersion.objects.filter(risk_model=name).order_by("-number").first()
            champion_move(risk_model=name, version_number=latest.number, acting_user=_admin(),
                          reason="benchmark cohort: promoted by hand to be scored")
    return champions()


def _scores_export(columns: list[str]) -> bytes:
    from predictions.models import RiskScore

    raw = connection.connection
    out = bytearray()
    with raw.cursor() as cursor, cursor.copy(
            f"COPY (SELECT {', '.join(columns)} FROM {RiskScore._meta.db_table}) "  # noqa: S608
            "TO STDOUT") as copy:
        for chunk in copy:
            out += chunk
    return bytes(out)


def _rescore(versions: dict, progress) -> Figure:
    """(a) version_score_all of both champions against bare predict_proba of the same fitted
    pipelines on the same matrix plus a raw COPY of as many score rows into an UNLOGGED table."""
    from predictions.ml.definitions import definition as get_definition
    from predictions.models import RiskScore
    from predictions.selectors.features import feature_set_for_sites
    from predictions.services.scoring import _COLUMNS, version_score_all
    from predictions.services.versions import version_load
    from registry.models import Cycle

    watch = Stopwatch()
    per_model = {}
    written = 0
    for name, version in versions.items():
        started = time.perf_counter()
        with watch.running():
            written += version_score_all(version_id=version.pk)
        per_model[f"{name}_s"] = round(time.perf_counter() - started, 3)
    ours_rss = peak_rss_mib()
    cycles = Cycle.objects.count()
    if written != len(versions) * cycles or RiskScore.objects.count() != written:
        raise RuntimeError(f"the rescore wrote {written} scores for {cycles} cycles")
    progress(f"rescore: {watch.seconds:.2f} s for {cycles:,} cycles")

    from django.utils import timezone

    X = feature_set_for_sites(None, as_of=timezone.now()).features
    models = {name: version_load(version) for name, version in versions.items()}
    rows = _scores_export(_COLUMNS)
    predict, copy_watch = Stopwatch(), Stopwatch()
    for name, model in models.items():
        matrix = X[list(get_definition(name).features)]
        with predict.running():
            model.pipeline.predict_proba(matrix)
    table = "_bench_scores"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(f"CREATE UNLOGGED TABLE {table} "
                       f"(LIKE {RiskScore._meta.db_table} INCLUDING DEFAULTS)")
        cursor.execute(f"ALTER TABLE {table} DROP COLUMN id")
    try:
        with copy_watch.running(), connection.connection.cursor() as raw, raw.copy(
                f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            copy.write(rows)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
            copied = cursor.fetchone()[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
    if copied != written:
        raise RuntimeError(f"the COPY baseline wrote {copied} rows, the rescore {written}")
    baseline_s = predict.seconds + copy_watch.seconds
    return Figure(
        name="score:rescore", ours_s=watch.seconds, baseline="predict_proba_and_copy_unlogged",
        baseline_s=baseline_s, rows=cycles, peak_rss_mib=ours_rss,
        extra={"cycles_per_s": round(cycles / watch.seconds, 1), "score_rows": written,
               "score_rows_per_s": round(written / watch.seconds, 1),
               "baseline_predict_s": round(predict.seconds, 3),
               "baseline_copy_s": round(copy_watch.seconds, 3),
               "baseline_cycles_per_s": round(cycles / baseline_s, 1), **per_model})


def _database_url() -> str:
    db = connection.settings_dict
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return (f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{db['NAME']}")


@contextlib.contextmanager
def _worker(queue: str, folder: Path) -> Iterator[subprocess.Popen]:
    """A Celery worker process (one child) on the scratch database, consuming `queue` only;
    stopped at the end, whatever happened."""
    env = dict(os.environ, DATABASE_URL=_database_url(),
               CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
               CELERY_RESULT_BACKEND=settings.CELERY_RESULT_BACKEND or "",
               CELERY_TASK_ALWAYS_EAGER="false", MODEL_ARTIFACT_DIR=str(folder))
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed with the process)
        prefix="benchmark-worker-", suffix=".log", delete=False)
    process = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
        [sys.executable, "-m", "celery", "-A", "registry", "worker", "-Q", queue,
         "--pool=prefork", "-c", "1", "--loglevel=WARNING", "--without-mingle",
         "--without-gossip", "-n", f"{queue}@%h"],
        cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        yield process
    except Exception as error:
        log.flush()
        tail = Path(log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{error}\nworker log ({log.name}):\n{tail}") from error
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(WORKER_STOP_S)
        log.close()
        Path(log.name).unlink(missing_ok=True)


def _editable_cycles(count: int) -> list[int]:
    """`count` cycles to edit (a fixed random choice), none locked, each of a different patient
    while there are enough patients with a cycle not locked (then they are edited again)."""
    import itertools
    import random

    from registry.models import Cycle, RecordStatus

    first: dict[int, int] = {}
    for cycle_id, patient_id in (Cycle.objects.exclude(status=RecordStatus.LOCKED)
                                 .order_by("pk").values_list("pk", "patient_id")):
        first.setdefault(patient_id, cycle_id)
    if not first:
        raise RuntimeError("every cycle is locked: there is none a clerk may edit")
    ids = sorted(first.values())
    chosen = random.Random(7).sample(ids, min(count, len(ids)))
    return list(itertools.islice(itertools.cycle(chosen), count))


def _save_and_wait(cycle_id: int, clerks: dict, risk_models: int) -> tuple[float, float, int]:
    """Edit the cycle through the registry's service as a clerk of its site, then wait for its
    scores (every champion's) read after the save: (seconds to the scores, seconds of the save,
    cycles the save queued)."""
    from predictions.models import RiskScore
    from predictions.services.scoring import changed_cycles
    from registry.models import Cycle, Role
    from registry.services.clinical import cycle_record
    from registry.services.organisation import user_add

    cycle = Cycle.objects.select_related("line__patient", "site").get(pk=cycle_id)
    clerk = clerks.get(cycle.site_id)
    if clerk is None:
        clerk = clerks[cycle.site_id] = user_add(
            username=f"bench_clerk_{cycle.site.code.lower()}", role=Role.CLERK,
            site_codes=[cycle.site.code], acting_user=None)[0]
    started = time.perf_counter()
    record = cycle_record(
        line=cycle.line, cycle_no=cycle.cycle_no, start_date=cycle.start_date,
        length_days=28 if cycle.length_days == 21 else 21, bsa_m2=cycle.bsa_m2, instance=cycle,
        expected_version=cycle.version, change_reason="cycle length entered wrongly",
        acting_user=clerk)
    saved = time.perf_counter() - started
    if record.version != cycle.version + 1:
        raise RuntimeError(f"cycle {cycle_id} was not saved")
    scores = RiskScore.objects.filter(cycle_id=cycle_id, inputs_as_of__gte=record.updated_at)
    deadline = started + LATENCY_TIMEOUT_S
    while scores.count() < risk_models:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"cycle {cycle_id}: no score {LATENCY_TIMEOUT_S:.0f} s after "
                               "its save")
        time.sleep(POLL_S)
    seconds = time.perf_counter() - started
    queued = len(changed_cycles(kind="cycle", site_ids=[cycle.site_id],
                                patient_ids=[cycle.line.patient_id]))
    return seconds, saved, queued


def _latency(versions: dict, queue: str, folder: Path, samples: int, progress) -> Figure:
    """(b) From a clerk's save of a cycle to its scores, with a real worker, `samples` times;
    beside the same scoring run in this process (what the worker does for the save)."""
    from django.db.models import Count

    from predictions.services.scoring import changed_cycles, cycles_score
    from registry.models import Cycle

    app = _celery_app()
    _queue_delete(app, queue)  # the rescores the champions' moves queued: done in (a)
    chosen = _editable_cycles(samples + LATENCY_WARMUP)
    clerks: dict = {}
    latency, saves, in_process, queued = [], [], [], []
    with _worker(queue, folder):
        progress("worker started; warming up")
        for cycle_id in chosen[:LATENCY_WARMUP]:
            _save_and_wait(cycle_id, clerks, len(versions))
        for number, cycle_id in enumerate(chosen[LATENCY_WARMUP:], 1):
            seconds, saved, count = _save_and_wait(cycle_id, clerks, len(versions))
            latency.append(seconds)
            saves.append(saved)
            queued.append(count)
            cycle = Cycle.objects.get(pk=cycle_id)
            started = time.perf_counter()
            cycles_score(cycle_ids=changed_cycles(kind="cycle", site_ids=[cycle.site_id],
                                                  patient_ids=[cycle.patient_id]))
            in_process.append(time.perf_counter() - started)
            if number % 25 == 0:
                progress(f"save -> score: {number}/{samples}, p50 "
                         f"{_percentile(latency, 0.5):.2f} s")
    return Figure(
        name="score:save_to_score", ours_s=_percentile(latency, 0.5),
        baseline="in_process_scoring", baseline_s=_percentile(in_process, 0.5),
        rows=round(sum(queued) / len(queued)), peak_rss_mib=peak_rss_mib(),
        extra={"samples": len(latency), "warmup_saves": LATENCY_WARMUP,
               "p50_s": round(_percentile(latency, 0.5), 3),
               "p95_s": round(_percentile(latency, 0.95), 3),
               "p99_s": round(_percentile(latency, 0.99), 3),
               "max_s": round(max(latency), 3),
               "save_p50_s": round(_percentile(saves, 0.5), 3),
               "in_process_p95_s": round(_percentile(in_process, 0.95), 3),
               "largest_site_cycles": Cycle.objects.values("site_id").annotate(
                   n=Count("pk")).order_by("-n").values_list("n", flat=True).first(),
               "clerks": len(clerks)})


@benchmark("score")
def score_benchmark(*, patients: int, progress=print, samples: int = LATENCY_SAMPLES,
                    keepdb: bool = False) -> list[Figure]:
    """Rescoring every cycle with both champions (scores written) against bare predict_proba
    plus a raw COPY of the rows; and a cycle's save to its scores with a real Celery worker
    (p50, p95, p99 of at least 100 saves)."""
    if samples < LATENCY_SAMPLES:
        raise ValueError(f"--samples {samples} is too few: p95 and p99 need at least "
                         f"{LATENCY_SAMPLES} saves.")
    _celery_app()  # refused before any database is made
    queue = f"benchmark-score-{os.getpid()}"
    with (scratch_database(keep=keepdb) as database,
          _bench_models(database, keep=keepdb) as folder, _tasks_routed_to(queue)):
        _cohort(patients, progress)
        versions = _champions_ready(progress)
        figures = [_rescore(versions, progress)]
        figures.append(_latency(versions, queue, folder, samples, progress))
    for figure in figures:
        figure.extra = {"patients": patients, **(figure.extra or {})}
    return figures


# --- benchmark api -------------------------------------------------------------------------

# Concurrent clients of `benchmark api` (the figure) and the server's workers: one
# process per core, each with threads enough that every client is served at once.
API_CLIENTS = 16
API_SERVER_WORKERS = 2
API_SERVER_THREADS = 8
API_SERVER_START_S = 120.0
# Feature rows of the batch score (the API's own batch limit).
API_BATCH_CYCLES = 1000


@contextlib.contextmanager
def _api_server(database: str, folder: Path, progress) -> Iterator[str]:
    """The registry served by gunicorn (a process of its own, as deployed) on the scratch
    database; yields its base URL. Disclosure control and the rate limiter work as
    configured, but with a privacy budget and rates a benchmark of 16 clients cannot exhaust
    (refusals are the tests' business), and an analysis snapshot that lives through the run."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = connection.settings_dict
    url = (f"postgres://{quote(db['USER'] or '')}@{db['HOST'] or '127.0.0.1'}:"
           f"{db['PORT'] or 5432}/{database}")
    env = {**os.environ, "DATABASE_URL": url, "MODEL_ARTIFACT_DIR": str(folder),
           "DEBUG": "false", "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "false",
           "PARTNER_EPSILON_BUDGET": "1000000000",
           # Counted as always (the limiter's Redis round trip is measured), never reached.
           "API_RATE_LIMITS": ",".join(f"{name}=1000000/min" for name in
                                       settings.API_RATE_LIMITS),
           "PARTNER_SNAPSHOT_MAX_AGE_SECONDS": "86400"}
    command = [sys.executable, "-m", "gunicorn", "registry.wsgi:application",
               "--bind", f"127.0.0.1:{port}", "--workers", str(API_SERVER_WORKERS),
               "--threads", str(API_SERVER_THREADS), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR,  # noqa: S603
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"gunicorn ended with {server.returncode}") from None
                if time.monotonic() - started > API_SERVER_START_S:
                    raise RuntimeError("gunicorn did not start listening") from None
                time.sleep(0.2)
        progress(f"gunicorn on {base}: {API_SERVER_WORKERS} workers x "
                 f"{API_SERVER_THREADS} threads")
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=WORKER_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _api_load(base: str, token: str, requests: list[tuple[str, str, bytes | None]],
              clients: int) -> tuple[list[float], float]:
    """Send `requests` (method, path, JSON body) from `clients` threads, each on its own
    keep-alive connection; (latencies in s, wall seconds). Any answer but 200 is an error."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json"}
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    shares = [requests[i::clients] for i in range(clients)]

    def client(share) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        mine = []
        try:
            for method, path, body in share:
                started = time.perf_counter()
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                mine.append(time.perf_counter() - started)
                if response.status != 200:
                    with lock:
                        failures.append(f"{method} {path}: {response.status} "
                                        f"{payload[:300]!r}")
                    return
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(share,)) for share in shares if share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return latencies, wall


# Requests per measured kind: below this a p95 (let alone a p99) is not a percentile.
API_SAMPLES = 160

# Aggregate tables and feasibility criteria the clients ask, in turn (each a different
# question: the first ask of each is computed and charged, the rest are the repeats a
# scheduled script makes).
_API_AGGREGATES = [
    {"measure": "incidence", "by": ["regimen", "cycle_number"],
     "term": "Neutrophil count decreased", "min_grade": 3},
    {"measure": "incidence", "by": ["regimen"], "term": "Nausea", "min_grade": 2},
    {"measure": "patients", "by": ["cancer_site", "stage"]},
    {"measure": "patients", "by": ["region", "sex"]},
    {"measure": "patients", "by": ["diagnosis_year", "site_tier"]},
    {"measure": "incidence", "by": ["site_tier"], "term": "Vomiting", "min_grade": 3},
    {"measure": "patients", "by": ["age_band"], "filters": {"sex": ["F"]}},
    {"measure": "incidence", "by": ["cancer_site"], "term": "Febrile neutropenia",
     "min_grade": 3},
]
_API_FEASIBILITY = [
    {"cancer": ["C34"]},
    {"cancer": ["C34"], "stage_groups": ["III", "IV"]},
    {"cancer": ["C50"], "min_prior_lines": 1},
    {"cancer": ["C18", "C20"], "max_prior_lines": 0},
    {"site_tiers": ["tertiary"]},
    {"cancer": ["C16"], "stage_groups": ["IV"], "min_prior_lines": 1},
]


def _api_cycles(count: int) -> tuple[str, list[dict]]:
    """`count` cycles of the seeded cohort as a partner sends them (features only), and the
    risk model they are for."""
    import datetime as dt

    from predictions.ml.definitions import DEFINITIONS
    from predictions.selectors.features import feature_set_for_sites

    name = sorted(DEFINITIONS)[0]
    X, _y, _groups = feature_set_for_sites(None, as_of=dt.datetime.now(dt.UTC)).matrix(name)
    rows = []
    for record in X.head(count).to_dict("records"):
        cycle = {}
        for key, value in record.items():
            if value is None or (isinstance(value, float) and np.isnan(value)):
                cycle[key] = None
            elif isinstance(value, float | np.floating) and float(value).is_integer():
                cycle[key] = int(value)
            elif isinstance(value, np.generic):
                cycle[key] = value.item()
            else:
                cycle[key] = value
        rows.append(cycle)
    if len(rows) < count:
        rows = (rows * (count // max(1, len(rows)) + 1))[:count]
    return name, rows


def _api_partner_token() -> str:
    from registry.models import Role
    from registry.services.api_tokens import api_token_create
    from registry.services.organisation import user_add

    user, _memberships = user_add(username="bench-partner", role=Role.PARTNER, site_codes=[],
                                  acting_user=None)
    return api_token_create(user=user, name="benchmark api",
                            scopes=["aggregates", "feasibility", "scoring"],
                            expires_days=None, acting_user=None)[1]


@benchmark("api")
def api_benchmark(*, patients: int, progress=print, samples: int = API_SAMPLES,
                  keepdb: bool = False) -> list[Figure]:
    """The partner API through gunicorn with 16 concurrent clients: an aggregate table, a
    feasibility count, a 1-cycle and a 1,000-cycle score (p50, p95, p99 of at least 100
    requests each, and throughput), then the same with one client (each request's service
    time), against the same server's floor: an authenticated GET /api/v1/me/ by the same
    clients."""
    import json

    if samples < LATENCY_SAMPLES:
        raise ValueError(f"--samples {samples} is too few: p95 and p99 need at least "
                         f"{LATENCY_SAMPLES} requests.")
    with (scratch_database(keep=keepdb) as database,
          _bench_models(database, keep=keepdb) as folder):
        _cohort(patients, progress)
        _champions_ready(progress)
        with connection.cursor() as cursor:
            research = [m._meta.db_table for m in apps.get_app_config("research").get_models()]
            cursor.execute(f"TRUNCATE {', '.join(research)} CASCADE")
            cursor.execute("DELETE FROM registry_apitoken")
        token = _api_partner_token()
        model, cycles = _api_cycles(API_BATCH_CYCLES)
        v1 = "/api/v1"

        def body(value) -> bytes:
            return json.dumps(value).encode()
        kinds = {
            "floor_me": [("GET", f"{v1}/me/", None)],
            "aggregate": [("POST", f"{v1}/aggregates/", body(spec))
                          for spec in _API_AGGREGATES],
            "feasibility": [("POST", f"{v1}/feasibility/", body(criteria))
                            for criteria in _API_FEASIBILITY],
            "score_1": [("POST", f"{v1}/models/{model}/score/",
                         body({"cycles": [cycle]})) for cycle in cycles[:50]],
            "score_1000": [("POST", f"{v1}/models/{model}/score/",
                            body({"cycles": cycles}))],
        }
        figures = []
        with _api_server(database, folder, progress) as base:
            # Warm-up (not measured): every worker builds its analysis snapshot and loads the
            # champion; every aggregate and feasibility question is asked once.
            warm = [r for kind in kinds.values() for r in kind] * API_SERVER_WORKERS
            started = time.perf_counter()
            _api_load(base, token, warm * 2, API_CLIENTS)
            progress(f"warm-up: {time.perf_counter() - started:.1f} s")
            measured = {}
            # 16 clients (the figure: latency under load, queueing included), then one
            # client (each request's own service time, nothing queued before it).
            for clients in (API_CLIENTS, 1):
                for kind, requests in kinds.items():
                    plan = [requests[i % len(requests)] for i in range(samples)]
                    latencies, wall = _api_load(base, token, plan, clients)
                    measured[kind, clients] = (latencies, wall)
                    progress(f"api:{kind} x{clients}: {len(latencies)} requests, p50 "
                             f"{_percentile(latencies, 0.5) * 1000:.1f} ms, p95 "
                             f"{_percentile(latencies, 0.95) * 1000:.1f} ms")
        for clients in (API_CLIENTS, 1):
            floor, _floor_wall = measured[("floor_me", clients)]
            for kind in kinds:
                if kind == "floor_me":
                    continue
                latencies, wall = measured[kind, clients]
                figures.append(Figure(
                    name=f"api:{kind}:{clients}_clients", ours_s=_percentile(latencies, 0.5),
                    baseline="authenticated_get_me", baseline_s=_percentile(floor, 0.5),
                    rows=len(latencies), peak_rss_mib=peak_rss_mib(),
                    extra={"patients": patients, "clients": clients,
                           "requests": len(latencies),
                           "p50_ms": round(_percentile(latencies, 0.5) * 1000, 1),
                           "p95_ms": round(_percentile(latencies, 0.95) * 1000, 1),
                           "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
                           "throughput_rps": round(len(latencies) / wall, 1),
                           "floor_p95_ms": round(_percentile(floor, 0.95) * 1000, 1),
                           "server": f"gunicorn {API_SERVER_WORKERS}x{API_SERVER_THREADS}"}))
    return figures
