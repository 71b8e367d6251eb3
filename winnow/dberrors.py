"""Which database errors mean "the database cannot be reached now" rather than "this request was wrong"."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

# PostgreSQL's SQLSTATEs for a server going away, starting, or full (class 08: the connection itself failed).
_UNAVAILABLE_CODES = {"57P01", "57P02", "57P03", "53300"}


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error says the database cannot be reached now, not that the request was wrong: the
    connection was lost or refused (a restart, a crash), or the server has no connection left."""
    if isinstance(exc, InterfaceError):  # "connection already closed"
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if any(kind.__module__.split(".")[0] in ("psycopg2", "psycopg") for kind in type(cause).__mro__):
        code = getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None)
        return code is None or code in _UNAVAILABLE_CODES or code.startswith("08")
    return "database is locked" in str(exc)  # SQLite: another writer held the lock past the timeout
