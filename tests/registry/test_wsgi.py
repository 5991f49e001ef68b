"""A web process runs native libraries on one thread each (registry/wsgi.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PROBE = """
import json
import registry.wsgi
import sklearn.ensemble  # loads OpenMP and BLAS after the web process's settings
from threadpoolctl import threadpool_info
print(json.dumps(sorted({(i["user_api"], i["num_threads"]) for i in threadpool_info()})))
"""


def _probe(**env) -> list:
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    base.update({"DEBUG": "true", **env})
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=base,
                            capture_output=True, text=True, timeout=120, check=True)
    return [tuple(pair) for pair in json.loads(result.stdout.strip().splitlines()[-1])]


def test_native_libraries_run_one_thread_in_a_web_process():
    pools = _probe()
    assert {api for api, _n in pools} >= {"openmp"}
    assert all(n == 1 for _api, n in pools), pools


def test_the_environment_may_give_them_more():
    pools = dict(_probe(OMP_NUM_THREADS="2"))
    assert pools["openmp"] == 2
