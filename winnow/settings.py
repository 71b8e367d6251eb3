"""Winnow settings, read from the environment.

Embedded default (no variables set): SQLite under var/, tasks run in-process, files under var/media.
Production: DATABASE_URL (PostgreSQL), CELERY_BROKER_URL (Redis), an S3 bucket, SECRET_KEY.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from winnow.env import env_bool, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("WINNOW_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
DATABASE_URL = env_str("DATABASE_URL")


def _secret_key() -> str:
    key = env_secret("SECRET_KEY")
    if key:
        return key
    if DATABASE_URL and not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) is required when DATABASE_URL is set and DEBUG is off"
        )
    # Development on the embedded default: generate once and keep it, so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The public address of the web app, used in links the CLI prints and in exports.
SITE_URL = (env_str("WINNOW_SITE_URL", "http://127.0.0.1:8000") or "").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "winnow.accounts",
    "curation",
    "sampling",
    "winnow.lightly",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "winnow.guard.RejectUnsafeRequests",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "winnow.guard.ContentSecurityPolicy",
    # Last, as django-axes asks: counts failed sign-ins (page and admin) and locks out after too many.
    "axes.middleware.AxesMiddleware",
]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Sign-in throttling: this many failures for one username from one address lock it for AXES_COOLOFF_TIME.
AXES_FAILURE_LIMIT = env_int("WINNOW_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = env_int("WINNOW_LOGIN_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

ROOT_URLCONF = "winnow.urls"
WSGI_APPLICATION = "winnow.wsgi.application"
ASGI_APPLICATION = "winnow.asgi.application"

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
            ],
        },
    },
]

# Database connections are kept open between requests for WINNOW_DB_CONN_MAX_AGE seconds (0: one per request),
# checked before reuse. Each gunicorn thread and each Celery process holds at most one, so their sum is bounded
# (winnow/gunicorn.conf.py checks it against max_connections at start; README "Connections").
# runserver starts a thread per client connection and never closes a finished thread's database connection:
# there, reuse would leave one idle session per client behind, so it always closes after each request.
_RUNSERVER = sys.argv[1:2] == ["runserver"]
DB_CONN_MAX_AGE = 0 if _RUNSERVER else env_int("WINNOW_DB_CONN_MAX_AGE", 60, minimum=0)
DB_CONN_HEALTH_CHECKS = env_bool("WINNOW_DB_CONN_HEALTH_CHECKS", True)
# runserver also starts a thread for every client connection, without limit: at most this many requests run at once
# there (each holding at most one database connection), the others wait up to WINNOW_REQUEST_QUEUE_SECONDS, then
# get a 503 with Retry-After (winnow/wsgi.py). gunicorn is bounded by workers x threads instead: 0 (no limiter).
WINNOW_MAX_CONCURRENT_REQUESTS = env_int("WINNOW_MAX_CONCURRENT_REQUESTS", 8 if _RUNSERVER else 0, minimum=0)
WINNOW_REQUEST_QUEUE_SECONDS = env_int("WINNOW_REQUEST_QUEUE_SECONDS", 60, minimum=1)
if DATABASE_URL:
    try:
        DATABASES = {
            "default": dj_database_url.parse(
                DATABASE_URL, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=DB_CONN_HEALTH_CHECKS
            )
        }
    except Exception as exc:  # dj-database-url raises several types for a malformed URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    # A statement running longer than this is cancelled (0: no limit), so a runaway query cannot hold a
    # connection past the proxy's and gunicorn's timeouts.
    _statement_timeout_ms = env_int("WINNOW_DB_STATEMENT_TIMEOUT_MS", 0, minimum=0)
    if _statement_timeout_ms and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"].setdefault("OPTIONS", {})["options"] = f"-c statement_timeout={_statement_timeout_ms}"
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "winnow.sqlite3",
            # SQLite serialises writers; wait instead of failing while the in-process worker writes.
            # IMMEDIATE: a transaction takes the write lock at BEGIN, so it waits (timeout) rather than
            # failing with "database is locked" when it upgrades from read to write mid-way.
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve straight from static/ and the apps, so `runserver` and the demo need no collectstatic step.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env_str("WINNOW_MEDIA_ROOT", str(VAR_DIR / "media")))

# Behind a proxy that terminates TLS: trust its X-Forwarded-Proto, so absolute links (signed URLs) say https;
# cookies only over https, HSTS, plain-http requests redirected (but the health check), and a CSP.
BEHIND_TLS_PROXY = env_bool("WINNOW_BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("WINNOW_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]
    SECURE_HSTS_SECONDS = env_int("WINNOW_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("WINNOW_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("WINNOW_HSTS_PRELOAD", True)
# Content-Security-Policy of every page (winnow/guard.py ContentSecurityPolicy): on behind TLS, or when set.
# Thumbnails may come from an S3 endpoint on another origin, hence https: images.
CONTENT_SECURITY_POLICY = env_str(
    "WINNOW_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob: https:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
    if BEHIND_TLS_PROXY
    else "",
)

# A cache shared by every web process (one-time signed upload URLs); per-process memory when unset.
CACHE_URL = env_str("CACHE_URL")
if CACHE_URL:
    if not CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"CACHE_URL={CACHE_URL!r} must be a redis:// URL")
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- object storage: local directory by default, an S3-compatible bucket when a bucket is named
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    _s3_options = {
        "bucket_name": AWS_STORAGE_BUCKET_NAME,
        "endpoint_url": env_str("AWS_S3_ENDPOINT_URL"),
        "region_name": env_str("AWS_S3_REGION_NAME"),
        "access_key": env_secret("AWS_ACCESS_KEY_ID"),
        "secret_key": env_secret("AWS_SECRET_ACCESS_KEY"),
        "querystring_expire": env_int("WINNOW_URL_EXPIRE_SECONDS", 900, minimum=30),
        "file_overwrite": True,
        "default_acl": None,
        "addressing_style": env_str("AWS_S3_ADDRESSING_STYLE", "path"),
        "signature_version": "s3v4",
    }
    _default_storage = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": _s3_options}
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- background work: a Redis broker when named, otherwise tasks run in-process
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_DEFAULT_QUEUE = env_str("WINNOW_QUEUE", "winnow")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A run is acknowledged only when it finished, so a worker killed mid-run hands it to another.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("WINNOW_VISIBILITY_TIMEOUT", 3600, minimum=10),
    # A request that publishes a task waits at most a few seconds for an unreachable broker (the run is then kept
    # queued, marked unsent, and a worker's sweeper sends it once the broker is back).
    "socket_connect_timeout": env_int("WINNOW_BROKER_CONNECT_TIMEOUT", 2, minimum=1),
}
CELERY_BROKER_CONNECTION_TIMEOUT = CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"]
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"]
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.3, "interval_max": 0.5}
# The Redis result backend retried for about 19 s (20 tries, 1 s apart) before a publish could fail.
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": CELERY_TASK_PUBLISH_RETRY_POLICY}

# --- limits
# Image links in tag exports (Label Studio loads them without a token): labeling takes days.
WINNOW_EXPORT_URL_SECONDS = env_int("WINNOW_EXPORT_URL_SECONDS", 7 * 24 * 3600, minimum=60)
WINNOW_MAX_UPLOAD_BYTES = env_int("WINNOW_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, minimum=1024)
WINNOW_MAX_SAMPLES_PER_REQUEST = env_int("WINNOW_MAX_SAMPLES_PER_REQUEST", 10_000, minimum=1)
# Largest request body read into memory (JSON batches, upload chunks); a proxy in front should allow as much
# (client_max_body_size in deploy/nginx.conf).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("WINNOW_MAX_REQUEST_BYTES", 200 * 1024 * 1024, minimum=1024)
# Query and form parameters per request (Django's DATA_UPLOAD_MAX_NUMBER_FIELDS); more is a JSON 400 on the API.
DATA_UPLOAD_MAX_NUMBER_FIELDS = env_int("WINNOW_MAX_QUERY_PARAMS", 1000, minimum=10)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("WINNOW_MAX_FILES_PER_REQUEST", 1000, minimum=1)
# An uploaded file larger than this goes to a temporary file on disk instead of memory, so a web process's memory
# does not grow with the files in flight.
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("WINNOW_FILE_UPLOAD_MEMORY_BYTES", 4 * 1024 * 1024, minimum=0)
# Where those temporary files go: under WINNOW_VAR_DIR by default (a container's /tmp is often a small tmpfs).
FILE_UPLOAD_TEMP_DIR = env_str("WINNOW_UPLOAD_TEMP_DIR", str(VAR_DIR / "upload-tmp"))
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
# Embeddings: widest vector accepted (the map's projection and the samplers' memory grow with it), and largest
# file (CSV or .npy matrix) a chunked upload may announce. One-shot uploads stay under WINNOW_MAX_REQUEST_BYTES.
WINNOW_MAX_EMBEDDING_DIMENSION = env_int("WINNOW_MAX_EMBEDDING_DIMENSION", 4096, minimum=2)
WINNOW_MAX_EMBEDDING_FILE_BYTES = env_int("WINNOW_MAX_EMBEDDING_FILE_BYTES", 64 << 30, minimum=1024)
# The map's projection task: seconds before it is stopped (the map then says failed).
WINNOW_PROJECTION_TIME_LIMIT = env_int("WINNOW_PROJECTION_TIME_LIMIT", 900, minimum=10)
# Without a broker (tasks in-process) the projection runs in a child process of its own (curation/projection_child),
# killed after the time limit and with its address space capped at this many bytes (0: no cap).
WINNOW_PROJECTION_IN_CHILD = env_bool("WINNOW_PROJECTION_IN_CHILD", CELERY_TASK_ALWAYS_EAGER)
WINNOW_PROJECTION_MEMORY_BYTES = env_int("WINNOW_PROJECTION_MEMORY_BYTES", 4 << 30, minimum=0)
# The embedding map gets a t-SNE layout (besides PCA) up to this many samples; 0 turns it off.
WINNOW_TSNE_MAX_POINTS = env_int("WINNOW_TSNE_MAX_POINTS", 5000, minimum=0)

# --- sampling runs
# A coreset over more candidates than the threshold is split into this many shards, reduced by several workers.
WINNOW_SHARD_THRESHOLD = env_int("WINNOW_SHARD_THRESHOLD", 200_000, minimum=1)
WINNOW_SAMPLING_SHARDS = env_int("WINNOW_SAMPLING_SHARDS", 1, minimum=1)
# BLAS/OpenMP threads per worker pool process; 0: the cores shared out over the pool (winnow/celery.py).
WINNOW_BLAS_THREADS = env_int("WINNOW_BLAS_THREADS", 0, minimum=0)
# A running run whose worker sent no heartbeat for this long counts as abandoned and may be reclaimed.
WINNOW_RUN_STALE_SECONDS = env_int("WINNOW_RUN_STALE_SECONDS", 60, minimum=2)
# A run outlasting the visibility timeout is delivered again while it runs; that copy finds a fresh heartbeat
# and retries every WINNOW_RUN_STALE_SECONDS. Were that delay longer than the timeout, the waiting copy would
# itself be delivered again, and the copies would multiply.
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= 2 * WINNOW_RUN_STALE_SECONDS:
    raise ImproperlyConfigured(
        f"WINNOW_VISIBILITY_TIMEOUT={CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout']} must be more than "
        f"twice WINNOW_RUN_STALE_SECONDS={WINNOW_RUN_STALE_SECONDS}"
    )
WINNOW_RUN_MAX_ATTEMPTS = env_int("WINNOW_RUN_MAX_ATTEMPTS", 3, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "winnow.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "winnow.parsers.JSONParser",
        "winnow.parsers.MultiPartParser",
        "winnow.parsers.FormParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "EXCEPTION_HANDLER": "winnow.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Winnow API",
    "DESCRIPTION": "Datasets, samples, metadata, tags, embeddings and sampling runs. "
    "Authenticate with `Authorization: Token <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from our own static files: the docs page works without reaching a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# No API token or signed link reaches a log line (winnow/redaction.py); runserver's request lines included.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "winnow.redaction.RedactSecrets"}},
    "formatters": {
        "django.server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}", "style": "{"}
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact_secrets"]},
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact_secrets"],
        },
    },
    "loggers": {"django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
# The DEBUG error page hides DATABASE_URL, broker and cache URLs besides Django's usual secrets.
DEFAULT_EXCEPTION_REPORTER_FILTER = "winnow.redaction.SecretsHiddenFilter"

# Prediction uploads up to this many bytes are stored within the request; larger ones go to a worker.
WINNOW_PREDICTIONS_INLINE_BYTES = env_int("WINNOW_PREDICTIONS_INLINE_BYTES", 2 * 1024 * 1024, minimum=0)
WINNOW_PREDICTIONS_MAX_BYTES = env_int("WINNOW_PREDICTIONS_MAX_BYTES", 8 * 1024**3, minimum=1)
