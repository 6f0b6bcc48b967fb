"""One SQLAlchemy engine per store: URL rules, per-engine connection setup, transactions, errors.

- ``sqlite:///path``: parent directory created; every connection gets WAL, ``busy_timeout`` and
  foreign keys. SQLAlchemy emits ``BEGIN`` itself (the documented recipe; the sqlite3 module's
  legacy mode would run SELECTs and DDL outside transactions), and writes use ``BEGIN IMMEDIATE``
  so that a writer waits for the lock (``busy_timeout``) instead of failing on a read-to-write
  upgrade. Writes of one process are also serialized by a lock, so threads never contend in SQLite.
  ``sqlite://`` (memory) is one shared connection, fully serialized: for tests only.
- ``postgres://``, ``postgresql://``: rewritten to ``postgresql+psycopg://``; ``connect_timeout=5``
  so that an absent server fails fast; ``pool_pre_ping`` survives server restarts. An optional
  schema (``?schema=name`` in the URL or ``schema=``) is put first on the ``search_path``.
  The pool keeps up to ``pool_size`` (default 40) connections open, plus ``max_overflow`` (default
  10) that are closed after use; both can be set in the URL (``?pool_size=20&max_overflow=5``). The
  default matches AnyIO's 40 worker threads, through which the gateway makes its store calls: with
  the earlier 10, requests beyond the 10th in flight opened and closed a connection each (a backend
  process forked by the server every time), which cut a gateway's throughput on Postgres by a third.
  Plan ``max_connections`` for replicas x (pool_size + max_overflow) + workers.

Every database failure leaves as a StoreError that names the URL without its password.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from antidistill.errors import AntidistillError, ConfigError, StoreError
from antidistill.store.base import RejectedDataError
from antidistill.store.codec import dumps_json

PG_CONNECT_TIMEOUT_S = 5
SQLITE_BUSY_TIMEOUT_MS = 10_000
_PG_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BEGIN_OPTION = "antidistill_begin"
PG_POOL_SIZE = 40
PG_MAX_OVERFLOW = 10
_POOL_OPTIONS = ("pool_size", "max_overflow")
# errors that say "these rows are wrong", as opposed to "the database is unavailable"
_DATA_ERRORS = (exc.DataError, exc.IntegrityError)


def normalize_url(url: str) -> tuple[URL, str | None]:
    """The SQLAlchemy URL to connect with, and the Postgres schema taken out of its query."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as e:
        raise ConfigError(f"not a database URL: {url!r}") from e
    driver = _PG_DRIVERS.get(parsed.drivername, parsed.drivername)
    parsed = parsed.set(drivername=driver)
    schema = parsed.query.get("schema")
    if isinstance(schema, tuple):
        schema = schema[-1]
    return parsed.difference_update_query(["schema"]), schema


def _pool_options(url: URL) -> tuple[URL, dict[str, int]]:
    """``pool_size`` / ``max_overflow`` taken out of the URL's query (PostgreSQL only)."""
    found: dict[str, int] = {}
    for name in _POOL_OPTIONS:
        value = url.query.get(name)
        if value is None:
            continue
        raw = value[-1] if isinstance(value, tuple) else value
        if not raw.isdigit() or (name == "pool_size" and int(raw) < 1):  # max_overflow may be 0
            raise ConfigError(f"{name} in the database URL must be a whole number >= 1 (got {raw!r})")
        found[name] = int(raw)
    if found and url.get_backend_name() != "postgresql":
        raise ConfigError(f"{', '.join(found)} in the database URL: only for PostgreSQL")
    return url.difference_update_query(list(_POOL_OPTIONS)), found


def display_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


class Database:
    """The engine of one store plus the two ways to use it: ``read()`` and ``write()``."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        parsed, url_schema = normalize_url(url)
        parsed, self._pool = _pool_options(parsed)
        self.schema = schema or url_schema
        self.dialect = parsed.get_backend_name()
        self.url = display_url(parsed)
        self._password = parsed.password
        if self.schema is not None and (
            self.dialect != "postgresql" or not _SCHEMA_RE.fullmatch(self.schema)
        ):
            raise ConfigError(f"schema {self.schema!r} needs PostgreSQL and a name like [a-z_][a-z0-9_]*")
        self._write_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._read_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(parsed)
        elif self.dialect == "postgresql":
            self.engine = self._postgres_engine(parsed)
        else:
            raise ConfigError(f"unsupported database {self.url!r}: use sqlite:/// or postgresql://")

    # engines -------------------------------------------------------------------------------
    def _sqlite_engine(self, url: URL) -> Engine:
        path = url.database or ""
        memory = path in ("", ":memory:")
        lock = threading.RLock()
        self._write_lock = lock
        if memory:
            self._read_lock = lock
            engine = sa.create_engine(
                url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
                json_serializer=dumps_json,
            )
        else:
            try:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the directory of {self.url}: {e}") from e
            engine = sa.create_engine(
                url, connect_args={"check_same_thread": False}, json_serializer=dumps_json, pool_size=8
            )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_begin)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = FULL")  # a commit survives a power cut, not just a crash
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(_BEGIN_OPTION, '')}".strip())

        return engine

    def _postgres_engine(self, url: URL) -> Engine:
        engine = sa.create_engine(
            url,
            connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "antidistill"},
            pool_pre_ping=True,
            pool_size=self._pool.get("pool_size", PG_POOL_SIZE),
            max_overflow=self._pool.get("max_overflow", PG_MAX_OVERFLOW),
            json_serializer=dumps_json,
        )
        schema = self.schema
        if schema is not None:

            @event.listens_for(engine, "connect", insert=True)
            def _search_path(dbapi_conn: Any, _record: Any) -> None:
                autocommit = dbapi_conn.autocommit
                dbapi_conn.autocommit = True
                with dbapi_conn.cursor() as cur:
                    cur.execute(f'SET SESSION search_path TO "{schema}"')
                dbapi_conn.autocommit = autocommit

        return engine

    # use -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a (read) transaction that is rolled back at the end."""
        with self.errors(), self._read_lock, self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a transaction committed at the end (rolled back on error)."""
        with self.errors(), self._write_lock, self.engine.connect() as conn:
            conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Translate SQLAlchemy/driver errors into StoreError (our own errors pass unchanged)."""
        try:
            yield
        except AntidistillError:
            raise
        except _DATA_ERRORS as e:
            raise RejectedDataError(f"{self.url} refused the data: {self._reason(e)}") from e
        except (exc.OperationalError, exc.InterfaceError) as e:
            raise StoreError(f"database unavailable at {self.url}: {self._reason(e)}") from e
        except exc.DBAPIError as e:
            raise StoreError(f"database error at {self.url}: {self._reason(e)}") from e
        except exc.StatementError as e:  # raised while binding parameters (our side): bad data
            raise RejectedDataError(f"cannot encode a value for {self.url}: {self._reason(e)}") from e
        except (exc.SQLAlchemyError, OSError) as e:
            raise StoreError(f"database unavailable at {self.url}: {self._reason(e)}") from e

    def _reason(self, e: BaseException) -> str:
        orig = getattr(e, "orig", None)
        text = str(orig if orig is not None else e).strip().splitlines()
        reason = text[0] if text else type(e).__name__
        if self._password:
            reason = reason.replace(self._password, "***")
        return reason[:300]

    def dispose(self) -> None:
        self.engine.dispose()
