"""BLAS / OpenMP threads are set on purpose in a real worker's pool processes (winnow/celery.py)."""

from __future__ import annotations

import pytest

from winnow.celery import blas_threads_for, thread_pools

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def pools_of_a_pool_process() -> list[dict]:
    pools = thread_pools.delay().get(timeout=60)
    assert any(p["user_api"] == "blas" for p in pools), pools  # numpy's BLAS is loaded there
    return pools


def test_configured_blas_threads_reach_every_pool_process(fresh_worker):
    fresh_worker(concurrency=2, WINNOW_BLAS_THREADS="3")
    for _ in range(4):  # either pool process may answer: all must say 3
        assert {p["num_threads"] for p in pools_of_a_pool_process()} == {3}


def test_default_shares_the_cores_over_the_pool(fresh_worker):
    fresh_worker(concurrency=2, WINNOW_BLAS_THREADS="0")
    expected = blas_threads_for(2)
    assert {p["num_threads"] for p in pools_of_a_pool_process()} == {expected}


def test_blas_threads_for():
    assert blas_threads_for(4, cores=2) == 1
    assert blas_threads_for(1, cores=8) == 8
    assert blas_threads_for(3, cores=8) == 2
    assert blas_threads_for(3, configured=5, cores=8) == 5
