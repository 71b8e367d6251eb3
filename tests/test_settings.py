"""Settings come from the environment; a bad value fails at start with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_settings(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if k not in {
        "DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG", "AWS_STORAGE_BUCKET_NAME"}}
    clean.update({"WINNOW_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "winnow.settings"})
    clean.update(env)
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.DEBUG, "
            "s.STORAGES['default']['BACKEND'])")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_embedded_default(tmp_path):
    result = _load_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3", "True", "False", "django.core.files.storage.FileSystemStorage"]
    # The development secret is generated once and kept.
    key_file = tmp_path / "var" / "secret_key"
    first = key_file.read_text()
    assert _load_settings(tmp_path).returncode == 0
    assert key_file.read_text() == first


def test_production_configuration(tmp_path):
    result = _load_settings(
        tmp_path, DATABASE_URL="postgres://u@db:5432/w", CELERY_BROKER_URL="redis://r:6379/0",
        SECRET_KEY="s" * 50, AWS_STORAGE_BUCKET_NAME="bucket", DEBUG="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql", "False", "False", "storages.backends.s3.S3Storage"]


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
        ({"WINNOW_VISIBILITY_TIMEOUT": "100", "WINNOW_RUN_STALE_SECONDS": "60"},
         "WINNOW_VISIBILITY_TIMEOUT=100 must be more than twice WINNOW_RUN_STALE_SECONDS=60"),
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
