"""The Store contract: one set of tests, run on SQLite and on PostgreSQL (``-m postgres``)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from antidistill.errors import ConfigError, InvalidRequestError, NotFoundError, StoreError
from antidistill.store import TIERS, AlreadyExistsError, RejectedDataError, SqlStore, open_store
from antidistill.store.migrate import head_revision
from antidistill.store.schema import api_keys, metadata
from tests.conftest_store import fresh_store, make_event


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    with fresh_store(request.param, tmp_path) as s:
        yield s


# schema ------------------------------------------------------------------------------------
def test_migrate_twice_is_a_no_op(store: SqlStore) -> None:
    acc = store.create_account("before-remigrate")
    store.migrate()
    store.migrate()
    assert store.schema_revision() == head_revision() == "0004"
    assert store.get_account(acc.id) == acc


def test_migrations_build_exactly_the_tables_of_schema_py(store: SqlStore) -> None:
    with store.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


# accounts ----------------------------------------------------------------------------------
def test_create_get_list_accounts(store: SqlStore) -> None:
    a = store.create_account("alice", "trusted", {"org": "acme", "seats": 3})
    b = store.create_account("bob")
    assert a.id != b.id and a.status == "active" and b.tier == "standard"
    assert store.get_account(a.id) == a
    assert store.get_account("alice") == a
    assert store.get_account("nobody") is None
    assert [x.name for x in store.list_accounts()] == ["alice", "bob"]
    assert [x.name for x in store.list_accounts(limit=1, offset=1)] == ["bob"]


def test_duplicate_account_name_is_a_clear_conflict(store: SqlStore) -> None:
    store.create_account("alice")
    with pytest.raises(AlreadyExistsError, match="'alice' already exists") as info:
        store.create_account("alice", "new")
    assert isinstance(info.value, StoreError) and info.value.status == 409
    assert len(store.list_accounts()) == 1


def test_get_account_prefers_the_id_over_a_name(store: SqlStore) -> None:
    a = store.create_account("first")
    impostor = store.create_account(a.id)  # an account *named* like another's id
    assert store.get_account(a.id) == a
    assert store.get_account(impostor.id) == impostor


@pytest.mark.parametrize("tier", TIERS)
def test_every_tier_is_accepted(store: SqlStore, tier: str) -> None:
    assert store.create_account(f"acc-{tier}", tier).tier == tier


@pytest.mark.parametrize("tier", ["gold", "", "Trusted", "standard "])
def test_unknown_tiers_are_refused(store: SqlStore, tier: str) -> None:
    with pytest.raises(InvalidRequestError, match="tier must be one of") as info:
        store.create_account("x", tier)
    assert info.value.param == "tier"
    assert store.list_accounts() == []


def test_update_account_status_and_tier(store: SqlStore) -> None:
    a = store.create_account("carol")
    b = store.update_account(a.id, status="blocked", tier="new", metadata={"why": "test"})
    assert (b.status, b.tier, b.metadata) == ("blocked", "new", {"why": "test"})
    assert store.get_account(a.id) == b
    with pytest.raises(NotFoundError):
        store.update_account("acct_missing", status="blocked")
    with pytest.raises(InvalidRequestError):
        store.update_account(a.id, status="deleted")


# API keys ----------------------------------------------------------------------------------
def test_key_lifecycle_revocation_is_immediate(store: SqlStore) -> None:
    acc = store.create_account("alice")
    token, key = store.create_api_key(acc.id, label="laptop")
    assert token.startswith(f"ad-{key.id}-") and len(key.id) == 12
    found = store.authenticate(token)
    assert found is not None
    assert found[0] == key and found[1] == acc and not key.revoked
    assert store.revoke_api_key(key.id) is True
    assert store.authenticate(token) is None  # no cache: the very next call
    assert store.revoke_api_key(key.id) is False  # already revoked
    assert store.revoke_api_key("000000000000") is False
    [listed] = store.list_api_keys(acc.id)
    assert listed.revoked and listed.label == "laptop"


def test_keys_are_listed_per_account(store: SqlStore) -> None:
    a, b = store.create_account("a"), store.create_account("b")
    ka = [store.create_api_key(a.id)[1] for _ in range(2)]
    kb = store.create_api_key(b.id)[1]
    assert {k.id for k in store.list_api_keys(a.id)} == {k.id for k in ka}
    assert {k.id for k in store.list_api_keys()} == {*(k.id for k in ka), kb.id}


def test_key_for_unknown_account_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError):
        store.create_api_key("acct_missing")


def test_blocked_account_still_authenticates_with_its_status(store: SqlStore) -> None:
    acc = store.create_account("mallory")
    token, _ = store.create_api_key(acc.id)
    store.update_account(acc.id, status="blocked")
    found = store.authenticate(token)
    assert found is not None and found[1].status == "blocked"  # the gateway's policy decides


def _malformed(token: str, key_id: str) -> list[object]:
    secret = token.split("-", 2)[2]
    return [
        "",
        "ad-",
        "ad--",
        f"sk-{key_id}-{secret}",  # wrong prefix
        f"AD-{key_id}-{secret}",
        f"ad-{key_id.upper()}-{secret}",
        f"ad-{key_id}-{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",  # wrong secret
        f"ad-{key_id}-",
        f"ad-{key_id}{secret}",
        f"ad-{'f' * 12}-{secret}",  # unknown key id, right secret
        f"{token}\n",
        f" {token}",
        token + "x" * 300,
        "ad-٠١٢٣٤٥٦٧٨٩٠١-" + secret,  # Arabic-Indic digits
        f"ad-{key_id}-{secret[:10]}\u202e{secret[10:]}",
        "ad-\x00\x00\x00-\ud800",
        "🔑" * 40,
        None,
        b"ad-0123456789ab-secret",
        12345,
    ]


def test_malformed_or_wrong_tokens_return_none(store: SqlStore) -> None:
    acc = store.create_account("alice")
    token, key = store.create_api_key(acc.id)
    for bad in _malformed(token, key.id):
        assert store.authenticate(bad) is None, bad  # type: ignore[arg-type]
    assert store.authenticate(token) is not None


def test_only_a_hash_of_the_secret_is_stored(store: SqlStore) -> None:
    acc = store.create_account("alice")
    token, key = store.create_api_key(acc.id)
    secret = token.split("-", 2)[2]
    with store.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key.id)).mappings().one()
    assert row["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    for value in row.values():
        assert value is None or (token not in str(value) and secret not in str(value))


# events ------------------------------------------------------------------------------------
def test_insert_events_skips_duplicates_and_counts_rows(store: SqlStore) -> None:
    batch = [make_event(i) for i in range(10)]
    assert store.insert_events([]) == 0
    assert store.insert_events(batch) == 10
    assert store.insert_events([*batch[5:], make_event(10), make_event(10)]) == 1  # dups, incl. in-batch
    assert store.count_events() == 11
    assert store.count_events("acct_test") == 11
    assert store.count_events("acct_other") == 0


def test_iter_events_in_ts_then_id_order_across_pages(store: SqlStore) -> None:
    events = [make_event(i, ts=100.0 + (i % 4), account_id=f"acct_{i % 2}") for i in range(23)]
    store.insert_events(list(reversed(events)))
    expected = sorted(events, key=lambda e: (e.ts, e.id))
    for batch in (1, 2, 5, 1000):
        assert list(store.iter_events(batch=batch)) == expected
    assert list(store.iter_events(since_ts=102.0, batch=3)) == [e for e in expected if e.ts >= 102.0]
    assert list(store.iter_events(account_id="acct_1", batch=4)) == [
        e for e in expected if e.account_id == "acct_1"
    ]
    assert list(store.iter_events(since_ts=1e12)) == []


def test_events_round_trip_unicode_exactly(store: SqlStore) -> None:
    messages = [
        {"role": "system", "content": "Réfléchis étape par étape.\nThink step by step."},
        {"role": "user", "content": "请一步一步地思考：1+1=? 🤔 — пошагово, ステップ・バイ・ステップ"},
        {"role": "user", "content": [{"type": "text", "text": 'مرحبا \u200b zero-width, \t tab "quote"'}]},
    ]
    ev = make_event(
        1,
        request={"messages": messages},
        params={"stop": ["\n\n", "。"], "logit_bias": {"50256": -100}, "nested": {"a": [1, 2.5, None, True]}},
        response="答案是 2。😀",
        user_agent="Mozilla/5.0 (ünïcödé)",
        stream=True,
        watermark_key_id="wm-acct-1",
        watermark_config_hash="c0ffee",
        error_code=None,
    )
    store.insert_events([ev])
    assert list(store.iter_events()) == [ev]


def test_values_a_database_would_refuse_are_cleaned_not_fatal(store: SqlStore) -> None:
    ev = make_event(
        1,
        request={"messages": [{"role": "user", "content": "nul\x00 and lone \ud800 surrogate"}]},
        params={"temperature": float("nan"), "top_p": float("inf")},
        response="bad\x00byte",
        user_agent="x" * 10_000,
    )
    assert store.insert_events([ev, make_event(2)]) == 2
    [got, _] = list(store.iter_events())
    assert got.request == {"messages": [{"role": "user", "content": "nul\ufffd and lone ? surrogate"}]}
    assert got.params == {"temperature": "NaN", "top_p": "Infinity"}
    assert got.response == "bad\ufffdbyte" and got.user_agent == "x" * 10_000


@pytest.mark.parametrize(
    "bad",
    [{"latency_ms": float("nan")}, {"status": None}, {"ts": None}],
    ids=["nan", "null-status", "null-ts"],
)
def test_a_row_the_database_refuses_is_a_rejected_data_error(store: SqlStore, bad: dict[str, object]) -> None:
    with pytest.raises(RejectedDataError):
        store.insert_events([make_event(1), make_event(2, **bad)])
    assert store.count_events() == 0  # one transaction per batch
    assert store.insert_events([make_event(1)]) == 1  # and the store is still usable


# concurrency -------------------------------------------------------------------------------
def test_thread_safe_under_concurrent_use(store: SqlStore) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            acc = store.create_account(f"worker-{n}")
            token, key = store.create_api_key(acc.id)
            for j in range(20):
                store.insert_events([make_event(n * 1000 + j * 5 + k) for k in range(5)])
                assert store.authenticate(token) is not None
            store.revoke_api_key(key.id)
            assert store.authenticate(token) is None
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert store.count_events() == 8 * 100
    assert len(store.list_accounts()) == 8


# URLs and failures (no server needed) ------------------------------------------------------
def test_open_store_resolves_schemes_through_the_registry(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'a.db'}")
    s.migrate()
    assert (tmp_path / "nested" / "dir" / "a.db").exists()
    s.close()
    for url in ("postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"):
        pg = open_store(url)
        assert pg.url.startswith("postgresql+psycopg://")
        pg.close()
    with pytest.raises(ConfigError, match="unknown database URL scheme 'mysql'"):
        open_store("mysql://root:pw@localhost/db")


def test_unreachable_postgres_fails_fast_without_leaking_the_password() -> None:
    store = open_store("postgresql://app:s3cr3t-pw@127.0.0.1:1/nowhere")
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.migrate()
    assert time.monotonic() - start < 6
    assert "127.0.0.1:1/nowhere" in info.value.message and "s3cr3t-pw" not in info.value.message
    assert "s3cr3t-pw" not in store.url
    store.close()


def test_watermark_key_records_are_idempotent_and_public(store: SqlStore) -> None:
    record = {
        "key_id": "wk_0123456789abcdef",
        "scope": "account",
        "ident": "acc1",
        "scheme": "gumbel",
        "version": 1,
        "scheme_params": {"window": 4},
        "tokenizer": "t",
        "vocab_size": 10,
    }
    assert store.record_watermark_key(record, "h" * 64) is True
    assert store.record_watermark_key(record, "h" * 64) is False
    store.record_watermark_key({**record, "key_id": "wk_1", "version": 2}, "g" * 64)
    store.record_watermark_key({**record, "key_id": "wk_2", "ident": "acc2"}, "f" * 64)
    mine = store.watermark_key_records(scope="account", ident="acc1")
    assert [r["version"] for r in mine] == [1, 2]
    assert mine[0] == record
    assert len(store.watermark_key_records()) == 3
