"""The registry's one settings module, driven by environment variables (README, 'Configuration')."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from registry.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = env_secret(
    "SECRET_KEY",
    debug=DEBUG,
    dev_default="django-insecure-dev-only-key-do-not-use-in-production-7f3a9c1e5b",
    min_length=50,
)
# Keys the hash of hospital patient numbers; changing it breaks duplicate detection.
REGISTRY_PEPPER = env_secret(
    "REGISTRY_PEPPER", debug=DEBUG, dev_default="dev-only-pepper", min_length=16
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by the registry itself (offline)
    "simple_history",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "csp",
    "registry",
    "predictions",
    "research",
]

MIDDLEWARE = [
    # First, so that every response has its request id and every API error its body.
    "registry.api.middleware.RequestIdMiddleware",
    "registry.api.middleware.ApiErrorMiddleware",
    "registry.api.middleware.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "registry.middleware.RefuseNulMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "registry.sessions.AbsoluteSessionLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, so it turns a login refused for lockout into the login page with its message.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "registry.urls"
WSGI_APPLICATION = "registry.wsgi.application"
ASGI_APPLICATION = "registry.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# Database: DATABASE_URL, default an SQLite file in the project folder (the embedded demo).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'registry.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Login, sessions and the second factor (README, 'Logging in').
# The lockout backend comes first: it refuses a locked-out username+address before any password
# is checked, and needs the request (every login path of the registry passes it).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_MIN_LENGTH = 12

# Database roles (README, "Database roles and backups"): the application connects as
# DATABASE_APP_ROLE, which may read and append to the history tables but not rewrite them;
# the owner runs migrations and then `manage.py db_grant_app_role`.
DATABASE_APP_ROLE = env_str("DATABASE_APP_ROLE", "registry_app")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": PASSWORD_MIN_LENGTH},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Lockout (django-axes): LOGIN_FAILURE_LIMIT wrong passwords or tokens for one username from
# one address lock that pair out for LOGIN_COOLOFF_MINUTES; a successful login resets the count.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "registry.views.auth.locked_out"
AXES_VERBOSE = False

# Second factor (django-otp, TOTP): tokens of one step either side are accepted, never twice.
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Oncology registry")
OTP_TOTP_TOLERANCE = 1
# A login waiting for its token (or its enrolment) is forgotten after this many seconds.
LOGIN_SECOND_STEP_SECONDS = env_int("LOGIN_SECOND_STEP_SECONDS", 300)

# Sessions end after SESSION_IDLE_MINUTES without a request (each request moves the expiry on)
# and SESSION_MAX_HOURS after the login, however active.
SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 30)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
SESSION_SAVE_EVERY_REQUEST = True
SESSION_MAX_HOURS = env_int("SESSION_MAX_HOURS", 12)

# Content-Security-Policy (django-csp): scripts, styles and images from the registry only; no
# inline script or style; no framing; forms post only to the registry.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Uploaded site extracts (registry/storage.py): web writes them, the worker reads them, so
    # both mount one volume at IMPORT_UPLOAD_DIR (docker-compose.yml).
    "imports": {"BACKEND": "registry.storage.ImportUploadStorage"},
    # Trained risk-model artifacts (predictions/storage.py), written by the worker that
    # trains and read by every process that scores: one volume at MODEL_ARTIFACT_DIR.
    "models": {"BACKEND": "predictions.storage.ModelArtifactStorage"},
    # Built study releases (research/storage.py): the worker writes them, the web serves them to
    # their team only, through a view that records every download: one volume at RELEASE_DIR.
    "releases": {"BACKEND": "research.storage.ReleaseStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedStaticFilesStorage"
        )
    },
}

# Mail: the committee's notifications (requests submitted, decisions, site answers, releases).
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "registry@localhost")

RELEASE_DIR = Path(env_str("RELEASE_DIR", str(BASE_DIR / "var" / "releases")))

# The data-use committee: votes needed before the chair may record a decision, and the share of
# those votes (strictly more than this percentage) an outcome needs.
COMMITTEE_QUORUM = env_int("COMMITTEE_QUORUM", 3)
COMMITTEE_MAJORITY_PCT = env_int("COMMITTEE_MAJORITY_PCT", 50)
# Releases: the smallest group of patients sharing quasi-identifier values (k-anonymity) the
# committee may start from, and the share of patients whose quasi-identifiers may be suppressed
# rather than every patient's generalised further.
RELEASE_K_ANONYMITY = env_int("RELEASE_K_ANONYMITY", 5)
RELEASE_MAX_SUPPRESSED_PCT = env_int("RELEASE_MAX_SUPPRESSED_PCT", 5)
# The partner API's analysis snapshot (research/partner/snapshot.py) is rebuilt in each process
# once it is older than this: aggregates and feasibility counts lag the registry by at most it.
PARTNER_SNAPSHOT_MAX_AGE_SECONDS = env_int("PARTNER_SNAPSHOT_MAX_AGE_SECONDS", 600)

# The partner API's differencing defence (docs/partner-api.md, "Disclosure control and
# differencing defence"). Each released count gets noise of parameter PARTNER_EPSILON
# (epsilon-differential privacy with respect to one patient; smaller is noisier); a query costs
# PARTNER_EPSILON times its sensitivity, and a partner's charges within the last
# PARTNER_BUDGET_DAYS may not exceed PARTNER_EPSILON_BUDGET (sequential composition).
PARTNER_EPSILON = env_float("PARTNER_EPSILON", 0.5)
PARTNER_EPSILON_BUDGET = env_float("PARTNER_EPSILON_BUDGET", 20.0)
PARTNER_BUDGET_DAYS = env_int("PARTNER_BUDGET_DAYS", 30)
# The overlap audit: a query whose population differs by 1 to MIN_CELL-1 patients from one the
# partner was answered in the last PARTNER_AUDIT_DAYS (at most the last PARTNER_AUDIT_QUERIES
# of them) is flagged in the query log for the registry admin's review (and answered).
PARTNER_AUDIT_DAYS = env_int("PARTNER_AUDIT_DAYS", 90)
PARTNER_AUDIT_QUERIES = env_int("PARTNER_AUDIT_QUERIES", 500)
if not (PARTNER_EPSILON > 0 and PARTNER_EPSILON_BUDGET > 0 and PARTNER_BUDGET_DAYS >= 1
        and PARTNER_AUDIT_DAYS >= 1 and PARTNER_AUDIT_QUERIES >= 1):
    # Zero or negative values would switch the noise, the budget or the audit off.
    raise ImproperlyConfigured("PARTNER_EPSILON, PARTNER_EPSILON_BUDGET, PARTNER_BUDGET_DAYS, "
                               "PARTNER_AUDIT_DAYS and PARTNER_AUDIT_QUERIES must be positive.")

# Uploaded site extracts (the "imports" storage) live here until their import ends (a batch
# in "needs mapping" keeps its file for the resume), then are deleted, or kept for the days
# the site asks for (Site.keep_uploads_days) and purged by import_uploads_purge_task.
IMPORT_UPLOAD_DIR = Path(env_str("IMPORT_UPLOAD_DIR", str(BASE_DIR / "var" / "imports")))
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# An upload larger than this is streamed to a temporary file, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)

# Extract limits (registry/extracts.py), checked from a zip's central directory before anything
# is expanded and enforced again while each member is read.
IMPORT_MAX_FILE_BYTES = env_int("IMPORT_MAX_FILE_BYTES", 1 << 30)  # one file, as expanded
IMPORT_MAX_TOTAL_BYTES = env_int("IMPORT_MAX_TOTAL_BYTES", 4 << 30)  # all files, as expanded
IMPORT_MAX_MEMBERS = env_int("IMPORT_MAX_MEMBERS", 32)  # entries in a zip (8 files are known)
# Expanded / compressed size of a zip member beyond which it is refused as a zip bomb; members
# that expand to less than IMPORT_ZIP_RATIO_FROM_BYTES are not judged by their ratio (a tiny
# file compresses well and can hurt nothing: the member count bounds their sum).
IMPORT_MAX_ZIP_RATIO = env_int("IMPORT_MAX_ZIP_RATIO", 100)
IMPORT_ZIP_RATIO_FROM_BYTES = env_int("IMPORT_ZIP_RATIO_FROM_BYTES", 64 * 1024)
# A batch left "running" by a worker that died is run again (by a redelivery or by
# import_stale_requeue_task); after this many such restarts it is failed instead.
IMPORT_MAX_RESTARTS = env_int("IMPORT_MAX_RESTARTS", 2)
# A batch still "received" after this long (its queued task lost) is queued again.
IMPORT_REQUEUE_AFTER_SECONDS = env_int("IMPORT_REQUEUE_AFTER_SECONDS", 600)
# Tests only (the killed-worker test): inside its write transaction the import writes its
# process id to this file and waits, unless the file exists already. Empty in deployments.
IMPORT_TEST_PAUSE_FILE = env_str("IMPORT_TEST_PAUSE_FILE", "")

# Risk-model artifacts (the "models" storage), named by their SHA-256.
MODEL_ARTIFACT_DIR = Path(env_str("MODEL_ARTIFACT_DIR", str(BASE_DIR / "var" / "models")))
# Bootstrap resamples behind each AUROC interval of a training run (fewer is faster, wider).
RISK_MODEL_BOOTSTRAP = env_int("RISK_MODEL_BOOTSTRAP", 300)
# The candidate algorithms every training run compares (empty: all of predictions.ml.pipelines).
RISK_MODEL_CANDIDATES = env_list("RISK_MODEL_CANDIDATES", [])
# Tests only (the killed-worker test): a training run writes its process id to this file and
# waits, once, after its artifacts are stored and before its versions are recorded.
PREDICTIONS_TEST_PAUSE_FILE = env_str("PREDICTIONS_TEST_PAUSE_FILE", "")

# Celery: with no broker configured, tasks run eagerly in-process (the embedded default).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL is None)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE: dict = {
    "import-uploads-purge": {"task": "registry.import_uploads_purge", "schedule": 3600.0},
    "import-stale-requeue": {"task": "registry.import_stale_requeue", "schedule": 300.0},
    "quality-run-nightly": {"task": "registry.quality_run_nightly",
                            "schedule": crontab(hour=2, minute=30)},
    "site-term-frequencies-repair": {"task": "registry.site_term_frequencies_repair",
                                     "schedule": crontab(hour=3, minute=30)},
    # Risk models: retrained nightly, and sooner when the cohort grew (predictions/tasks.py).
    "risk-models-retrain-nightly": {"task": "predictions.retrain_nightly",
                                    "schedule": crontab(hour=3, minute=15)},
    "risk-models-growth-check": {"task": "predictions.cohort_growth_check",
                                 "schedule": 3600.0},
    # Releases whose access period ended are closed (research/tasks.py).
    "releases-expire": {"task": "research.releases_expire", "schedule": 3600.0},
}

# The REST API under /api/v1/ (docs/api.md, registry/api/).
REST_FRAMEWORK = {
    # The bearer token first: its challenge is what every 401 carries.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "registry.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "registry.api.pagination.ApiPagination",
    # Every endpoint is rate limited (registry/api/throttling.py, API_RATE_LIMITS below).
    "DEFAULT_THROTTLE_CLASSES": ["registry.api.throttling.ApiRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "registry.api.errors.exception_handler",
    # Messages about the input as a whole: the key registry.errors and Django use.
    "NON_FIELD_ERRORS_KEY": "__all__",
}
# Requests per caller (token, else user) and throttle class, in a sliding window
# (registry/api/throttling.py): an endpoint whose scope names a class counts against it, every
# other against "default". API_RATE_LIMITS="scoring=1200/min,default=60/min" overrides some.
API_RATE_LIMITS = {
    "default": "120/min",
    "scoring": "600/min",
    "aggregates": "60/min",
    "feasibility": "60/min",
    **{name.strip(): rate.strip() for name, rate in (
        item.split("=", 1) for item in env_list("API_RATE_LIMITS", []) if "=" in item)},
}
# Where the counters live (one place for every web process); none: counted in each process's
# memory (`make demo`). Token requests are refused with 503 while it cannot be reached.
API_RATE_LIMIT_REDIS_URL = env_str("API_RATE_LIMIT_REDIS_URL") or env_str("REDIS_URL")
API_RATE_LIMIT_KEY_PREFIX = "registry:ratelimit:"
SPECTACULAR_SETTINGS = {
    "TITLE": "Oncology registry API",
    "DESCRIPTION": "The registry's REST API. Authentication, scopes, the error body, request "
                   "ids and pagination are described in docs/api.md.",
    "VERSION": "v1",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ErrorCode": "registry.api.errors.ERROR_CODES",
        "Role": "registry.models.organisation.Role",
        "Scope": "registry.api.scopes.Scope",
        # The committee's endpoints (research/api/); named by path, not imported.
        "DataRequestStatus": "research.models.DataRequest.Status",
        "ReleaseStatus": "research.models.Release.Status",
        "VoteChoice": "research.models.VoteChoice",
        # The risk models' endpoints (predictions/api/).
        "TierKey": "predictions.api.serializers.TIER_KEYS",
        "TierAction": "predictions.api.serializers.ACTION_KEYS",
    },
    # Every operation documents 429 and 503 (the rate limits), added in one place.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "registry.api.schema.rate_limit_responses_add",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Security: strict by default outside DEBUG; a TLS-terminating proxy sets X-Forwarded-Proto.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# The audit trail's reason is a text column: reasons the services compose around a person's
# words (e-signature with the user name, re-coding with the word) always fit.
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True
