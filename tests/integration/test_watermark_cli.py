"""``antidistill watermark detect``: exact verdicts on texts, attribution among many account keys.

Marked texts are generated with an account's key by the watermark sampler's math over a synthetic
distribution restricted to whole-word SmolLM2 tokens (" word"), then DECODED with the real SmolLM2
tokenizer: re-tokenizing such text gives back the same ids, as it does for most real model output.
Only the tokenizer is loaded (from the cached HF copy), never the weights.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from antidistill.cli.main import app
from antidistill.settings import LocalBackendSettings, WatermarkSettings
from antidistill.store import open_store
from antidistill.store.base import Store
from antidistill.watermark import texts as wm_texts
from antidistill.watermark.keys import Keyring, WatermarkKey
from antidistill.watermark.keystore import KeyDirectory, load_master_secret
from antidistill.watermark.simulate import SyntheticLM, generate_batch
from antidistill.watermark.texts import Document, TextTokenizer

runner = CliRunner()
_LOAD_TEXT_TOKENIZER = wm_texts.load_text_tokenizer  # the real one (tests swap in the cached one)
N_ACCOUNTS = 60
HARVESTER = "acct-17"
STABLE_FIELDS = (
    "p_value",
    "log10_p",
    "n_scored",
    "scheme",
    "key_id",
    "documents",
    "accounts",
    "mode",
    "looks",
)

HUMAN = [
    "The river had been rising for three days before anyone in the village thought to move the boats. "
    "By the time the council met, the water had already reached the steps of the old mill, and the "
    "miller's daughter was carrying sacks of flour up to the loft two at a time.",
    "Most bread recipes ask for more yeast than you need. If you let the dough rise slowly overnight in "
    "a cool kitchen, a pinch is enough, and the crust comes out darker and the crumb more open than any "
    "quick loaf I have baked.",
    "When we reviewed the quarterly numbers, the surprise was not the drop in sales but where it came "
    "from: the northern stores held steady, while the two newest locations lost almost a fifth of their "
    "regular customers after the parking lot was closed for repairs.",
    "She kept a notebook of every bird she saw from the kitchen window: sparrows in the morning, a pair "
    "of magpies that argued over the fence, and once, on a grey afternoon in March, a heron standing "
    "perfectly still in the neighbour's pond as if it had always lived there.",
]


@functools.cache
def text_tokenizer() -> TextTokenizer:
    """The real SmolLM2 tokenizer, loaded once per test session (through the production helper)."""
    return _LOAD_TEXT_TOKENIZER(LocalBackendSettings())


@functools.cache
def _word_tokens() -> np.ndarray:
    """Tokens that are one lower-case ASCII word with a leading space: text made of them re-tokenizes
    to the same ids."""
    vocab = text_tokenizer().tokenizer.get_vocab()
    words = [i for t, i in vocab.items() if t[0] == "Ġ" and len(t) >= 3 and t[1:].isascii()]
    tokens = {i: t for t, i in vocab.items()}
    return np.array(sorted(i for i in words if tokens[i][1:].isalpha() and tokens[i][1:].islower()))


def marked_texts(key: WatermarkKey | None, n: int, length: int = 60, seed: int = 0) -> list[str]:
    """``n`` texts of ``length`` whole-word tokens, marked with ``key`` (None: unmarked)."""
    tok = text_tokenizer()
    allowed = _word_tokens()
    mask = np.full(tok.vocab_size, -np.inf, dtype=np.float32)
    mask[allowed] = 0.0
    lm = SyntheticLM(vocab_size=tok.vocab_size, sigma=3.0, rng=np.random.default_rng(seed + 1))
    rng = np.random.default_rng(seed)
    prompts = rng.choice(allowed, (n, 4))
    scheme = key.build_scheme() if key is not None else None
    out = generate_batch(scheme, key, lambda ctx: lm(ctx) + mask, prompts, length, rng)
    return [str(tok.tokenizer.decode([int(t) for t in row])) for row in out]


@dataclass
class World:
    config: Path
    secret_hex: str
    store_url: str
    harvester: WatermarkKey  # the key the marked texts carry (version 1, rotated since)
    all_keys: list[WatermarkKey]
    marked: list[str]


def record_accounts(
    store: Store, secret: bytes, n: int = N_ACCOUNTS
) -> tuple[WatermarkKey, list[WatermarkKey]]:
    """``n`` accounts with recorded keys plus a deployment key; the harvester's key is rotated after
    it marked text (old evidence must stay testable). Returns (harvester v1 key, every recorded key)."""
    tok = text_tokenizer()
    directory = KeyDirectory(Keyring(secret, tok.fingerprint, tok.vocab_size), store)
    harvester = None
    for i in range(n):
        acc = store.create_account(f"acct-{i:02d}")
        key = directory.current("account", acc.id)
        if acc.name == HARVESTER:
            harvester = key
    directory.current("deployment", "default")
    assert harvester is not None
    directory.rotate("account", harvester.ident)
    return harvester, directory.all_keys()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("wm-cli")
    url = f"sqlite:///{root / 'wm.db'}"
    secret_file = root / "wm.secret"
    secret = load_master_secret(WatermarkSettings(master_secret_file=str(secret_file)))
    config = root / "antidistill.toml"
    config.write_text(f'database_url = "{url}"\n[watermark]\nmaster_secret_file = "{secret_file}"\n')
    store = open_store(url)
    store.migrate()
    try:
        harvester, keys = record_accounts(store, secret)
    finally:
        store.close()
    assert len(keys) == N_ACCOUNTS + 2
    return World(config, secret_file.read_text().strip(), url, harvester, keys, marked_texts(harvester, 6))


@pytest.fixture(autouse=True)
def _cached_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wm_texts, "load_text_tokenizer", lambda settings: text_tokenizer())


def jsonl(items: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def detect(world: World, *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["watermark", "detect", *args, "--config", str(world.config)], input=input)


def verdict(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_marked_text_round_trips_through_the_tokenizer(world: World) -> None:
    tok = text_tokenizer()
    ids, prompts = tok.encode([Document(t) for t in world.marked])
    assert prompts is None and all(len(x) == 60 for x in ids)


def test_attribute_names_the_harvester_among_many_accounts(world: World, tmp_path: Path) -> None:
    src = jsonl([{"text": t} for t in world.marked] + [{"text": h} for h in HUMAN], tmp_path / "in.jsonl")
    out = verdict(detect(world, str(src), "--attribute"))
    assert [a["account"] for a in out["accounts"]] == [HARVESTER]
    found = out["accounts"][0]
    assert found["key_id"] == world.harvester.key_id and found["key_version"] == 1  # rotated since
    assert found["account_id"] == world.harvester.ident and found["log10_p_adj"] < -6
    assert out["attribution"]["n_keys"] == N_ACCOUNTS + 1  # every account key, both harvester versions
    # per document (default): the marked documents are significant, the human ones are not
    assert out["mode"] == "per_document" and out["n_keys"] == N_ACCOUNTS + 2
    docs = out["documents"]
    assert [d["line"] for d in docs] == list(range(1, 11))
    assert all(d["key_id"] == world.harvester.key_id and d["log10_p"] < -3 for d in docs[:6])
    assert all(d["log10_p"] > -3 for d in docs[6:])
    assert out["significant"] and out["key_id"] == world.harvester.key_id
    assert out["correction"] == {
        "method": "bonferroni",
        "factor": (N_ACCOUNTS + 2) * 10,
        "keys": N_ACCOUNTS + 2,
        "looks": 1,
        "documents": 10,
        "per_document_factor": N_ACCOUNTS + 2,
    }


def test_human_text_names_nobody(world: World, tmp_path: Path) -> None:
    src = jsonl([{"text": h} for h in HUMAN], tmp_path / "human.jsonl")
    for extra in ([], ["--pool"]):
        out = verdict(detect(world, str(src), "--attribute", *extra))
        assert out["accounts"] == [] and not out["significant"] and out["log10_p"] > -3


def test_pooled_versus_per_document(world: World, tmp_path: Path) -> None:
    src = jsonl([{"text": t} for t in world.marked[:3]], tmp_path / "three.jsonl")
    per_doc = verdict(detect(world, str(src)))
    pooled = verdict(detect(world, str(src), "--pool"))
    assert per_doc["mode"] == "per_document" and pooled["mode"] == "pooled"
    assert pooled["correction"]["factor"] == N_ACCOUNTS + 2 and pooled["correction"]["documents"] == 1
    assert per_doc["correction"]["factor"] == (N_ACCOUNTS + 2) * 3
    # pooling three marked documents is stronger evidence than the best of them alone
    assert pooled["log10_p"] < per_doc["log10_p"] - 10
    assert pooled["n_scored"] == per_doc["n_scored"]  # three distinct texts: no cross-document repeats
    assert pooled["key_id"] == per_doc["key_id"] == world.harvester.key_id
    for out in (per_doc, pooled):
        assert {
            "p_value",
            "log10_p",
            "n_scored",
            "scheme",
            "key_id",
            "documents",
            "accounts",
            "looks",
        } <= set(out)
        assert len(out["documents"]) == 3 and out["scheme"] == "gumbel"
    # the same text twice in a pool counts once (global dedup)
    dup = jsonl([{"text": world.marked[0]}] * 2, tmp_path / "dup.jsonl")
    assert verdict(detect(world, str(dup), "--pool"))["n_scored"] == per_doc["documents"][0]["n_scored"]


def test_plain_stdin_key_id_and_scope(world: World, tmp_path: Path) -> None:
    text = world.marked[1]
    plain = tmp_path / "doc.txt"
    plain.write_text(text)
    out = verdict(detect(world, str(plain), "--plain"))
    assert out["n_documents"] == 1 and out["significant"] and "line" not in out["documents"][0]
    out = verdict(detect(world, "-", "--plain", input=text))
    assert out["key_id"] == world.harvester.key_id
    out = verdict(detect(world, "-", input=json.dumps({"text": text}) + "\n\n"))
    assert out["n_documents"] == 1 and out["significant"]
    out = verdict(detect(world, str(plain), "--plain", "--key-id", world.harvester.key_id))
    assert out["n_keys"] == 1 and out["correction"]["factor"] == 1
    out = verdict(detect(world, str(plain), "--plain", "--scope", "deployment"))
    assert out["n_keys"] == 1 and not out["significant"] and out["key_scope"] == "deployment"


def test_prompt_windows_are_not_scored(world: World, tmp_path: Path) -> None:
    text = world.marked[2]
    src = jsonl([{"text": text, "prompt": text}], tmp_path / "p.jsonl")
    out = verdict(detect(world, str(src)))
    # windows inside the prompt are skipped: only those spanning the prompt's end and the text's start
    window = world.harvester.build_scheme().window
    assert out["n_scored"] <= window and not out["significant"]
    src = jsonl([{"text": text, "messages": [{"role": "user", "content": "Say some words."}]}], src)
    assert verdict(detect(world, str(src)))["significant"]


def test_output_never_contains_a_secret(world: World, tmp_path: Path) -> None:
    src = jsonl([{"text": t} for t in world.marked], tmp_path / "in.jsonl")
    result = detect(world, str(src), "--attribute", "--pool")
    assert result.exit_code == 0
    assert world.secret_hex not in result.output and world.secret_hex.upper() not in result.output
    for key in world.all_keys:
        assert key.secret.hex() not in result.output


def test_malformed_input_is_one_clear_line(world: World, tmp_path: Path) -> None:
    good = json.dumps({"text": "fine"})
    cases = {
        "bad.jsonl": (f"{good}\n{good}\n{{not json\n", "line 3: not valid JSON"),
        "nottext.jsonl": (f'{good}\n{{"txt": "x"}}\n', 'line 2: expected a JSON object with a string "text"'),
        "list.jsonl": ("[1, 2]\n", "line 1: expected a JSON object"),
        "num.jsonl": ('{"text": 5}\n', "line 1"),
        "prompt.jsonl": ('{"text": "a", "prompt": 3}\n', '"prompt" must be a string'),
        "empty.jsonl": ("\n\n", "has no documents"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        result = detect(world, str(path))
        assert result.exit_code == 2, (name, result.output)
        assert message in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1
    for args, message in [
        ([str(tmp_path / "missing.jsonl")], "input file not found"),
        ([str(tmp_path / "bad.jsonl"), "--scope", "galaxy"], "--scope must be one of"),
        ([str(tmp_path / "bad.jsonl"), "--attribute", "--key-id", "wk_1"], "cannot be combined"),
        (["-", "--plain"], "empty"),
    ]:
        result = detect(world, *args, input="")
        assert result.exit_code == 2 and message in result.stderr, result.output
    plain = tmp_path / "p.txt"
    plain.write_text("some words")
    result = detect(world, str(plain), "--plain", "--key-id", "wk_0000")
    assert result.exit_code == 2 and "no recorded watermark key has the id 'wk_0000'" in result.stderr


def test_no_recorded_keys_and_a_wrong_secret_are_clear_errors(world: World, tmp_path: Path) -> None:
    plain = tmp_path / "p.txt"
    plain.write_text("some words")
    empty_db = f"sqlite:///{tmp_path / 'empty.db'}"
    result = detect(world, str(plain), "--plain", "--database-url", empty_db)
    assert result.exit_code == 2 and "no watermark keys are recorded" in result.stderr
    other = tmp_path / "other.toml"
    secret = tmp_path / "other.secret"
    load_master_secret(WatermarkSettings(master_secret_file=str(secret)))
    other.write_text(f'database_url = "{world.store_url}"\n[watermark]\nmaster_secret_file = "{secret}"\n')
    result = runner.invoke(app, ["watermark", "detect", str(plain), "--plain", "--config", str(other)])
    assert result.exit_code == 2 and "does not match the configured master secret" in result.stderr


def test_progress_bar_on_stderr_for_big_inputs(world: World, tmp_path: Path) -> None:
    src = jsonl([{"text": f"{h} ({i})"} for i in range(60) for h in HUMAN], tmp_path / "big.jsonl")
    result = detect(world, str(src))
    out = verdict(result)
    assert out["n_documents"] == 240 and not out["significant"]
    assert "tokenizing" in result.stderr and "detecting" in result.stderr
    small = detect(world, str(jsonl([{"text": HUMAN[0]}], tmp_path / "small.jsonl")))
    assert small.exit_code == 0 and small.stderr == ""


def test_keys_and_rotate_commands(tmp_path: Path) -> None:
    """Rotation gives a new key id and keeps the old record; `keys` lists records without secrets."""
    from typer.testing import CliRunner

    from antidistill.cli.main import app as cli
    from antidistill.settings import WatermarkSettings
    from antidistill.store import open_store
    from antidistill.watermark.keystore import load_master_secret

    db = f"sqlite:///{tmp_path / 'r.db'}"
    secret_file = tmp_path / "wm.secret"
    secret = load_master_secret(WatermarkSettings(master_secret_file=str(secret_file)))
    store = open_store(db)
    store.migrate()
    store.create_account("carol", "standard")
    store.close()
    env = {"ANTIDISTILL_WATERMARK__MASTER_SECRET_FILE": str(secret_file)}
    runner = CliRunner()
    first = runner.invoke(cli, ["watermark", "rotate", "carol", "--database-url", db], env=env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, ["watermark", "rotate", "carol", "--database-url", db], env=env)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert (a["version"], b["version"]) == (1, 2) and a["key_id"] != b["key_id"]
    listed = runner.invoke(cli, ["watermark", "keys", "--scope", "account", "--database-url", db], env=env)
    assert listed.exit_code == 0
    ids = [json.loads(line)["key_id"] for line in listed.stdout.splitlines()]
    assert ids == [a["key_id"], b["key_id"]]
    assert secret.hex() not in listed.output
    missing = runner.invoke(cli, ["watermark", "rotate", "nobody", "--database-url", db], env=env)
    assert missing.exit_code == 2 and "no account" in missing.output
