"""Reasoning leak matrix: how many characters of a model's reasoning reach the client, per way of
leaking it, with no protection, through antidistill (``strip_reasoning``) and through the peer proxy
unmimic 0.1.0; JSON and streaming; plus the latency each proxy adds.

    scripts/setup_unmimic.sh                     # once: .venv-unmimic/ with unmimic 0.1.0
    .venv/bin/python benchmarks/reasoning_leaks.py [--prompts 50] [--piece-chars 7]

One fake reasoning upstream (``antidistill.evaluation.fake_upstream``, modes ``think`` and
``reasoning-field``; reasoning of ~150 words per prompt, ``evaluation.fake_reasoning``) on loopback,
three ways to reach it, the same prompts for each:

- ``none``: the upstream directly;
- ``antidistill``: ``antidistill serve --backend openai`` with a policy giving every standard account
  ``strip_reasoning`` (shipped ``[strip_reasoning]`` settings: remove, 8-word copies, 256-character
  window), risk engine off; ``antidistill-off``: the same gateway, an account of a tier without the
  action (what the gateway itself costs, and that such an account gets everything);
- ``unmimic``: ``unmimic serve`` (its defaults: output guards ``leak_detector`` then
  ``strip_reasoning``), with the model formats ``unmimic init`` would write for this upstream
  (``<think>`` tags for the model ``think-model``, the reasoning field for ``field-model``). Its
  input guard is off (it needs the ``ml`` extras and a 450 MB prompt download; it blocks prompts, and
  the prompts here are the same harmless questions for every column). Without the ``ml`` extras its
  leak detector runs the exact (8-gram, 30%-of-reasoning) check on the answer and its decodings, not
  the embedding check, which would need a 470 MB model download.

Columns (leak kinds): ``tagged`` (reasoning in ``<think>`` tags in the content), ``field``
(``reasoning_content``), and the answer also carrying a copy of the reasoning: ``verbatim``,
``partial`` (a contiguous 30% of it), ``base64``, ``base32``, ``hex``, ``rot13``, ``reversed``,
``homoglyph`` (Cyrillic look-alike letters) and ``translated`` (French; expected to be missed by
both). Copies ride on the ``<think>`` carrier for the main table and on the field carrier for the
second one. Streams are cut into 7-character pieces, so tags and words are split across chunks.

A leaked character is one of the reasoning readable from everything the client received (content
and reasoning fields, all frames): covered by a 5-word run found in the received text as it is or
after undoing any of the encodings above; a translated copy counts in proportion to the French text
it reproduces (``fake_reasoning.leaked_chars``). Also counted: replies whose short visible answer
survived intact. Latency: each request is sent once to each target in turn (sequential, keep-alive),
and the added latency is the target's minus the direct upstream's, at p50 and p99 over all requests.

Writes benchmarks/results/reasoning_leaks.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from antidistill.evaluation.fake_reasoning import (
    answer_for,
    leaked_chars,
    reasoning_for,
    translation_for,
)
from benchmarks._load import free_port as _free_port
from benchmarks._load import start_fake_upstream, stop_all
from benchmarks._load import wait_http as _wait_http
from benchmarks._util import percentile, print_table, write_results

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
UNMIMIC = ROOT / ".venv-unmimic" / "bin" / "unmimic"
COPY_KINDS = (
    "verbatim",
    "partial",
    "base64",
    "base32",
    "hex",
    "rot13",
    "reversed",
    "homoglyph",
    "translated",
)
COLUMNS = ("tagged", "field", *COPY_KINDS)
SYSTEMS = ("none", "antidistill", "antidistill-off", "unmimic")
TOPICS = (
    "apples at the market", "books in the library", "chairs in the hall", "boats in the harbour",
    "letters at the post office", "tickets for the concert", "plants in the greenhouse",
    "coins in the jar", "bottles on the shelf", "stamps in the album",
)  # fmt: skip
FORMS = (
    "How many {t} are left at the end of the day?",
    "Work out the remaining {t} after the morning and evening changes.",
    "If some {t} arrive and some are taken away, how many remain?",
    "Please compute the final count of {t}.",
    "What is the number of {t} once everything settles?",
)


def prompts(n: int) -> list[str]:
    out = [f.format(t=t) for f in FORMS for t in TOPICS]
    while len(out) < n:
        out += [f"{p} (variant {len(out)})" for p in out[: n - len(out)]]
    return out[:n]


def case(column: str, carrier: str) -> dict[str, str]:
    """The fake upstream's options for one column (sent as body fields: proxies drop headers)."""
    if column == "tagged":
        return {"x_fake_mode": "think"}
    if column == "field":
        return {"x_fake_mode": "reasoning-field"}
    mode = "think" if carrier == "tags" else "reasoning-field"
    return {"x_fake_mode": mode, "x_fake_leak": column}


def ask(
    client: httpx.Client, url: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[str, str, float]:
    """(content, reasoning fields, seconds) as the client receives them."""
    t0 = time.perf_counter()
    if not body.get("stream"):
        r = client.post(url, json=body, headers=headers)
        dt = time.perf_counter() - t0
        r.raise_for_status()
        content, reasoning = [], []
        for c in r.json()["choices"]:
            msg = c.get("message") or {}
            content.append(msg.get("content") or "")
            reasoning += [msg.get(f) or "" for f in ("reasoning_content", "reasoning")]
        return "".join(content), "\n".join(x for x in reasoning if x), dt
    content, reasoning = [], []
    with client.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        buf = b""
        for raw in r.iter_bytes():
            buf += raw
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                for line in ev.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]" or not payload:
                        continue
                    frame = orjson.loads(payload)
                    for c in frame.get("choices") or []:
                        delta = c.get("delta") or {}
                        content.append(delta.get("content") or "")
                        reasoning += [delta.get(f) or "" for f in ("reasoning_content", "reasoning")]
    dt = time.perf_counter() - t0
    return "".join(content), "".join(reasoning), dt


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--piece-chars", type=int, default=7, help="characters per streamed upstream chunk")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="adleaks-"))
    db = f"sqlite:///{tmp / 'bench.db'}"
    up_port, gw_port, um_port = _free_port(), _free_port(), _free_port()
    policy = tmp / "policy.toml"
    policy.write_text('[tiers.standard]\nnone = ["strip_reasoning"]\n')
    env = {
        **os.environ,
        "ANTIDISTILL_EVENTS__SPILL_DIR": str(tmp / "spill"),
        "ANTIDISTILL_WATERMARK__MASTER_SECRET_FILE": str(tmp / "wm.secret"),
        "ANTIDISTILL_POLICY__FILE": str(policy),
        "ANTIDISTILL_RISK__ENABLED": "false",
    }
    models = tmp / "unmimic" / "models"
    models.mkdir(parents=True)
    (models / "think-model.json").write_text(
        json.dumps({"model": "think-model", "kind": "tag", "open_tag": "<think>", "close_tag": "</think>"})
    )
    (models / "field-model.json").write_text(json.dumps({"model": "field-model", "kind": "field"}))
    um_env = {
        **os.environ,
        "UNMIMIC_DATA_DIR": str(tmp / "unmimic"),
        "UNMIMIC_INPUT_GUARDS": "[]",
        "UNMIMIC_UPSTREAM_URL": f"http://127.0.0.1:{up_port}/v1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    unmimic_note = None
    try:
        procs.append(start_fake_upstream(up_port, env, log=tmp / "upstream.log"))
        out = subprocess.run(
            [str(VENV_BIN / "antidistill"), "keys", "create", "bench", "--json", "--database-url", db],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = json.loads(out.stdout.strip().splitlines()[-1])["api_key"]
        out = subprocess.run(
            [str(VENV_BIN / "antidistill"), "keys", "create", "bench-trusted", "--tier", "trusted", "--json",
             "--database-url", db],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        key_off = json.loads(out.stdout.strip().splitlines()[-1])["api_key"]
        procs.append(
            start(
                [
                    str(VENV_BIN / "antidistill"),
                    "serve",
                    "--backend",
                    "openai",
                    "--served-model",
                    "fake-upstream",
                    "--upstream-url",
                    f"http://127.0.0.1:{up_port}/v1",
                    "--port",
                    str(gw_port),
                    "--database-url",
                    db,
                    "--log-level",
                    "warning",
                ],
                env,
                tmp / "gateway.log",
            )
        )
        if UNMIMIC.exists():
            procs.append(start([str(UNMIMIC), "serve", "--port", str(um_port)], um_env, tmp / "unmimic.log"))
        else:
            unmimic_note = "not installed (run scripts/setup_unmimic.sh)"
        _wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        _wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "none": (f"http://127.0.0.1:{up_port}/v1/chat/completions", {}),
            "antidistill": (
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                {"Authorization": f"Bearer {key}"},
            ),
            "antidistill-off": (
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                {"Authorization": f"Bearer {key_off}"},
            ),
        }
        if unmimic_note is None:
            _wait_http(f"http://127.0.0.1:{um_port}/v1/models")
            targets["unmimic"] = (f"http://127.0.0.1:{um_port}/v1/chat/completions", {})
        results = run_matrix(targets, prompts(args.prompts), args.piece_chars)
        results["guard_cpu"] = guard_cpu(prompts(args.prompts), args.piece_chars)
        results.update(
            prompts=args.prompts,
            piece_chars=args.piece_chars,
            unmimic="unmimic 0.1.0 (no ml extras: exact check only; input guard off)"
            if unmimic_note is None
            else unmimic_note,
            antidistill_policy="strip_reasoning, shipped [strip_reasoning] settings",
        )
        path = write_results("reasoning_leaks", results)
        report(results)
        print(f"wrote {path}")
    finally:
        stop_all(procs)


def run_matrix(targets: dict[str, tuple[str, dict[str, str]]], qs: list[str], piece: int) -> dict[str, Any]:
    cells: dict[str, dict[str, Any]] = {}
    latency: dict[str, dict[str, list[float]]] = {s: {"json": [], "stream": []} for s in targets}
    errors: dict[str, int] = dict.fromkeys(targets, 0)
    truth = {q: (reasoning_for(q), translation_for(q), answer_for(q)) for q in qs}
    plan = [(c, "tags") for c in COLUMNS] + [(c, "field") for c in COPY_KINDS]
    with httpx.Client(timeout=60) as client:
        for system, (url, headers) in targets.items():  # warm-up: connections, imports, caches
            for stream in (False, True):
                body = {
                    "messages": [{"role": "user", "content": "warm up"}],
                    "stream": stream,
                    **case("tagged", ""),
                }
                for _ in range(20):
                    ask(
                        client,
                        url,
                        headers,
                        {**body, "model": "fake-upstream" if "antidistill" in system else "think-model"},
                    )
        for transport in ("json", "stream"):
            for column, carrier in plan:
                for system in targets:
                    cells[f"{system}|{transport}|{carrier}|{column}"] = {
                        "leaked_chars": 0, "reasoning_chars": 0, "replies_leaking": 0, "answers_intact": 0,
                        "replies": 0,
                    }  # fmt: skip
                for q in qs:
                    r, t, a = truth[q]
                    opts = case(column, carrier)
                    model = "field-model" if opts["x_fake_mode"] == "reasoning-field" else "think-model"
                    body: dict[str, Any] = {
                        "messages": [{"role": "user", "content": q}],
                        "stream": transport == "stream",
                        "max_tokens": 1024,
                        "x_fake_piece_chars": piece,
                        **opts,
                    }
                    for system, (url, headers) in targets.items():
                        sent = {**body, "model": "fake-upstream" if "antidistill" in system else model}
                        cell = cells[f"{system}|{transport}|{carrier}|{column}"]
                        try:
                            content, reasoning, dt = ask(client, url, headers, sent)
                        except (httpx.HTTPError, ValueError) as e:
                            errors[system] += 1
                            print(f"{system} {transport} {column}: {e}", file=sys.stderr)
                            continue
                        latency[system][transport].append(dt)
                        leaked = leaked_chars(r, t, content + "\n" + reasoning)
                        cell["leaked_chars"] += leaked
                        cell["reasoning_chars"] += len(r)
                        cell["replies_leaking"] += leaked > 0
                        cell["answers_intact"] += a in content
                        cell["replies"] += 1
    lat: dict[str, Any] = {}
    for system, by in latency.items():
        for transport, xs in by.items():
            lat[f"{system}|{transport}"] = {
                "n": len(xs),
                "p50_ms": percentile(xs, 50) * 1000,
                "p99_ms": percentile(xs, 99) * 1000,
            }
    for system in targets:
        if system == "none":
            continue
        for transport in ("json", "stream"):
            d, s = lat[f"none|{transport}"], lat[f"{system}|{transport}"]
            s["added_p50_ms"] = s["p50_ms"] - d["p50_ms"]
            s["added_p99_ms"] = s["p99_ms"] - d["p99_ms"]
    return {"cells": cells, "latency": lat, "errors": errors, "systems": list(targets)}


def guard_cpu(qs: list[str], piece: int) -> dict[str, float]:
    """In-process CPU time (process_time) of ``ReasoningGuard`` per reply (no HTTP): JSON and streamed
    pieces, for the ``<think>`` carrier with a verbatim copy (the most work: a block and a redaction)."""
    from antidistill.backends.base import Choice, Chunk, Completion, Usage
    from antidistill.evaluation.fake_reasoning import visible_reply
    from antidistill.hardening import ReasoningGuard
    from antidistill.policy import StripReasoningConfig

    cfg = StripReasoningConfig()
    texts = [f"<think>{reasoning_for(q)}</think>\n\n{visible_reply(q, 'verbatim')}" for q in qs]
    t0 = time.process_time()
    for text in texts:
        ReasoningGuard(cfg).complete(Completion((Choice(0, text, "stop"),), Usage(1, 1)))
    t_json = (time.process_time() - t0) / len(texts)
    pieces = [[Chunk(0, t[i : i + piece]) for i in range(0, len(t), piece)] for t in texts]
    t0 = time.process_time()
    for chunks in pieces:
        g = ReasoningGuard(cfg)
        for c in chunks:
            g.feed(c)
        g.feed(Chunk(0, "", finish_reason="stop"))
    t_stream = (time.process_time() - t0) / len(texts)
    chars = sum(map(len, texts)) / len(texts)
    return {"reply_chars": chars, "json_ms_per_reply": t_json * 1000, "stream_ms_per_reply": t_stream * 1000}


def report(results: dict[str, Any]) -> None:
    cells = results["cells"]
    systems = results["systems"]
    for carrier, columns in (("tags", COLUMNS), ("field", COPY_KINDS)):
        print(f"\nleaked reasoning characters (sum over {results['prompts']} prompts; copies on the "
              f"{'<think>' if carrier == 'tags' else 'reasoning_content'} carrier)")  # fmt: skip
        rows = []
        for transport in ("json", "stream"):
            for system in systems:
                row: dict[str, Any] = {"system": system, "mode": transport}
                for col in columns:
                    c = cells.get(f"{system}|{transport}|{carrier}|{col}")
                    if c and c["replies"]:
                        row[col] = (
                            f"{c['leaked_chars']} ({100 * c['leaked_chars'] / c['reasoning_chars']:.0f}%)"
                        )
                rows.append(row)
        print_table(rows, ["system", "mode", *columns])
    print("\nanswers intact (the short visible answer reached the client unchanged), <think> carrier")
    rows = []
    for transport in ("json", "stream"):
        for system in systems:
            row = {"system": system, "mode": transport}
            for col in COLUMNS:
                c = cells.get(f"{system}|{transport}|tags|{col}")
                if c and c["replies"]:
                    row[col] = f"{c['answers_intact']}/{c['replies']}"
            rows.append(row)
    print_table(rows, ["system", "mode", *COLUMNS])
    print("\nlatency per request (sequential, loopback, no upstream delay)")
    rows = [{"target": k.replace("|", " "), **v} for k, v in results["latency"].items()]
    print_table(rows, ["target", "n", "p50_ms", "p99_ms", "added_p50_ms", "added_p99_ms"])
    g = results.get("guard_cpu")
    if g:
        print(
            f"\nReasoningGuard CPU per reply of {g['reply_chars']:.0f} characters "
            "(<think> block + verbatim copy): "
            f"JSON {g['json_ms_per_reply']:.2f} ms, stream ({results['piece_chars']}-character pieces) "
            f"{g['stream_ms_per_reply']:.2f} ms"
        )
    if any(results["errors"].values()):
        print(f"errors: {results['errors']}")


if __name__ == "__main__":
    main()
