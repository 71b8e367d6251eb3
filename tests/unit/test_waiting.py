"""winnow.waiting: poll a URL until it answers, the process exits, or the time runs out."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from winnow.waiting import NotAnswering, wait_for_http


@pytest.fixture
def server():
    """A local HTTP server answering each path's status: /ok 200, /degraded 503."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def alive():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_an_accepted_answer_returns_it(server, alive):
    assert wait_for_http(f"{server}/ok", alive, timeout=10).status_code == 200
    assert wait_for_http(f"{server}/degraded", alive, timeout=10, statuses=(200, 503)).status_code == 503


def test_an_answer_outside_the_statuses_is_waited_past_until_the_timeout(server, alive):
    with pytest.raises(NotAnswering) as caught:
        wait_for_http(f"{server}/degraded", alive, timeout=0.5, interval=0.05)
    assert not caught.value.exited


def test_an_exited_process_stops_the_wait(server):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(NotAnswering) as caught:
        wait_for_http(f"{server}/degraded", proc, timeout=30)
    assert caught.value.exited


def _closed_port_url() -> str:
    """A URL on a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


def test_nothing_listening_is_a_timeout(alive):
    with pytest.raises(NotAnswering) as caught:
        wait_for_http(_closed_port_url(), alive, timeout=0.5, interval=0.05)
    assert not caught.value.exited
