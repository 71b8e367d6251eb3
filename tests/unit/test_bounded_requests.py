"""winnow.wsgi.BoundedRequests: at most `limit` requests inside the application until their responses close."""

from __future__ import annotations

import threading

from winnow.wsgi import BUSY_BODY, BoundedRequests


class Response:
    def __init__(self, log):
        self.log = log

    def __iter__(self):
        return iter([b"ok"])

    def close(self):
        self.log.append("closed")


def test_a_slot_is_held_until_the_response_closes_then_others_wait_or_get_a_503():
    log: list = []
    inside = threading.Event()
    release = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [])
        if environ.get("slow"):
            inside.set()
            release.wait(10)
        return Response(log)

    bounded = BoundedRequests(app, limit=1, wait_seconds=0.2)
    statuses: list = []

    def start_response(status, headers):
        statuses.append((status, dict(headers)))

    first = bounded({}, start_response)  # holds the only slot until closed
    assert b"".join(first) == b"ok"
    busy = bounded({}, start_response)  # waits 0.2 s for the slot, then is refused
    assert busy == [BUSY_BODY] and statuses[-1][0].startswith("503") and statuses[-1][1]["Retry-After"] == "5"
    first.close()
    assert log == ["closed"]
    first.close()  # a second close releases nothing more
    second = bounded({}, start_response)
    assert statuses[-1][0] == "200 OK"
    second.close()

    # A request waiting for a slot gets it as soon as the running one finishes.
    holder: list = []
    running = threading.Thread(target=lambda: holder.append(bounded({"slow": True}, start_response)))
    running.start()
    inside.wait(10)
    bounded.wait_seconds = 10
    waiter: list = []
    waiting = threading.Thread(target=lambda: waiter.append(bounded({}, start_response)))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # no slot yet
    release.set()
    running.join(10)
    holder[0].close()
    waiting.join(10)
    assert b"".join(waiter[0]) == b"ok"
    waiter[0].close()


def test_a_failing_application_gives_its_slot_back():
    def app(environ, start_response):
        raise RuntimeError("boom")

    bounded = BoundedRequests(app, limit=1, wait_seconds=0.1)
    for _ in range(3):
        try:
            bounded({}, lambda *a: None)
        except RuntimeError:
            pass
    assert bounded._slots.acquire(timeout=0.1)
