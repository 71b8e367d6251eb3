"""winnow.celery.sweep_while_up: the worker's background sweepers (lost projections, abandoned sampling runs)."""

from __future__ import annotations

import logging
import threading

from winnow.celery import sweep_while_up


def test_a_sweeper_keeps_going_after_a_failing_sweep(caplog):
    calls = []
    done = threading.Event()

    def sweep():
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("broker away")
        if len(calls) == 3:
            done.set()
            threading.Event().wait()  # park the daemon thread: no more sweeps for the rest of the session

    with caplog.at_level(logging.WARNING, logger="winnow.celery"):
        thread = sweep_while_up("test-sweeper", 0.01, sweep, what="sweeping test things")
        assert done.wait(timeout=30)
    assert thread.name == "test-sweeper" and thread.daemon
    assert calls == [0, 1, 2]
    assert "sweeping test things failed" in caplog.text
