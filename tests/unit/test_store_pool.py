"""The Postgres connection pool's size: defaults, and the ``pool_size``/``max_overflow`` URL options
(no server needed: building an engine does no I/O)."""

from __future__ import annotations

import pytest

from antidistill.errors import ConfigError
from antidistill.store.engine import PG_MAX_OVERFLOW, PG_POOL_SIZE, Database


def test_default_pool_covers_anyio_worker_threads() -> None:
    import anyio.to_thread

    async def tokens() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    db = Database("postgresql://postgres@127.0.0.1:5432/test")
    try:
        assert db.engine.pool.size() == PG_POOL_SIZE >= anyio.run(tokens)  # type: ignore[attr-defined]
        assert db.engine.pool._max_overflow == PG_MAX_OVERFLOW  # type: ignore[attr-defined]
    finally:
        db.dispose()


def test_pool_options_in_the_url() -> None:
    db = Database("postgresql://postgres@127.0.0.1:5432/test?schema=abc&pool_size=5&max_overflow=0")
    try:
        assert db.engine.pool.size() == 5 and db.engine.pool._max_overflow == 0  # type: ignore[attr-defined]
        assert db.schema == "abc" and "pool_size" not in db.url and "schema" not in db.url
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@h/db?pool_size=0", "pool_size in the database URL must be a whole number"),
        ("postgresql://u@h/db?max_overflow=-1", "max_overflow in the database URL must be a whole number"),
        ("postgresql://u@h/db?pool_size=many", "pool_size"),
        ("sqlite:///x.db?pool_size=3", "only for PostgreSQL"),
    ],
)
def test_bad_pool_options(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Database(url)
