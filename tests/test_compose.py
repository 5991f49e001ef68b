"""docker-compose.yml and the Dockerfile agree with the code they run.

No Docker here: the files are read as text/YAML and every command they name is checked
against the project (the WSGI app and Celery app import, the options parse, the settings read
every variable the containers are given). No database is touched.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import celery
import pytest
import yaml
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli
from django.core.management import get_commands
from gunicorn.config import Config as GunicornConfig

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_PATH = ROOT / "docker-compose.yml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
SETTINGS_PATH = ROOT / "registry" / "settings.py"

COMPOSE_TEXT = COMPOSE_PATH.read_text(encoding="utf-8")
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]

# Built from this repository, given the shared environment.
APP_SERVICES = ("migrate", "web", "worker", "beat")
# Long-running services and whether they carry a healthcheck. Beat has no remote-control
# channel to ping; the one-shot migrate job exits, so neither has one.
HEALTHCHECKED = ("postgres", "redis", "web", "worker")
NOT_HEALTHCHECKED = ("beat", "migrate")
SECRETS = ("SECRET_KEY", "REGISTRY_PEPPER", "POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD")
# The long-running services connect as the application role; only migrate uses the owner.
APP_ROLE_SERVICES = ("web", "worker", "beat")
APP_ROLE = "registry_app"
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "init-app-role.sh"
# Read by Django itself, not by registry/settings.py.
READ_OUTSIDE_SETTINGS = {"DJANGO_SETTINGS_MODULE"}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, ...
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>\w+)(?P<op>:?[-?+])?(?P<rest>[^}]*)\}")


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return list(command) if isinstance(command, list) else shlex.split(command)


def _without_interpolation(value: str) -> str:
    return INTERPOLATION.sub("placeholder", value)


def _gunicorn_args(argv: list[str]):
    assert argv[0] == "gunicorn", argv
    try:
        return GunicornConfig().parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"gunicorn rejects the arguments {argv[1:]}")


def _gunicorn_app_spec(argv: list[str]) -> str:
    positional = _gunicorn_args(argv).args
    assert len(positional) == 1, f"expected one module:attribute in {argv}"
    return positional[0]


def _assert_wsgi_app_exists(spec: str) -> None:
    module_name, _, attribute = spec.partition(":")
    assert module_name and attribute, f"{spec!r} is not module:attribute"
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    assert callable(app), f"{module_name} has no callable {attribute!r}"


def _split_celery(argv: list[str]) -> tuple[str, str, list[str]]:
    """`celery -A app sub ...` -> (app, sub, the subcommand's arguments)."""
    assert argv[0] == "celery", argv
    app_name, index = None, 1
    while index < len(argv) and argv[index].startswith("-"):
        token = argv[index]
        if token in ("-A", "--app"):
            app_name, index = argv[index + 1], index + 2
        elif token.startswith("--app="):
            app_name, index = token.split("=", 1)[1], index + 1
        else:
            pytest.fail(f"unexpected global celery option {token!r} in {argv}")
    assert app_name, f"no -A/--app in {argv}"
    assert index < len(argv), f"no celery subcommand in {argv}"
    return app_name, argv[index], argv[index + 1 :]


def _celery_app(module_name: str) -> celery.Celery:
    module = importlib.import_module(module_name)
    app = getattr(module, "celery_app", None) or getattr(module, "app", None)
    assert isinstance(app, celery.Celery), f"{module_name} exports no celery.Celery app"
    return app


def _parse_celery(argv: list[str]) -> tuple[str, dict]:
    """The subcommand and its parsed options, parsed by Celery's own command line."""
    app_name, subcommand, rest = _split_celery(argv)
    app = _celery_app(app_name)
    assert subcommand in celery_cli.commands, f"celery has no {subcommand!r} command"
    context = celery_cli.commands[subcommand].make_context(
        subcommand, list(rest), obj=CLIContext(app=app, no_color=True, workdir=None)
    )
    return subcommand, context.params


def _shell_steps(argv: list[str]) -> list[list[str]]:
    """`sh -c "a && b"` -> [a, b], each split like a command line."""
    assert argv[:2] == ["sh", "-c"] and len(argv) == 3, argv
    return [shlex.split(step) for step in argv[2].split("&&")]


def _bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, mount target) for the files and folders of this checkout a service mounts."""
    found = []
    for volume in service.get("volumes", []):
        source, _, target = volume.partition(":")
        if source.startswith("./"):
            found.append((source, target.split(":")[0]))
    return found


def _named_volumes(service: dict) -> list[tuple[str, str]]:
    """(volume name, mount target) for the named volumes a service mounts."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume" and volume.get("source"):
                found.append((volume["source"], volume["target"]))
            continue
        source, _, target = volume.partition(":")
        if target and not source.startswith((".", "/", "~", "$")):
            found.append((source, target.split(":")[0]))
    return found


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [
        line
        for line in DOCKERFILE_PATH.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_services_exist():
    assert set(SERVICES) >= {"postgres", "redis", "web", "worker", "beat", "migrate"}


@pytest.mark.parametrize("name", HEALTHCHECKED)
def test_long_running_services_have_a_healthcheck(name):
    healthcheck = SERVICES[name].get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable")
    test = healthcheck["test"]
    assert test and test[0] in ("CMD", "CMD-SHELL"), test


@pytest.mark.parametrize("name", NOT_HEALTHCHECKED)
def test_beat_and_migrate_deliberately_have_no_healthcheck(name):
    assert "healthcheck" not in SERVICES[name]


def test_postgres_and_redis_healthchecks():
    assert SERVICES["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert SERVICES["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]


def test_web_healthcheck_requests_healthz_on_the_gunicorn_port():
    test = SERVICES["web"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "slim image: python, not curl"
    code = test[3]
    compile(code, "<web healthcheck>", "exec")  # a syntax error would fail every check
    assert "urllib.request" in code
    match = re.search(r"http://127\.0\.0\.1:(\d+)/healthz\b", code)
    assert match, code
    (bind,) = _gunicorn_args(_command("web")).bind
    assert bind.rsplit(":", 1)[1] == match.group(1)
    published = [_without_interpolation(port) for port in SERVICES["web"]["ports"]]
    assert any(port.rsplit(":", 1)[1] == match.group(1) for port in published), published

    from django.urls import resolve

    assert resolve("/healthz").url_name == "healthz"


def test_worker_healthcheck_pings_this_worker():
    kind, command = SERVICES["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL", "the shell must expand $HOSTNAME"
    # $$ is Compose's escape; a single $ would be replaced by the host's HOSTNAME (or nothing).
    assert "celery@$$HOSTNAME" in command
    argv = shlex.split(command.replace("$$", "$"))
    subcommand, params = _parse_celery(argv)
    assert (subcommand, params["command"]) == ("inspect", "ping")
    assert params["destination"] == ["celery@$HOSTNAME"]
    assert _split_celery(argv)[0] == _split_celery(_command("worker"))[0]


def test_named_volumes_are_declared_and_used():
    declared = set(COMPOSE.get("volumes") or {})
    used = {name for service in SERVICES.values() for name, _ in _named_volumes(service)}
    assert used <= declared, f"undeclared volumes: {used - declared}"
    assert declared <= used, f"declared but unused volumes: {declared - used}"
    assert {name for name, _ in _named_volumes(SERVICES["postgres"])} == {"postgres-data"}
    assert _named_volumes(SERVICES["redis"])


def test_web_command_is_gunicorn_with_an_existing_wsgi_app():
    argv = _command("web")
    _assert_wsgi_app_exists(_gunicorn_app_spec(argv))
    assert _gunicorn_args(argv).workers == 3


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_service_command_runs_something_that_exists(name):
    argv = _command(name)
    if argv[0] == "gunicorn":
        _assert_wsgi_app_exists(_gunicorn_app_spec(argv))
    elif argv[0] == "celery":
        subcommand, _ = _parse_celery(argv)
        assert subcommand in ("worker", "beat"), argv
    elif argv[:2] == ["python", "manage.py"]:
        assert (ROOT / "manage.py").is_file()
        assert argv[2] in get_commands(), f"no manage.py command {argv[2]!r}"
    elif argv[:2] == ["sh", "-c"]:
        for step in _shell_steps(argv):
            assert step[:2] == ["python", "manage.py"], step
            assert step[2] in get_commands(), f"no manage.py command {step[2]!r}"
    else:
        pytest.fail(f"{name}: unrecognised command {argv}")


def test_worker_and_beat_run_the_registry_celery_app():
    assert _parse_celery(_command("worker"))[0] == "worker"
    subcommand, params = _parse_celery(_command("beat"))
    assert subcommand == "beat"
    # The schedule file lives on a named volume, so it survives a container replacement.
    schedule = params["schedule"]
    targets = [target for _, target in _named_volumes(SERVICES["beat"])]
    assert any(schedule.startswith(target.rstrip("/") + "/") for target in targets), schedule
    assert "/var/lib/registry/beat" in targets  # created owned by the app user in the image


def test_migrate_runs_migrations():
    assert _shell_steps(_command("migrate"))[0] == ["python", "manage.py", "migrate", "--noinput"]


def test_app_services_share_one_environment():
    environments = [SERVICES[name]["environment"] for name in APP_ROLE_SERVICES]
    assert all(environment == environments[0] for environment in environments)
    assert all(SERVICES[name].get("build") == "." for name in APP_SERVICES)
    # migrate: the same, but as the owner, and with the password it gives the app role.
    migrate = dict(SERVICES["migrate"]["environment"])
    assert migrate.pop("DATABASE_URL") != environments[0]["DATABASE_URL"]
    assert migrate.pop("POSTGRES_APP_PASSWORD")
    assert migrate == {k: v for k, v in environments[0].items() if k != "DATABASE_URL"}


def test_app_environment():
    environment = SERVICES["web"]["environment"]
    assert isinstance(environment, dict)
    assert all(isinstance(value, str) for value in environment.values()), environment
    assert environment["DEBUG"] == "false"
    assert environment["ALLOWED_HOSTS"] == "${ALLOWED_HOSTS:-localhost}"
    assert environment["SECURE_SSL_REDIRECT"] == "${SECURE_SSL_REDIRECT:-true}"

    database = urlsplit(_without_interpolation(environment["DATABASE_URL"]))
    postgres = SERVICES["postgres"]["environment"]
    assert database.scheme in ("postgres", "postgresql")
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.username == postgres["POSTGRES_APP_USER"]
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert "${POSTGRES_APP_PASSWORD:?" in environment["DATABASE_URL"]

    redis = urlsplit(environment["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)


def test_settings_module_is_importable():
    module_name = SERVICES["web"]["environment"]["DJANGO_SETTINGS_MODULE"]
    assert importlib.import_module(module_name).__file__


def test_every_variable_given_to_the_app_is_read_by_the_settings():
    settings_source = SETTINGS_PATH.read_text(encoding="utf-8")
    for name in SERVICES["web"]["environment"]:
        if name in READ_OUTSIDE_SETTINGS:
            continue
        assert re.search(rf"""["']{re.escape(name)}["']""", settings_source), (
            f"{name} is given to the app but registry/settings.py never reads it"
        )


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_are_required_never_defaulted(secret):
    references = [m for m in INTERPOLATION.finditer(COMPOSE_TEXT) if m.group("name") == secret]
    assert references, f"{secret} is not taken from the environment"
    assert not re.search(rf"(?<!\$)\${secret}\b", COMPOSE_TEXT), f"unbraced ${secret}"
    for reference in references:
        assert reference.group("op") in (":?", "?"), f"{reference.group(0)} is not required"
        assert reference.group("rest"), f"{reference.group(0)} gives no error message"


def test_secrets_are_not_hard_coded():
    for name in ("SECRET_KEY", "REGISTRY_PEPPER"):
        value = SERVICES["web"]["environment"][name]
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", value), value
    value = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", value), value
    database_url = SERVICES["web"]["environment"]["DATABASE_URL"]
    assert re.fullmatch(r"postgres://registry_app:\$\{POSTGRES_APP_PASSWORD:\?[^}]+\}@[^}]+",
                        database_url)
    database_url = SERVICES["migrate"]["environment"]["DATABASE_URL"]
    assert re.fullmatch(r"postgres://registry:\$\{POSTGRES_PASSWORD:\?[^}]+\}@[^}]+", database_url)


@pytest.mark.parametrize("name", ("web", "worker", "beat"))
def test_app_services_wait_for_healthy_postgres_and_redis(name):
    depends_on = SERVICES[name]["depends_on"]
    assert isinstance(depends_on, dict), "long syntax, so a condition can be given"
    for dependency in ("postgres", "redis"):
        assert depends_on[dependency]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_waits_for_postgres_and_redis_not_for_itself():
    depends_on = SERVICES["migrate"]["depends_on"]
    assert set(depends_on) == {"postgres", "redis"}
    assert all(d["condition"] == "service_healthy" for d in depends_on.values())


def test_dockerfile_runs_the_same_wsgi_app_as_compose():
    commands = [arguments for keyword, arguments in _dockerfile_instructions() if keyword == "CMD"]
    assert commands, "Dockerfile has no CMD"
    argv = json.loads(commands[-1])  # exec form: a JSON array
    spec = _gunicorn_app_spec(argv)
    assert spec == _gunicorn_app_spec(_command("web"))
    _assert_wsgi_app_exists(spec)


def test_dockerfile_builds_a_non_root_image_without_baked_secrets():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert any(k == "RUN" and a.startswith("pip install .") for k, a in instructions)
    copied = " ".join(arguments for keyword, arguments in instructions if keyword == "COPY")
    for path in ("pyproject.toml", "manage.py", "templates/", "static/", "registry/"):
        assert path in copied, f"Dockerfile does not copy {path}"

    (collectstatic,) = [a for k, a in instructions if k == "RUN" and "collectstatic" in a]
    for name in ("SECRET_KEY", "REGISTRY_PEPPER"):
        assert re.search(rf"\b{name}=\S+", collectstatic), f"collectstatic needs {name}"
    assert "DEBUG=false" in collectstatic
    for keyword, arguments in instructions:
        if keyword in ("ENV", "ARG"):
            for name in SECRETS:
                assert name not in arguments, f"{keyword} {name} would persist in the image"


UPLOADS = "/var/lib/registry/imports"


def test_web_and_worker_share_the_upload_volume_at_the_upload_dir():
    # Web stores an uploaded extract, the worker imports it: one named volume, one path.
    environment = SERVICES["web"]["environment"]
    assert environment["IMPORT_UPLOAD_DIR"] == UPLOADS
    mounts = {name: dict((volume, target) for volume, target in _named_volumes(SERVICES[name]))
              for name in ("web", "worker")}
    assert mounts["web"].get("import-uploads") == UPLOADS, mounts["web"]
    assert mounts["worker"].get("import-uploads") == UPLOADS, mounts["worker"]
    assert "import-uploads" in (COMPOSE.get("volumes") or {})
    # Created owned by the app user in the image, so a fresh volume is writable by it.
    dockerfile = DOCKERFILE_PATH.read_text(encoding="utf-8")
    assert re.search(rf"mkdir -p [^\n]*{re.escape(UPLOADS)}", dockerfile)
    assert re.search(rf"chown registry:registry [^\n]*{re.escape(UPLOADS)}", dockerfile)


MODELS = "/var/lib/registry/models"


def test_web_and_worker_share_the_model_volume_at_the_model_dir():
    # The worker that trains writes a version's files; web and worker read them to score.
    assert SERVICES["web"]["environment"]["MODEL_ARTIFACT_DIR"] == MODELS
    for name in ("web", "worker"):
        assert dict(_named_volumes(SERVICES[name])).get("model-artifacts") == MODELS, name
    assert "model-artifacts" in (COMPOSE.get("volumes") or {})
    dockerfile = DOCKERFILE_PATH.read_text(encoding="utf-8")
    assert re.search(rf"mkdir -p [^\n]*{re.escape(MODELS)}", dockerfile)
    assert re.search(rf"chown registry:registry [^\n]*\n?\s*{re.escape(MODELS)}", dockerfile)


def test_the_upload_storage_is_the_upload_dir(settings, tmp_path):
    from django.core.files.base import ContentFile
    from django.core.files.storage import storages

    settings.IMPORT_UPLOAD_DIR = tmp_path / "shared"
    name = storages["imports"].save("x.csv", ContentFile(b"a\n"))
    assert (tmp_path / "shared" / name).read_bytes() == b"a\n"

# -- database roles: the app cannot rewrite the audit trail -----------------------------------


def _database_user(service: str) -> str:
    url = SERVICES[service]["environment"]["DATABASE_URL"]
    return urlsplit(_without_interpolation(url)).username


@pytest.mark.parametrize("name", APP_ROLE_SERVICES)
def test_web_worker_and_beat_connect_as_the_app_role_not_the_owner(name):
    owner = SERVICES["postgres"]["environment"]["POSTGRES_USER"]
    assert _database_user(name) == APP_ROLE != owner
    assert SERVICES[name]["environment"]["DATABASE_APP_ROLE"] == APP_ROLE
    assert "POSTGRES_PASSWORD" not in SERVICES[name]["environment"]
    assert "${POSTGRES_PASSWORD" not in SERVICES[name]["environment"]["DATABASE_URL"]


def test_migrate_runs_as_the_owner_then_grants_the_app_role():
    assert _database_user("migrate") == SERVICES["postgres"]["environment"]["POSTGRES_USER"]
    steps = _shell_steps(_command("migrate"))
    assert [step[2] for step in steps] == ["migrate", "db_grant_app_role"]
    grant = get_commands()["db_grant_app_role"]
    assert grant == "registry"
    from registry.management.commands.db_grant_app_role import Command

    options = Command().create_parser("manage.py", "db_grant_app_role").parse_args(steps[1][3:])
    # The role named by the environment the app itself is given.
    assert (options.role or SERVICES["migrate"]["environment"]["DATABASE_APP_ROLE"]) == APP_ROLE
    assert options.password_env == "POSTGRES_APP_PASSWORD"
    assert SERVICES["migrate"]["environment"][options.password_env] == (
        "${POSTGRES_APP_PASSWORD:?set POSTGRES_APP_PASSWORD}")


def test_postgres_creates_the_app_role_with_its_init_script():
    postgres = SERVICES["postgres"]
    assert postgres["environment"]["POSTGRES_APP_USER"] == APP_ROLE
    assert postgres["environment"]["POSTGRES_APP_PASSWORD"].startswith("${POSTGRES_APP_PASSWORD:?")
    ((source, target),) = _bind_mounts(postgres)
    assert (ROOT / source).resolve() == INIT_SCRIPT
    assert target.startswith("/docker-entrypoint-initdb.d/") and target.endswith(".sh")
    assert any(v.endswith(":ro") for v in postgres["volumes"] if v.startswith("./"))
    script = INIT_SCRIPT.read_text(encoding="utf-8")
    assert script.startswith("#!/bin/sh\n") and "set -eu" in script
    assert "NOSUPERUSER" in script and "PASSWORD :'app_password'" in script
    assert "$POSTGRES_APP_PASSWORD" in script and APP_ROLE not in script  # named once, above


RELEASES = "/var/lib/registry/releases"


def test_web_and_worker_share_the_release_volume_at_the_release_dir():
    # The worker builds a release's files; web serves them to the study's team.
    assert SERVICES["web"]["environment"]["RELEASE_DIR"] == RELEASES
    for name in ("web", "worker"):
        assert dict(_named_volumes(SERVICES[name])).get("release-files") == RELEASES, name
    assert "release-files" in (COMPOSE.get("volumes") or {})
    dockerfile = DOCKERFILE_PATH.read_text(encoding="utf-8")
    assert re.search(rf"mkdir -p [^\n]*{re.escape(RELEASES)}", dockerfile)
    assert re.search(rf"chown registry:registry [^\n]*\n?\s*{re.escape(RELEASES)}", dockerfile)
