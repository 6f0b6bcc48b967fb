"""Watermark detection on texts: documents, the tokenizer the keys were recorded for, the recorded keys,
and the JSON verdict shared by ``antidistill watermark detect`` and the admin API.

* The tokenizer is loaded alone (no weights) from the source the local backend uses: an HF directory,
  or the de-quantized HF copy of the GGUF model in ``cache_dir`` (fast), else the GGUF file itself.
* Keys are every recorded key (all scopes and versions unless narrowed), re-derived from the master
  secret; a record made for another tokenizer or vocabulary is an error, never a silent false negative.
* p-values in the report are Bonferroni-adjusted (``correction`` says by what); ``*_unadjusted`` are
  single-test values. Nothing secret is ever part of a report: keys appear by their public id.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from antidistill.errors import ConfigError, InvalidRequestError, NotFoundError
from antidistill.settings import LocalBackendSettings
from antidistill.store.base import Store
from antidistill.watermark.detect import Detection, Detector, DocumentResult
from antidistill.watermark.keys import Keyring, WatermarkKey
from antidistill.watermark.keystore import KeyDirectory, tokenizer_fingerprint
from antidistill.watermark.schemes.pvalues import bonferroni

Progress = Callable[[str, int], None]  # (stage, documents done since the last call)
_ENCODE_BATCH = 256
_DETECT_CELLS = 2_000_000  # keys x documents per per-document detection chunk (bounds memory)


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content)


def parse_document(item: Any, where: str, *, allow_string: bool = False) -> Document:
    """``{"text": str, "prompt"?: str, "messages"?: [{"role", "content"}]}`` (or a bare string)."""
    if allow_string and isinstance(item, str):
        return Document(item)
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise InvalidRequestError(f'{where}: expected a JSON object with a string "text"', param="text")
    prompt, messages = item.get("prompt"), item.get("messages")
    if prompt is not None and messages is not None:
        raise InvalidRequestError(f'{where}: give "prompt" or "messages", not both', param="prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequestError(f'{where}: "prompt" must be a string', param="prompt")
    msgs = None
    if messages is not None:
        ok = isinstance(messages, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
        if not ok:
            raise InvalidRequestError(
                f'{where}: "messages" must be a list of {{"role": str, "content": str}}', param="messages"
            )
        msgs = tuple((m["role"], m["content"]) for m in messages)
    return Document(item["text"], prompt, msgs)


class TextTokenizer:
    """A tokenizer with its key-record identity. Thread-safe (HF tokenizers are not: one lock)."""

    def __init__(self, tokenizer: Any, vocab_size: int, source: str) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.source = source
        self.fingerprint = tokenizer_fingerprint(tokenizer)
        self._lock = threading.Lock()

    def encode(
        self, docs: Sequence[Document], progress: Progress | None = None
    ) -> tuple[list[list[int]], list[list[int]] | None]:
        """Token ids of the texts, and of their prompts (None when no document has one)."""
        ids: list[list[int]] = []
        with self._lock:
            for b in range(0, len(docs), _ENCODE_BATCH):
                chunk = [d.text for d in docs[b : b + _ENCODE_BATCH]]
                ids += [list(x) for x in self.tokenizer(chunk, add_special_tokens=False)["input_ids"]]
                if progress is not None:
                    progress("tokenizing", len(chunk))
            if all(d.prompt is None and d.messages is None for d in docs):
                return ids, None
            return ids, [self._prompt_ids(d) for d in docs]

    def _prompt_ids(self, doc: Document) -> list[int]:
        tok = self.tokenizer
        if doc.messages is not None:  # as the local backend renders a chat request
            if not getattr(tok, "chat_template", None):
                raise InvalidRequestError("this tokenizer has no chat template; give a plain prompt")
            messages = [{"role": r, "content": c} for r, c in doc.messages]
            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as e:
                raise InvalidRequestError(f"the messages do not fit the chat template: {e}") from e
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(doc.prompt)["input_ids"]) if doc.prompt else []


def load_text_tokenizer(settings: LocalBackendSettings) -> TextTokenizer:
    """The local backend's tokenizer and logits size, without loading any weights (offline)."""
    from antidistill.backends.model_loading import cache_path, resolve_source

    source = resolve_source(settings)
    candidates: list[tuple[Path, str | None]] = []
    if source.gguf_file is None:
        candidates.append((source.directory, None))
    else:
        cached = cache_path(settings, source)
        if (cached / "config.json").is_file():
            candidates.append((cached, None))
        candidates.append((source.directory, source.gguf_file))
    failure: Exception | None = None
    for directory, gguf in candidates:
        try:
            return _load_tokenizer(directory, gguf)
        except Exception as e:  # a damaged cached copy: fall back to the GGUF file
            failure = e
    where = source.description
    raise ConfigError(f"could not load the tokenizer from {where}: {failure}") from failure


def _load_tokenizer(directory: Path, gguf: str | None) -> TextTokenizer:
    from transformers import AutoConfig, AutoTokenizer

    kw: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if gguf is not None:
        kw["gguf_file"] = gguf
    tok = AutoTokenizer.from_pretrained(directory, **kw)
    if gguf is None:
        config = json.loads((directory / "config.json").read_text())
        vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    else:
        vocab = getattr(AutoConfig.from_pretrained(directory, **kw), "vocab_size", None)
    return TextTokenizer(tok, int(vocab or len(tok)), str(directory / gguf) if gguf else str(directory))


def recorded_keys(
    store: Store,
    master_secret: bytes,
    tok: TextTokenizer,
    *,
    scope: str | None = None,
    key_id: str | None = None,
) -> list[WatermarkKey]:
    """Every recorded key of ``scope`` (all versions; or the one ``key_id``), checked against the
    master secret and the tokenizer."""
    records = store.watermark_key_records(scope)
    if not records:
        where = f" of scope {scope!r}" if scope else ""
        raise NotFoundError(f"no watermark keys{where} are recorded in this store: nothing to test against")
    schemes: dict[str, dict[str, Any]] = {}
    for r in records:
        if schemes.setdefault(r["scheme"], r["scheme_params"]) != r["scheme_params"]:
            raise ConfigError(f"key records of scheme {r['scheme']} use different parameters")
    keyring = Keyring(master_secret, tok.fingerprint, tok.vocab_size, schemes=schemes)
    keys = KeyDirectory(keyring, store).all_keys(scope)
    by_id = {r["key_id"]: r for r in records}
    for k in keys:
        r = by_id.get(k.key_id, {})
        for name, mine in (("tokenizer", tok.fingerprint), ("vocab_size", tok.vocab_size)):
            if name in r and r[name] != mine:
                raise ConfigError(
                    f"key {k.key_id} was recorded for {name} {r[name]!r}, but the configured tokenizer "
                    f"({tok.source}) has {mine!r}; point backend.local at the model that served the text"
                )
    if key_id is not None:
        keys = [k for k in keys if k.key_id == key_id]
        if not keys:
            raise NotFoundError(f"no recorded watermark key has the id {key_id!r}", param="key_id")
    return keys


def _doc_json(d: DocumentResult, offset: int = 0) -> dict[str, Any]:
    return {
        "index": d.index + offset,
        "p_value": 10.0**d.log10_p_adj,
        "log10_p": d.log10_p_adj,
        "log10_p_unadjusted": d.log10_p,
        "n_scored": d.n_scored,
        "n_tokens": d.n_tokens,
        "key_id": d.key_id,
    }


def _per_document(
    detector: Detector,
    ids: list[list[int]],
    prompts: list[list[int]] | None,
    keys: list[WatermarkKey],
    progress: Progress | None,
) -> tuple[list[dict[str, Any]], Detection | None]:
    """One test per document, in chunks of documents (per-document tests are independent)."""
    step = max(1, _DETECT_CELLS // len(keys))
    docs: list[dict[str, Any]] = []
    det: Detection | None = None
    for b in range(0, len(ids), step):
        chunk_prompts = prompts[b : b + step] if prompts is not None else None
        det = detector.detect(ids[b : b + step], keys, chunk_prompts, pool=False)
        docs += [_doc_json(d, b) for d in det.documents]
        if progress is not None:
            progress("detecting", len(det.documents))
    return docs, (det if step >= len(ids) else None)


def _explain(best: dict[str, Any], n_keys: int, looks: int, n_docs: int) -> str:
    factor = n_keys * looks * n_docs
    lp = best["log10_p_unadjusted"]
    return (
        f"{n_docs} documents tested one by one, each (window, token) tuple counted once per document; "
        f"most significant: document {best['index']}, key {best['key_id']}: log10 p = {lp:.2f}; "
        f"Bonferroni over {n_keys} key(s) x {looks} look(s) x {n_docs} document(s) (factor {factor}): "
        f"log10 p_adj = {float(bonferroni(lp, factor)):.2f}."
    )


def detection_report(
    ids: list[list[int]],
    prompts: list[list[int]] | None,
    keys: list[WatermarkKey],
    *,
    pool: bool,
    looks: int = 1,
    alpha: float = 1e-3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The verdict as JSON: top level = the pooled test, or the most significant document with
    Bonferroni over keys x looks x documents; ``documents`` = per-document results."""
    if not ids:
        raise InvalidRequestError("no documents to test", param="texts")
    detector = Detector(n_looks=looks)
    by_id = {k.key_id: k for k in keys}
    n_docs = len(ids)
    if pool:
        det = detector.detect(ids, keys, prompts, pool=True)
        docs = [_doc_json(d) for d in det.documents]
        best_id, lp, lp_adj, n_scored = det.key_id, det.log10_p, det.log10_p_adj, det.n_scored
        explanation, factor = det.explanation, len(keys) * looks
    else:
        docs, single = _per_document(detector, ids, prompts, keys, progress)
        best = min(docs, key=lambda d: d["log10_p_unadjusted"])
        factor = len(keys) * looks * n_docs
        best_id, lp = best["key_id"], best["log10_p_unadjusted"]
        lp_adj = float(bonferroni(lp, factor))
        n_scored = sum(d["n_scored"] for d in docs)
        explanation = single.explanation if single is not None else _explain(best, len(keys), looks, n_docs)
    key = by_id[best_id]
    return {
        "mode": "pooled" if pool else "per_document",
        "p_value": 10.0**lp_adj,
        "log10_p": lp_adj,
        "p_value_unadjusted": 10.0**lp,
        "log10_p_unadjusted": lp,
        "significant": lp_adj <= math.log10(alpha),
        "alpha": alpha,
        "n_scored": n_scored,
        "n_tokens": sum(len(x) for x in ids),
        "n_documents": n_docs,
        "scheme": key.scheme,
        "key_id": key.key_id,
        "key_scope": key.scope,
        "key_version": key.version,
        "looks": looks,
        "n_keys": len(keys),
        "correction": {
            "method": "bonferroni",
            "factor": factor,
            "keys": len(keys),
            "looks": looks,
            "documents": 1 if pool else n_docs,
            "per_document_factor": len(keys) * looks,  # what each entry of "documents" is adjusted by
        },
        "explanation": explanation,
        "documents": docs,
        "accounts": [],
        "attribution": None,
    }


def attribute_accounts(
    report: dict[str, Any],
    ids: list[list[int]],
    prompts: list[list[int]] | None,
    keys: list[WatermarkKey],
    store: Store,
    *,
    looks: int = 1,
    alpha: float = 1e-3,
) -> None:
    """Fill ``report["accounts"]``: the owners of keys whose pooled test survives Bonferroni over all
    ``keys`` (strongest first). Text marked with none of them names nobody (probability >= 1 - alpha)."""
    found = Detector(n_looks=looks).attribute(ids, keys, alpha=alpha, prompt_seqs=prompts)
    accounts = []
    for a in found:
        account = store.get_account(a.ident) if a.scope == "account" else None
        accounts.append(
            {
                "account": account.name if account is not None else None,
                "account_id": a.ident if a.scope == "account" else None,
                "scope": a.scope,
                "ident": a.ident,
                "key_id": a.key_id,
                "key_version": a.version,
                "scheme": a.scheme,
                "p_value_adj": a.p_value_adj,
                "log10_p_adj": a.log10_p_adj,
                "log10_p_unadjusted": a.log10_p,
                "n_scored": a.n_scored,
            }
        )
    report["accounts"] = accounts
    report["attribution"] = {
        "alpha": alpha,
        "n_keys": len(keys),
        "looks": looks,
        "factor": len(keys) * looks,
        "pooled": True,
    }


def detect_documents(
    docs: Sequence[Document],
    tok: TextTokenizer,
    store: Store,
    master_secret: bytes,
    *,
    pool: bool = False,
    attribute: bool = False,
    key_id: str | None = None,
    scope: str | None = None,
    looks: int = 1,
    alpha: float = 1e-3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole job (blocking): keys, tokenization, the test, and with ``attribute`` the accounts."""
    keys = recorded_keys(store, master_secret, tok, scope=scope, key_id=key_id)
    account_keys = recorded_keys(store, master_secret, tok, scope=scope or "account") if attribute else None
    ids, prompts = tok.encode(docs, progress)
    report = detection_report(ids, prompts, keys, pool=pool, looks=looks, alpha=alpha, progress=progress)
    if account_keys is not None:
        attribute_accounts(report, ids, prompts, account_keys, store, looks=looks, alpha=alpha)
    report["tokenizer"] = tok.fingerprint
    return report
