"""Settings come from the environment; a bad value fails at start with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_settings(tmp_path, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG", "AWS_STORAGE_BUCKET_NAME"}
    }
    clean.update({"WINNOW_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "winnow.settings"})
    clean.update(env)
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.DEBUG, "
        "s.STORAGES['default']['BACKEND'])"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_embedded_default(tmp_path):
    result = _load_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "True",
        "False",
        "django.core.files.storage.FileSystemStorage",
    ]
    # The development secret is generated once and kept.
    key_file = tmp_path / "var" / "secret_key"
    first = key_file.read_text()
    assert _load_settings(tmp_path).returncode == 0
    assert key_file.read_text() == first


def test_production_configuration(tmp_path):
    result = _load_settings(
        tmp_path,
        DATABASE_URL="postgres://u@db:5432/w",
        CELERY_BROKER_URL="redis://r:6379/0",
        SECRET_KEY="s" * 50,
        AWS_STORAGE_BUCKET_NAME="bucket",
        DEBUG="0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "False",
        "False",
        "storages.backends.s3.S3Storage",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DATABASE_URL": "postgres://u@db/w"}, "SECRET_KEY (or SECRET_KEY_FILE) is required"),
        ({"DATABASE_URL": "nonsense://x", "SECRET_KEY": "k"}, "DATABASE_URL is not a valid database URL"),
        ({"WINNOW_MAX_UPLOAD_BYTES": "lots"}, "WINNOW_MAX_UPLOAD_BYTES='lots' is not an integer"),
        ({"SECRET_KEY_FILE": "/nonexistent/key"}, "SECRET_KEY_FILE='/nonexistent/key' cannot be read"),
        ({"CACHE_URL": "memcached://x"}, "CACHE_URL='memcached://x' must be a redis:// URL"),
        ({"WINNOW_BEHIND_TLS_PROXY": "sure"}, "WINNOW_BEHIND_TLS_PROXY='sure' is not a boolean"),
        ({"WINNOW_DB_CONN_MAX_AGE": "forever"}, "WINNOW_DB_CONN_MAX_AGE='forever' is not an integer"),
        ({"WINNOW_DB_CONN_MAX_AGE": "-1"}, "WINNOW_DB_CONN_MAX_AGE=-1 must be at least 0"),
        ({"WINNOW_DB_CONN_HEALTH_CHECKS": "often"}, "WINNOW_DB_CONN_HEALTH_CHECKS='often' is not a boolean"),
        ({"WINNOW_FILE_UPLOAD_MEMORY_BYTES": "2M"}, "WINNOW_FILE_UPLOAD_MEMORY_BYTES='2M' is not an integer"),
        (
            {"WINNOW_DB_STATEMENT_TIMEOUT_MS": "-5", "DATABASE_URL": "postgres://u@db/w", "SECRET_KEY": "k"},
            "WINNOW_DB_STATEMENT_TIMEOUT_MS=-5 must be at least 0",
        ),
        (
            {"WINNOW_VISIBILITY_TIMEOUT": "100", "WINNOW_RUN_STALE_SECONDS": "60"},
            "WINNOW_VISIBILITY_TIMEOUT=100 must be more than twice WINNOW_RUN_STALE_SECONDS=60",
        ),
    ],
)
def test_bad_values_fail_naming_the_variable(tmp_path, env, message):
    result = _load_settings(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_secret_key_from_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    result = _load_settings(tmp_path, DATABASE_URL="postgres://u@db/w", SECRET_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr


def _settings_values(tmp_path, expression: str, argv: list[str] | None = None, **env):
    """Print repr(expression) evaluated on the settings of a fresh interpreter, with sys.argv = argv."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WINNOW_DB_", "DATABASE_URL", "SECRET_KEY"))}
    clean.update({"WINNOW_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "winnow.settings"}, **env)
    code = (
        f"import sys; sys.argv = {argv or ['manage.py']!r}; import django; django.setup(); "
        f"from django.conf import settings as s; print(repr({expression}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip().splitlines()[-1])  # our own repr of plain values


POSTGRES = {"DATABASE_URL": "postgres://u@db:5432/w", "SECRET_KEY": "k" * 50}
DB_OPTIONS = "(s.DATABASES['default']['CONN_MAX_AGE'], s.DATABASES['default']['CONN_HEALTH_CHECKS'])"


def test_database_connections_are_reused_as_configured(tmp_path):
    assert _settings_values(tmp_path, DB_OPTIONS, **POSTGRES) == (60, True)
    assert _settings_values(
        tmp_path, DB_OPTIONS, WINNOW_DB_CONN_MAX_AGE="0", WINNOW_DB_CONN_HEALTH_CHECKS="false", **POSTGRES
    ) == (0, False)
    assert (
        _settings_values(
            tmp_path,
            "s.DATABASES['default'].get('OPTIONS', {}).get('options')",
            WINNOW_DB_STATEMENT_TIMEOUT_MS="30000",
            **POSTGRES,
        )
        == "-c statement_timeout=30000"
    )


def test_runserver_closes_its_connection_after_each_request(tmp_path):
    """runserver runs a thread per client connection: a kept connection would outlive its thread, idle."""
    argv = ["manage.py", "runserver"]
    assert _settings_values(tmp_path, DB_OPTIONS, argv, WINNOW_DB_CONN_MAX_AGE="300", **POSTGRES)[0] == 0
    # The embedded default (SQLite) never keeps one either.
    assert _settings_values(tmp_path, "s.DATABASES['default'].get('CONN_MAX_AGE', 0)", argv) == 0
    assert _settings_values(tmp_path, "s.DATABASES['default'].get('CONN_MAX_AGE', 0)") == 0


def test_runserver_bounds_the_requests_running_at_once(tmp_path):
    """runserver's threads are unbounded: its requests are not (winnow/wsgi.py); gunicorn's threads bound them."""
    limits = "(s.WINNOW_MAX_CONCURRENT_REQUESTS, s.WINNOW_REQUEST_QUEUE_SECONDS)"
    assert _settings_values(tmp_path, limits, ["manage.py", "runserver"]) == (8, 60)
    assert _settings_values(tmp_path, limits, ["manage.py", "runserver"], WINNOW_MAX_CONCURRENT_REQUESTS="3") == (3, 60)
    assert _settings_values(tmp_path, limits, ["gunicorn"], **POSTGRES) == (0, 60)
    bounded = "type(__import__('winnow.wsgi').wsgi.application).__name__"
    assert _settings_values(tmp_path, bounded, ["manage.py", "runserver"]) == "BoundedRequests"
    assert _settings_values(tmp_path, bounded, ["gunicorn"]) == "WSGIHandler"


def test_the_embedded_default_projects_in_a_bounded_child_process(tmp_path):
    values = "(s.WINNOW_PROJECTION_IN_CHILD, s.WINNOW_PROJECTION_MEMORY_BYTES, s.WINNOW_PROJECTION_TIME_LIMIT)"
    assert _settings_values(tmp_path, values, CELERY_BROKER_URL="") == (True, 4 << 30, 900)
    assert _settings_values(tmp_path, values, CELERY_BROKER_URL="redis://r:6379/0")[0] is False  # a worker does
    assert _settings_values(
        tmp_path, values, CELERY_BROKER_URL="", WINNOW_PROJECTION_MEMORY_BYTES="0", WINNOW_PROJECTION_TIME_LIMIT="60"
    ) == (True, 0, 60)


def test_upload_limits_and_temporary_directory(tmp_path):
    expression = "(s.FILE_UPLOAD_MAX_MEMORY_SIZE, str(s.FILE_UPLOAD_TEMP_DIR), s.DATA_UPLOAD_MAX_MEMORY_SIZE)"
    memory, temp_dir, request = _settings_values(tmp_path, expression)
    assert memory == 4 * 1024 * 1024 and request == 200 * 1024 * 1024
    assert Path(temp_dir) == tmp_path / "var" / "upload-tmp" and Path(temp_dir).is_dir()
    elsewhere = tmp_path / "uploads"
    assert _settings_values(
        tmp_path,
        expression,
        WINNOW_UPLOAD_TEMP_DIR=str(elsewhere),
        WINNOW_FILE_UPLOAD_MEMORY_BYTES="0",
        WINNOW_MAX_REQUEST_BYTES="65536",
    ) == (0, str(elsewhere), 65536)
    assert elsewhere.is_dir()


# --- gunicorn.conf.py: read the way gunicorn reads it (executed as a file), from the environment

GUNICORN_CONF = ROOT / "winnow" / "gunicorn.conf.py"


def _gunicorn_conf(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "WEB_CONCURRENCY", "FORWARDED"))}
    clean.update(env)
    code = (
        f"import runpy; c = runpy.run_path({str(GUNICORN_CONF)!r}); "
        "print(repr({k: c[k] for k in ('worker_class', 'workers', 'threads', 'timeout', 'max_requests', "
        "'max_requests_jitter', 'forwarded_allow_ips')}))"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_gunicorn_configuration_from_the_environment():
    result = _gunicorn_conf()
    assert result.returncode == 0, result.stderr
    defaults = eval(result.stdout)
    assert defaults == {
        "worker_class": "gthread",
        "workers": 3,
        "threads": 4,
        "timeout": 120,
        "max_requests": 2000,
        "max_requests_jitter": 200,
        "forwarded_allow_ips": "127.0.0.1,::1",
    }
    result = _gunicorn_conf(
        WEB_CONCURRENCY="5",
        GUNICORN_THREADS="8",
        GUNICORN_TIMEOUT="300",
        GUNICORN_MAX_REQUESTS="0",
        FORWARDED_ALLOW_IPS="*",
    )
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout) == {
        **defaults,
        "workers": 5,
        "threads": 8,
        "timeout": 300,
        "max_requests": 0,
        "max_requests_jitter": 1,
        "forwarded_allow_ips": "*",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GUNICORN_THREADS": "many"}, "GUNICORN_THREADS='many' is not an integer"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY=0 must be at least 1"),
        ({"GUNICORN_TIMEOUT": "1"}, "GUNICORN_TIMEOUT=1 must be at least 10"),
        ({"WINNOW_DB_CHECK_CONNECTIONS": "perhaps"}, "WINNOW_DB_CHECK_CONNECTIONS='perhaps' is not a boolean"),
    ],
)
def test_gunicorn_bad_values_name_the_variable(env, message):
    result = _gunicorn_conf(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_connection_budget_arithmetic():
    import runpy

    budget_error = runpy.run_path(str(GUNICORN_CONF))["connection_budget_error"]
    assert budget_error(workers=3, threads=4, others=20, max_connections=100, reserved=3) is None
    assert budget_error(workers=8, threads=11, others=9, max_connections=100, reserved=3) is None  # 97: just fits
    message = budget_error(workers=8, threads=11, others=10, max_connections=100, reserved=3)
    assert "WEB_CONCURRENCY=8 x GUNICORN_THREADS=11 + WINNOW_DB_OTHER_CONNECTIONS=10 = 98" in message
    assert "PostgreSQL allows 97" in message


def test_gunicorn_refuses_to_start_when_connections_would_not_fit(django_db_setup, monkeypatch):
    """Against the test database: a budget larger than its max_connections stops gunicorn before it serves."""
    import runpy

    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "postgresql":  # the test database pytest made, not DATABASE_URL's (may not exist)
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
        monkeypatch.setenv("DATABASE_URL", f"postgres://{auth}@{host}/{db['NAME']}")
    conf = runpy.run_path(str(GUNICORN_CONF))
    limits = conf["_database_limits"]()
    if limits is None:
        pytest.skip("needs DATABASE_URL on PostgreSQL")
    max_connections, reserved = limits

    class Server:
        class cfg:  # gunicorn's attribute name
            workers, threads = max_connections, 1

        class log:
            warning = staticmethod(print)

    with pytest.raises(SystemExit, match="database connections, but PostgreSQL allows"):
        conf["on_starting"](Server)
    Server.cfg.workers = 1
    assert conf["on_starting"](Server) is None
