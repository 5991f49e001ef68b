import os

# A web process answers requests on its own threads (gunicorn's workers and threads): native
# libraries' thread pools (OpenMP, BLAS) under each request would multiply them, and starting
# them cost gradient boosting 111 ms against 10 ms for one cycle's prediction on two cores
# (`benchmark api`). Set before anything loads those libraries; the environment may override.
WEB_NATIVE_THREADS = "1"
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, WEB_NATIVE_THREADS)

from django.core.wsgi import get_wsgi_application  # noqa: E402 (after the thread settings)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")

application = get_wsgi_application()
