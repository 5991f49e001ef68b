# The registry's one image: web (gunicorn), Celery worker, Celery beat and the migrate job.
# Configuration comes from the environment at run time (see docker-compose.yml); no secret
# is baked into the image.
FROM python:3.11-slim

# PYTHONPATH: settings.py finds templates/, static/ and staticfiles/ next to the `registry`
# package (BASE_DIR = the package's parent folder). Importing the copy in /app, not the one
# `pip install .` puts in site-packages, makes BASE_DIR /app for gunicorn, celery and manage.py.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=registry.settings \
    PYTHONPATH=/app

WORKDIR /app

RUN groupadd --system --gid 10001 registry \
    && useradd --system --uid 10001 --gid registry --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin registry

# The project and its dependencies. README* is optional (pyproject names README.md).
COPY pyproject.toml README* ./
COPY registry/ registry/
COPY predictions/ predictions/
COPY research/ research/
RUN pip install . && rm -rf build ./*.egg-info

COPY manage.py ./
COPY templates/ templates/
COPY static/ static/
COPY locale/ locale/

# Static files are collected into the image (STATIC_ROOT=/app/staticfiles, served by
# whitenoise). Settings refuse to load without the two secrets when DEBUG is off, so this one
# step gets throwaway build-only values inline; they are not ENV, so they are not in the image.
RUN SECRET_KEY=build-only-not-a-secret-collectstatic-0123456789abcdefghijkl \
    REGISTRY_PEPPER=build-only-pepper-collectstatic \
    DEBUG=false \
    python manage.py collectstatic --noinput

# Celery beat keeps its schedule, web and worker the uploaded extracts, here (named volumes in
# docker-compose.yml); the directories are created owned by the app user so a fresh volume is
# writable by it.
RUN mkdir -p /var/lib/registry/beat /var/lib/registry/imports /var/lib/registry/models \
    && mkdir -p /var/lib/registry/releases \
    && chown registry:registry /var/lib/registry/beat /var/lib/registry/imports \
       /var/lib/registry/models \
    && chown registry:registry /var/lib/registry/releases

USER registry

EXPOSE 8000

CMD ["gunicorn", "registry.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
