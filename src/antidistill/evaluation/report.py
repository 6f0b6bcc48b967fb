"""JSON + self-contained HTML report for the detection evaluation (:func:`metrics.evaluate`'s output).

``detection.json`` holds the results dict as plain JSON (numpy scalars converted, NaN/inf -> null).
``detection.html`` has inline CSS and plots as base64 PNG (matplotlib Agg via ``Figure``, no pyplot
state, no external assets); every string from the results is passed through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from antidistill.evaluation.metrics import DEPLOYED, OP_POINTS, evaluate

__all__ = ["evaluate", "to_jsonable", "write_report"]

OP_TITLES = {
    "fpr_1pct": "TPR at 1% benign FPR",
    "fpr_0.1pct": "TPR at 0.1% benign FPR",
    DEPLOYED: "TPR as deployed (detector's own flag)",
}
ROC_FLOOR = 1e-4  # log-x ROC plot draws FPR 0 here
LIMITS = (
    "Thresholds for 1% / 0.1% FPR are chosen on the same benign accounts the FPR is reported on "
    "(in-sample), so realized FPR <= target by construction; expect a higher FPR on fresh traffic.",
    "A target FPR a is meaningful only with >= 3/a benign accounts (rule of three).",
    "Detection delay is known only at the deployed operating point; threshold points use the "
    "account's maximum score over the run.",
    "Campaign delay is bracketed (lower / upper bound) because outcomes carry per-account counts "
    "at each account's own flag only.",
)
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2}td:first-child,th:first-child
{text-align:left}.ci{color:#777;font-size:.85em}.warn{color:#a40}img{max-width:100%}h2{margin-top:1.6em}
"""


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists, keys -> str."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset | np.ndarray):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return fmt.format(x)


def _rate(r: dict[str, Any] | None, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    if not r or not r.get("n"):
        return "n/a"
    v, lo, hi = (r[k] * scale if r[k] is not None else None for k in ("rate", "lo", "hi"))
    return (
        f"{_num(v, fmt)} <span class=ci>[{_num(lo, fmt)}, {_num(hi, fmt)}] {int(r['k'])}/{int(r['n'])}</span>"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Header cells are escaped here; body cells must already be HTML (escape raw text with _e)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def _grid(n: int) -> tuple[Figure, list[Any]]:
    cols = min(3, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(n, 1))]
    return fig, axes


def _roc_plot(dets: dict[str, Any], fams: list[str]) -> str:
    if not fams:
        return "<p>no attack families</p>"
    fig, axes = _grid(len(fams))
    for ax, fam in zip(axes, fams, strict=False):
        for name, d in dets.items():
            roc = d["roc"].get(fam)
            if roc and roc["fpr"]:
                fpr = np.maximum(np.asarray(roc["fpr"], dtype=float), ROC_FLOOR)
                ax.plot(
                    fpr,
                    roc["tpr"],
                    drawstyle="steps-post",
                    label=f"{name} (AUC {_num(roc['auc'], '{:.3f}')})",
                )
        for x in (0.01, 0.001):
            ax.axvline(x, color="#999", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(ROC_FLOOR, 1.0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(fam)
        ax.set_xlabel(f"benign FPR (log; 0 drawn at {ROC_FLOOR:g})")
        ax.set_ylabel("TPR")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _delay_plot(dets: dict[str, Any], fams: list[str]) -> str:
    if not fams:
        return ""
    fig, axes = _grid(len(fams))
    for ax, fam in zip(axes, fams, strict=False):
        for name, d in dets.items():
            st = d["delay"]["attack_requests"]["families"].get(fam)
            if not st or not st["n"]:
                continue
            vals = np.maximum(np.asarray(st["flagged_values"], dtype=float), 1.0)
            y = np.arange(1, vals.size + 1) / st["n"]
            ax.step(
                np.concatenate([[1.0], vals]),
                np.concatenate([[0.0], y]),
                where="post",
                label=f"{name} ({st['n_flagged']}/{st['n']} flagged)",
            )
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(fam)
        ax.set_xlabel("attacker requests served before first flag")
        ax.set_ylabel("fraction of accounts flagged")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def _by_family(dets: dict[str, Any], fams: list[str], cell: Callable[[dict[str, Any], str], str]) -> str:
    return _table(["family", *dets], [[_e(f), *(cell(d, f) for d in dets.values())] for f in fams])


def _summary(dets: dict[str, Any]) -> str:
    def op(d: dict[str, Any], k: str) -> dict[str, Any]:
        return dict(d["operating_points"][k])

    def delay(d: dict[str, Any], k: str) -> str:
        return _num(d["delay"]["attack_requests"]["overall"][k], "{:,.0f}")

    def cost(d: dict[str, Any], k: str) -> str:
        return _num((d["cost"] or {}).get(k), "{:,.2f}")

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("benign accounts", lambda d: _e(d["benign_n"])),
        ("attack accounts / campaigns", lambda d: _e(f"{d['attack_n']} / {d['campaign_n']}")),
        ("TPR @ FPR 1%", lambda d: _rate(op(d, "fpr_1pct")["overall"])),
        (
            "  threshold / realized FPR",
            lambda d: (
                f"{_num(op(d, 'fpr_1pct')['threshold'], '{:.4g}')} / "
                + _rate(op(d, "fpr_1pct")["benign"], fmt="{:.4f}")
            ),
        ),
        (
            "TPR @ FPR 0.1%",
            lambda d: (
                _rate(op(d, "fpr_0.1pct")["overall"])
                + (" <span class=warn>(too few benign)</span>" if op(d, "fpr_0.1pct")["underpowered"] else "")
            ),
        ),
        (
            "  threshold / realized FPR",
            lambda d: (
                f"{_num(op(d, 'fpr_0.1pct')['threshold'], '{:.4g}')} / "
                + _rate(op(d, "fpr_0.1pct")["benign"], fmt="{:.4f}")
            ),
        ),
        ("TPR as deployed", lambda d: _rate(op(d, DEPLOYED)["overall"])),
        ("benign FPR as deployed", lambda d: _rate(op(d, DEPLOYED)["benign"], fmt="{:.4f}")),
        ("benign flagged per 10k as deployed", lambda d: _rate(op(d, DEPLOYED)["benign"], 1e4, "{:.1f}")),
        ("campaigns caught as deployed", lambda d: _rate(op(d, DEPLOYED)["campaigns"]["overall"])),
        ("AUC (all attackers)", lambda d: _num(d["auc_overall"])),
        (
            "attacker requests before flag: median / p90",
            lambda d: f"{delay(d, 'median')} / {delay(d, 'p90')}",
        ),
        (
            "attack accounts never flagged",
            lambda d: _e(d["delay"]["attack_requests"]["overall"]["n_never_flagged"]),
        ),
        ("CPU s per 1M requests", lambda d: cost(d, "cpu_s_per_1m")),
        ("wall s per 1M requests", lambda d: cost(d, "wall_s_per_1m")),
    ]
    return _table(["metric", *dets], [[_e(label), *(f(d) for d in dets.values())] for label, f in rows])


def _op_family_cell(k: str) -> Callable[[dict[str, Any], str], str]:
    return lambda d, f: _rate(d["operating_points"][k]["families"].get(f))


def _delay_cell(d: dict[str, Any], f: str) -> str:
    st = d["delay"]["attack_requests"]["families"].get(f)
    if not st:
        return "n/a"
    return (
        f"{_num(st['median'], '{:,.0f}')} / {_num(st['p90'], '{:,.0f}')} <span class=ci>flagged only "
        f"{_num(st['median_flagged'], '{:,.0f}')} / {_num(st['p90_flagged'], '{:,.0f}')}; "
        f"never flagged {st['n_never_flagged']}/{st['n']}</span>"
    )


def _campaign_cell(d: dict[str, Any], f: str) -> str:
    c = d["campaigns"]["families"].get(f)
    if not c:
        return "n/a"
    return (
        f"{_rate(c['caught'])}<br>requests before first flag, median / p90: "
        f"{_num(c['upper_median'], '{:,.0f}')} / {_num(c['upper_p90'], '{:,.0f}')} <span class=ci>"
        f"(lower bound {_num(c['lower_median'], '{:,.0f}')} / {_num(c['lower_p90'], '{:,.0f}')})</span>"
    )


def _render(results: dict[str, Any]) -> str:
    dets: dict[str, Any] = results.get("detectors", {})
    fams = sorted({f for d in dets.values() for f in d["roc"]})
    camp_fams = sorted({f for d in dets.values() for f in d["campaigns"]["families"]})
    parts = ["<h1>Detection evaluation</h1>", "<h2>Summary</h2>", _summary(dets)]
    for k in OP_POINTS:
        parts.append(f"<h2>{_e(OP_TITLES.get(k, k))}: per family</h2>")
        parts.append(_by_family(dets, fams, _op_family_cell(k)))
    parts.append("<h2>Attacker share (mixed traffic)</h2>")
    keys = sorted(
        {(s["family"], s["share"]) for d in dets.values() for s in d["operating_points"][DEPLOYED]["shares"]},
        key=lambda t: (t[0], t[1]),
    )
    for k in OP_POINTS:

        def cell(d: dict[str, Any], fs: tuple[str, float], k: str = k) -> str:
            hit = [s for s in d["operating_points"][k]["shares"] if (s["family"], s["share"]) == fs]
            return _rate(hit[0]) if hit else "n/a"

        parts.append(f"<h3>{_e(OP_TITLES.get(k, k))}</h3>")
        parts.append(
            _table(
                ["family", "share", *dets],
                [[_e(f), _e(_num(s, "{:.0%}")), *(cell(d, (f, s)) for d in dets.values())] for f, s in keys],
            )
        )
    parts.append("<h2>AUC per family</h2>")
    parts.append(_by_family(dets, fams, lambda d, f: _num((d["roc"].get(f) or {}).get("auc"))))
    parts += ["<h2>ROC per family</h2>", _roc_plot(dets, fams)]
    parts.append(
        "<h2>Attacker requests served before the first flag (as deployed)</h2>"
        "<p>median / p90 over all accounts of the family; never-flagged accounts count their full"
        " traffic (attack share of it for mixed accounts).</p>"
    )
    parts.append(_by_family(dets, fams, _delay_cell))
    parts.append(_delay_plot(dets, fams))
    parts.append(
        "<h2>Campaigns (multi-account)</h2><p>Caught if any member is flagged (as deployed). "
        "Requests before the first flag: upper bound (every other member counted up to its own "
        "flag); lower bound counts only the first-flagged member(s).</p>"
    )
    parts.append(_by_family(dets, camp_fams, _campaign_cell))
    warnings = results.get("warnings", [])
    parts.append(
        "<h2>Limits</h2><ul>"
        + "".join(f"<li class=warn>{_e(w)}</li>" for w in warnings)
        + "".join(f"<li>{_e(n)}</li>" for n in LIMITS)
        + "</ul>"
    )
    body = "\n".join(parts)
    return (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Detection evaluation</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_report(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``detection.json`` and ``detection.html`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = to_jsonable(results)
    json_path, html_path = out_dir / "detection.json", out_dir / "detection.html"
    json_path.write_text(json.dumps(clean, indent=1, allow_nan=False, sort_keys=False), encoding="utf-8")
    html_path.write_text(_render(clean), encoding="utf-8")
    return json_path, html_path
