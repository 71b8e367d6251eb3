"""Waiting for a server process to answer HTTP: the demo, the fault tests and the benchmarks start one and wait.

Imports no Django: the benchmarks and the demo's launcher call it before any settings exist.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Container

import requests

OK = range(200, 300)


class NotAnswering(Exception):
    """The URL gave no accepted answer: `exited` when the process ended first, else the time ran out."""

    def __init__(self, url: str, exited: bool):
        super().__init__(f"{url}: {'the process exited' if exited else 'no answer in time'}")
        self.url, self.exited = url, exited


def wait_for_http(
    url: str,
    process: subprocess.Popen | None = None,
    *,
    timeout: float = 60,
    statuses: Container[int] = OK,
    request_timeout: float = 2,
    interval: float = 0.3,
) -> requests.Response:
    """Poll `url` until it answers with a status in `statuses` (default 2xx) and return that answer.

    Raises NotAnswering as soon as `process` (the server, when given) exits, or once `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise NotAnswering(url, exited=True)
        try:
            response = requests.get(url, timeout=request_timeout)
        except requests.RequestException:
            pass
        else:
            if response.status_code in statuses:
                return response
        time.sleep(interval)
    raise NotAnswering(url, exited=False)
