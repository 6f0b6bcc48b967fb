"""Key derivation: stable public ids, separation of scopes/idents/versions/schemes, no secret leaks."""

from __future__ import annotations

import json
import pickle

import pytest

from antidistill.errors import ConfigError
from antidistill.watermark import Keyring, derive_key
from antidistill.watermark.keys import KeyRecord

MASTER = bytes(range(32))


def test_derivation_is_stable_and_public_fields_are_kept() -> None:
    a = derive_key(MASTER, "account", "acct-1", 1, tokenizer="smollm2", vocab_size=49152)
    b = derive_key(MASTER, "account", "acct-1", 1, tokenizer="smollm2", vocab_size=49152)
    assert a == b and a.key_id == b.key_id and a.config_hash == b.config_hash
    assert a.key_id.startswith("wk_") and len(a.key_id) == 3 + 16
    assert len(a.secret) == 32
    assert a.scheme == "gumbel" and a.params == {"window": 4}
    assert a.tokenizer == "smollm2" and a.vocab_size == 49152
    # pinned values: a change of the derivation would orphan every key (and all evidence) issued so far
    assert a.key_id == "wk_76b01e1796d0e30a"
    assert a.secret.hex().startswith("51335998adcef92b")


@pytest.mark.parametrize(
    "other",
    [
        ("deployment", "acct-1", 1, "gumbel"),
        ("cluster", "acct-1", 1, "gumbel"),
        ("account", "acct-2", 1, "gumbel"),
        ("account", "acct-1", 2, "gumbel"),
        ("account", "acct-1", 1, "kgw"),
    ],
)
def test_every_naming_field_separates_keys(other: tuple[str, str, int, str]) -> None:
    base = derive_key(MASTER, "account", "acct-1", 1)
    scope, ident, version, scheme = other
    k = derive_key(MASTER, scope, ident, version, scheme=scheme)
    assert k.secret != base.secret and k.key_id != base.key_id and k.config_hash != base.config_hash


def test_length_prefixed_names_do_not_collide() -> None:
    # "a|b" + "c" vs "a" + "b|c": a naive join would give the same message
    assert derive_key(MASTER, "account", "a|1", 1).secret != derive_key(MASTER, "account", "a", 11).secret


def test_other_master_gives_other_keys() -> None:
    assert derive_key(MASTER, "account", "x", 1).secret != derive_key(bytes(32), "account", "x", 1).secret


def test_secret_never_in_repr_str_or_record() -> None:
    k = derive_key(MASTER, "account", "acct-1", 1)
    for text in (repr(k), str(k), json.dumps(k.record()), repr(Keyring(MASTER, "tok", 100))):
        assert k.secret.hex() not in text and "secret" not in text
        assert MASTER.hex() not in text
    assert k.key_id not in k.secret.hex()
    assert "secret" not in k.record()
    # the secret survives pickling (processes share keys) but stays out of the printable forms
    assert pickle.loads(pickle.dumps(k)) == k


def test_config_hash_covers_params_tokenizer_and_vocab() -> None:
    base = derive_key(MASTER, "account", "a", 1, scheme="kgw")
    assert (
        base.config_hash
        != derive_key(MASTER, "account", "a", 1, scheme="kgw", scheme_params={"delta": 3.0}).config_hash
    )
    assert base.config_hash != derive_key(MASTER, "account", "a", 1, scheme="kgw", tokenizer="t2").config_hash
    assert base.config_hash != derive_key(MASTER, "account", "a", 1, scheme="kgw", vocab_size=7).config_hash
    assert len(base.config_hash) == 64


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(master_secret=b"short", scope="account", ident="a", version=1),
        dict(master_secret=MASTER, scope="user", ident="a", version=1),
        dict(master_secret=MASTER, scope="account", ident="", version=1),
        dict(master_secret=MASTER, scope="account", ident="a", version=0),
        dict(master_secret=MASTER, scope="account", ident="a", version=1, scheme="nope"),
        dict(
            master_secret=MASTER,
            scope="account",
            ident="a",
            version=1,
            scheme="kgw",
            scheme_params={"gamma": 2},
        ),
        dict(master_secret=MASTER, scope="account", ident="a", version=1, scheme_params={"windw": 3}),
    ],
)
def test_bad_inputs_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        derive_key(**kwargs)  # type: ignore[arg-type]


def test_keyring_scopes_rotation_and_enumeration() -> None:
    ring = Keyring(MASTER, "smollm2", 49152, schemes={"kgw": {"delta": 3.0}})
    dep, acc, clu = ring.deployment_key(), ring.account_key("acct-7"), ring.cluster_key("hydra-1")
    assert {dep.scope, acc.scope, clu.scope} == {"deployment", "account", "cluster"}
    assert acc == ring.account_key("acct-7")  # current version is stable
    canary = ring.account_key("acct-7", scheme="kgw")
    assert canary.params["delta"] == 3.0 and canary.key_id != acc.key_id

    v2 = ring.rotate("account", "acct-7")
    assert v2.version == 2 and v2.key_id != acc.key_id and v2.secret != acc.secret
    assert ring.account_key("acct-7") == v2
    assert ring.derive("account", "acct-7", 1) == acc  # old evidence stays testable
    ids = {k.key_id for k in ring.all_keys()}
    assert {acc.key_id, v2.key_id, dep.key_id, clu.key_id, canary.key_id} <= ids
    assert {k.key_id for k in ring.all_keys(scope="account", scheme="gumbel")} == {acc.key_id, v2.key_id}
    assert ring.find(acc.key_id) == acc and ring.find("wk_nope") is None

    # records restore a keyring elsewhere (what the store persists): same keys, same current versions
    again = Keyring(MASTER, "smollm2", 49152, schemes={"kgw": {"delta": 3.0}}, records=ring.records())
    assert again.account_key("acct-7") == v2
    assert [k.key_id for k in again.all_keys()] == [k.key_id for k in ring.all_keys()]
    assert KeyRecord("account", "acct-7", "gumbel", 1) in again.records()


def test_keyring_rejects_bad_config_at_start() -> None:
    with pytest.raises(ConfigError):
        Keyring(MASTER, "t", 10, schemes={"kgw": {"gamma": 0}})
    with pytest.raises(ConfigError):
        Keyring(MASTER, "t", 10, default_scheme="nope")
