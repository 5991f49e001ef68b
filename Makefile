# The registry's two everyday commands are `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Production-like variables for `make check-deploy` (placeholders, never used to serve).
DEPLOY_ENV := DEBUG=false ALLOWED_HOSTS=registry.example.org \
	SECRET_KEY=check-deploy-placeholder-secret-key-0123456789abcdefghijklmnop \
	REGISTRY_PEPPER=check-deploy-placeholder-pepper

.PHONY: demo test lint check-deploy migrations-check install install-dev clean messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## demo: the embedded registry (SQLite, eager Celery) with demo logins, on http://127.0.0.1:8000
demo: $(VENV)/.installed
	$(BIN)/python -m registry.envfile
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_setup
	@echo "Serving on http://127.0.0.1:8000 (Ctrl-C to stop)"
	$(BIN)/python manage.py runserver 127.0.0.1:8000

## test: the whole suite, with branch coverage of services and views; on PostgreSQL and Redis
## when set or reachable on 127.0.0.1
test: $(VENV)/.installed-dev
	eval "$$($(BIN)/python -m registry.devservices)"; \
	echo "database: $${DATABASE_URL:-SQLite (PostgreSQL-only tests will be skipped)}"; \
	echo "redis: $${REDIS_URL:-none (worker tests will be skipped)}"; \
	$(BIN)/python -m pytest --cov --cov-report=term

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

migrations-check: $(VENV)/.installed-dev
	DEBUG=true DATABASE_URL= $(BIN)/python manage.py makemigrations --check --dry-run

check-deploy: $(VENV)/.installed-dev
	$(DEPLOY_ENV) $(BIN)/python manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache

## messages: refresh the Chinese translation catalogue and compile it (needs gettext)
messages: $(VENV)/.installed-dev
	DEBUG=true $(BIN)/python manage.py makemessages -l zh_Hans --ignore=.venv --ignore=tests
	DEBUG=true $(BIN)/python manage.py compilemessages -l zh_Hans
