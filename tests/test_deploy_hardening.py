"""Tokens and deployment (issue 14): token management, log redaction, the DEBUG page, TLS settings, sign-in
throttling, `check --deploy`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from django.test import Client

from tests.conftest import ROOT
from winnow.redaction import RedactSecrets, SecretsHiddenFilter, redact

pytestmark = pytest.mark.django_db
SECRET_WORD = "hun" + "ter2"  # built, so the page's source listing of this file does not contain it


def test_tokens_and_signed_links_never_reach_a_log_line(caplog):
    key = "wnw_abcdef12_SECRETSECRETSECRET"
    lines = [
        f'"GET /v1/datasets?token={key}&shared=False HTTP/1.1" 200 2',
        '"GET /files/x.jpg?user=3&expires=1900000000&signature=0123456789abcdef HTTP/1.1" 200 5',
        "https://s3.example/b/k?X-Amz-Credential=AKIA/x&X-Amz-Signature=deadbeef",
        f"Authorization: Token {key}",
    ]
    for line in lines:
        cleaned = redact(line)
        assert "SECRET" not in cleaned and "0123456789abcdef" not in cleaned and "deadbeef" not in cleaned
        assert "AKIA" not in cleaned and "[redacted]" in cleaned
    record = logging.LogRecord("django.server", logging.INFO, __file__, 1, '"%s" %s %s', (lines[0], "200", "2"), None)
    RedactSecrets().filter(record)
    assert key not in record.getMessage() and "token=[redacted]" in record.getMessage()


def test_the_configured_handlers_redact(settings):
    handlers = settings.LOGGING["handlers"]
    assert all("redact_secrets" in handler.get("filters", []) for handler in handlers.values())
    assert settings.LOGGING["loggers"]["django.server"]["handlers"] == ["django.server"]


def test_the_debug_page_hides_urls_with_passwords(rf):
    reporter = SecretsHiddenFilter()
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "AWS_SECRET_ACCESS_KEY", "SECRET_KEY"):
        assert reporter.cleanse_setting(name, "postgres://u:hunter2@db/w") == reporter.cleansed_substitute
    request = rf.get("/", HTTP_X_PLAIN="ok")
    request.META["DATABASE_URL"] = "postgres://u:hunter2@db/w"
    meta = reporter.get_safe_request_meta(request)
    assert meta["DATABASE_URL"] == reporter.cleansed_substitute and meta["HTTP_X_PLAIN"] == "ok"


def test_debug_error_page_shows_no_database_password(settings, monkeypatch):
    settings.DEBUG = True
    monkeypatch.setattr(settings, "DATABASE_URL", "postgres://winnow:" + SECRET_WORD + "@db:5432/winnow", raising=False)
    from django.views import debug

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    request = Client().get("/login").wsgi_request
    request.META["DATABASE_URL"] = "postgres://winnow:" + SECRET_WORD + "@db:5432/winnow"
    html = debug.technical_500_response(request, *exc_info).content.decode()
    assert "boom" in html and SECRET_WORD not in html


def test_sign_in_is_throttled(django_user_model):
    django_user_model.objects.create_user("lena", password="right-password-123")
    client = Client()
    for _ in range(12):
        client.post("/login", {"username": "lena", "password": "wrong"})
    response = client.post("/login", {"username": "lena", "password": "right-password-123"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another user from the same address is not locked out.
    django_user_model.objects.create_user("mia", password="right-password-456")
    other = Client().post("/login", {"username": "mia", "password": "right-password-456"})
    assert other.status_code == 302


def test_admin_sign_in_is_throttled(django_user_model):
    django_user_model.objects.create_superuser("root", password="right-password-789")
    client = Client()
    for _ in range(12):
        client.post("/admin/login/", {"username": "root", "password": "wrong"})
    response = client.post("/admin/login/", {"username": "root", "password": "right-password-789"})
    assert response.status_code == 429


def _production_env(**extra) -> dict:
    # DJANGO_ALLOW_ASYNC_UNSAFE: set for the browser tests (Playwright's loop) in this process, never in deployment.
    skip = ("WINNOW_", "DEBUG", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/winnow"),
        SECRET_KEY="k3" + "x7Qp9-Lm2_zV8r" * 5,
        DEBUG="false",
        ALLOWED_HOSTS="winnow.example.org",
        CSRF_TRUSTED_ORIGINS="https://winnow.example.org",
        WINNOW_BEHIND_TLS_PROXY="true",
        WINNOW_VAR_DIR=os.environ.get("WINNOW_VAR_DIR", str(ROOT / "var" / "test")),
        **extra,
    )
    return env


def test_check_deploy_is_clean_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_behind_tls_cookies_are_secure_and_pages_get_hsts_and_csp(settings, django_user_model):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CONTENT_SECURITY_POLICY = "default-src 'self'; script-src 'self'"
    response = Client().get("/login", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"].startswith("max-age=3600")
    assert response["Content-Security-Policy"].startswith("default-src 'self'")
    assert response.cookies["csrftoken"]["secure"]
