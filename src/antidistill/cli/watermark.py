"""``antidistill watermark``: test texts for our watermark, and name the accounts that harvested them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from antidistill.cli.common import ConfigOption, DatabaseOption, cli_errors, fail, settings_from
from antidistill.errors import InvalidRequestError
from antidistill.watermark.keys import SCOPES
from antidistill.watermark.texts import Document, parse_document

app = typer.Typer(
    help="Test texts for the watermark (exact p-values) and name the accounts they were served to.",
    no_args_is_help=True,
)

PROGRESS_MIN_DOCUMENTS = 200


def _read(source: str) -> str:
    try:
        if source == "-":
            return sys.stdin.read()
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequestError(f"input file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"could not read {source}: {e}") from None


def read_documents(source: str, plain: bool) -> tuple[list[Document], list[int] | None]:
    """The documents of INPUT, and the line number of each (JSONL; blank lines are skipped)."""
    raw = _read(source)
    name = "stdin" if source == "-" else source
    if plain:
        if not raw.strip():
            raise InvalidRequestError(f"{name} is empty: no text to test")
        return [Document(raw)], None
    docs: list[Document] = []
    lines: list[int] = []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(
                f'{name} line {n}: not valid JSON ({e.msg}); expected one {{"text": ...}} object per line '
                "(use --plain for a plain-text document)"
            ) from None
        docs.append(parse_document(item, f"{name} line {n}"))
        lines.append(n)
    if not docs:
        raise InvalidRequestError(f'{name} has no documents (expected one {{"text": ...}} per line)')
    return docs, lines


class _Bars:
    """One tqdm bar per stage on stderr (only for big inputs)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self._bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int) -> None:
        if not self.enabled:
            return
        bar = self._bars.get(stage)
        if bar is None:
            from tqdm import tqdm

            bar = self._bars[stage] = tqdm(total=self.total, desc=stage, unit="doc", file=sys.stderr)
        bar.update(done)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


@app.command("detect")
@cli_errors
def detect(
    source: str = typer.Argument(
        ...,
        metavar="INPUT",
        help='JSONL file, one {"text": ...} per line (optional "prompt": str or "messages": [...], whose '
        'windows are not scored); "-" reads stdin.',
    ),
    plain: bool = typer.Option(False, "--plain", help="INPUT is one plain-text document, not JSONL."),
    pool: bool = typer.Option(
        False, "--pool", help="One pooled test over all documents (each window/token counted once)."
    ),
    attribute: bool = typer.Option(
        False, "--attribute", help="Also test against every account key and name the accounts."
    ),
    key_id: str | None = typer.Option(None, "--key-id", help="Test only this key (default: every key)."),
    scope: str | None = typer.Option(None, "--scope", help=f"Only keys of this scope: {' | '.join(SCOPES)}."),
    alpha: float = typer.Option(1e-3, "--alpha", help="Significance level (verdict and attribution)."),
    looks: int = typer.Option(
        1, "--looks", min=1, help="How many times this evidence has been tested (Bonferroni)."
    ),
    model_path: str | None = typer.Option(
        None, "--model-path", help="Tokenizer source: HF model directory or .gguf (default: backend.local)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Test texts against the recorded watermark keys; print one JSON verdict on stdout.

    Default: one test per document. p-values are exact and Bonferroni-adjusted (see "correction").
    """
    if scope is not None and scope not in SCOPES:
        fail(f"--scope must be one of {', '.join(SCOPES)}")
    if not 0.0 < alpha < 1.0:
        fail("--alpha must be between 0 and 1")
    if attribute and key_id is not None:
        fail("--attribute tests every account key; it cannot be combined with --key-id")
    docs, lines = read_documents(source, plain)
    settings = settings_from(config, database_url=database_url, **{"backend.local.model_path": model_path})

    from antidistill.store import open_store
    from antidistill.watermark.keystore import load_master_secret
    from antidistill.watermark.texts import detect_documents, load_text_tokenizer

    bars = _Bars(len(docs), progress and len(docs) > PROGRESS_MIN_DOCUMENTS)
    store = open_store(settings.database_url)
    try:
        store.migrate()
        secret = load_master_secret(settings.watermark, create=False)
        tok = load_text_tokenizer(settings.backend.local)
        report = detect_documents(
            docs,
            tok,
            store,
            secret,
            pool=pool,
            attribute=attribute,
            key_id=key_id,
            scope=scope,
            looks=looks,
            alpha=alpha,
            progress=bars,
        )
    finally:
        bars.close()
        store.close()
    if lines is not None:
        for doc in report["documents"]:
            doc["line"] = lines[doc["index"]]
    typer.echo(json.dumps(report))


def _directory(config: str | None, database_url: str | None, model_path: str | None) -> Any:
    """The store-backed key directory for the configured model (tokenizer only, no weights)."""
    from antidistill.store import open_store
    from antidistill.watermark.keys import Keyring
    from antidistill.watermark.keystore import KeyDirectory, load_master_secret
    from antidistill.watermark.texts import load_text_tokenizer

    settings = settings_from(config, database_url=database_url, **{"backend.local.model_path": model_path})
    store = open_store(settings.database_url)
    store.migrate()
    tok = load_text_tokenizer(settings.backend.local)
    ring = Keyring(load_master_secret(settings.watermark, create=False), tok.fingerprint, tok.vocab_size)
    return KeyDirectory(ring, store), store


@app.command("keys")
@cli_errors
def list_keys(
    scope: str | None = typer.Option(None, help=f"Only this scope: {' | '.join(SCOPES)}."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """List the recorded watermark keys (public records only, never a secret), one JSON line each."""
    from antidistill.store import open_store

    settings = settings_from(config, database_url=database_url)
    store = open_store(settings.database_url)
    try:
        store.migrate()
        for record in store.watermark_key_records(scope):
            typer.echo(json.dumps(record, sort_keys=True))
    finally:
        store.close()


@app.command("rotate")
@cli_errors
def rotate(
    account: str = typer.Argument(..., help="Account name or id whose key gets a new version."),
    model_path: str | None = typer.Option(None, help="Tokenizer source if not the embedded teacher."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Give an account a new watermark key (new key id). Old versions stay recorded and testable.

    Running gateways pick up the new key within a minute (their key cache refresh)."""
    directory, store = _directory(config, database_url, model_path)
    try:
        acc = store.get_account(account)
        if acc is None:
            fail(f"no account {account!r}")
        key = directory.rotate("account", acc.id)
    finally:
        store.close()
    typer.echo(json.dumps({"account": acc.name, "key_id": key.key_id, "version": key.version}))
