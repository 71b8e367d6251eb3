"""The WSGI application (gunicorn, runserver).

Under runserver (the demo, the embedded default) every client connection gets a thread of its own, without
limit, and every request may open a database connection: 32 clients opening a connection per request made 32+
PostgreSQL sessions and "too many clients" 500s. There, at most WINNOW_MAX_CONCURRENT_REQUESTS requests run the
application at once; the others wait for a slot (holding no database connection), or get a JSON 503 with
Retry-After after WINNOW_REQUEST_QUEUE_SECONDS. gunicorn bounds them by workers x threads instead (no limiter).
"""

import os
import threading

from django.conf import settings  # lazy: read once get_wsgi_application() below has configured it
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "winnow.settings")
application = get_wsgi_application()

BUSY_BODY = b'{"detail": "The server is busy; try again shortly."}'


class BoundedRequests:
    """At most `limit` requests inside `app` at once, counted until the response is closed (Django's request_finished
    runs on close, and with it the database connection's release), so the database sees at most `limit` sessions."""

    def __init__(self, app, limit: int, wait_seconds: float):
        self.app = app
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._slots = threading.BoundedSemaphore(limit)

    def __call__(self, environ, start_response):
        if not self._slots.acquire(timeout=self.wait_seconds):
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Retry-After", "5"), ("Content-Length", str(len(BUSY_BODY)))],
            )
            return [BUSY_BODY]
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self._slots.release()
            raise
        return _ReleasedOnClose(result, self._slots.release)


class _ReleasedOnClose:
    def __init__(self, result, release):
        self._result = result
        self._release = release

    def __iter__(self):
        return iter(self._result)

    def close(self):
        release, self._release = self._release, None
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            if release is not None:
                release()


def _bounded(app):
    limit = settings.WINNOW_MAX_CONCURRENT_REQUESTS
    return BoundedRequests(app, limit, settings.WINNOW_REQUEST_QUEUE_SECONDS) if limit else app


application = _bounded(application)
