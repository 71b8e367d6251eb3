"""A lost, refused or full database is a 503 with Retry-After ("try again"), not a 500; other database errors are
not mistaken for it."""

from __future__ import annotations

import psycopg2
import pytest
from django.db import IntegrityError, InterfaceError, OperationalError

from tests.private_postgres import free_port
from winnow.api import DatabaseUnavailable, _as_api_exception, exception_handler
from winnow.dberrors import database_unavailable


def _wrapped(cause: BaseException) -> OperationalError:
    error = OperationalError(str(cause))
    error.__cause__ = cause
    return error


def test_a_refused_connection_is_unavailable():
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(host="127.0.0.1", port=free_port(), user="nobody", dbname="none", connect_timeout=2)
    assert refused.value.pgcode is None
    assert database_unavailable(_wrapped(refused.value))
    response = exception_handler(_wrapped(refused.value), {})
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "database is unavailable" in response.data["detail"]


class Coded(psycopg2.OperationalError):
    def __init__(self, code):
        super().__init__(code)
        self._code = code

    @property
    def pgcode(self):
        return self._code


@pytest.mark.parametrize("code", ["57P01", "57P03", "53300", "08006"])
def test_shutdown_starting_and_full_are_unavailable(code):
    assert isinstance(_as_api_exception(_wrapped(Coded(code))), DatabaseUnavailable)


@pytest.mark.parametrize("code", ["57014", "40P01", "55P03"])  # statement timeout, deadlock, lock not available
def test_other_operational_errors_are_not(code):
    assert not database_unavailable(_wrapped(Coded(code)))


def test_closed_connection_and_sqlite_lock():
    assert database_unavailable(InterfaceError("connection already closed"))
    assert database_unavailable(OperationalError("database is locked"))
    assert not database_unavailable(OperationalError("no such table: x"))
    assert not database_unavailable(IntegrityError("duplicate key"))
