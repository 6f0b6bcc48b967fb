"""The audits the dashboard lists: subfolders of ``dashboard.audits_dir`` that hold an
``antidistill audit --out`` report (``report.json`` and ``report.html``).

Run audits with ``--out <audits_dir>/<name>`` to have them listed. Only folder names made of letters,
digits, ``.``, ``_`` and ``-`` are served, and a served file must resolve inside the audits folder
(a symlink pointing elsewhere is refused), so a crafted name can never read another file.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FILES = ("report.html", "report.json")
MAX_REPORT_BYTES = 20_000_000
MAX_LISTED = 5000


@dataclass(frozen=True)
class AuditSummary:
    name: str
    mtime: float
    verdict: str
    p_value: float | None
    log10_p: float | None
    suspect: str
    accounts: int
    control_verdict: str | None
    reason: str
    has_html: bool
    error: str | None = None


def _summary(name: str, folder: Path, mtime: float) -> AuditSummary:
    has_html = (folder / "report.html").is_file()
    try:
        if (folder / "report.json").stat().st_size > MAX_REPORT_BYTES:
            raise ValueError("report.json is too large to read")
        data: Any = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("report.json is not a JSON object")
    except (OSError, ValueError) as e:
        return AuditSummary(name, mtime, "unreadable", None, None, "", 0, None, "", has_html, str(e)[:200])
    raw_suspect, raw_control = data.get("suspect"), data.get("control")
    suspect: dict[str, Any] = raw_suspect if isinstance(raw_suspect, dict) else {}
    control: dict[str, Any] | None = raw_control if isinstance(raw_control, dict) else None
    p = data.get("p_value")
    lp = data.get("log10_p")
    return AuditSummary(
        name=name,
        mtime=mtime,
        verdict=str(data.get("verdict", "unknown"))[:40],
        p_value=float(p) if isinstance(p, int | float) and math.isfinite(p) else None,
        log10_p=float(lp) if isinstance(lp, int | float) and math.isfinite(lp) else None,
        suspect=" ".join(str(suspect.get(k, "")) for k in ("model", "url") if suspect.get(k))[:200],
        accounts=len(data["accounts"]) if isinstance(data.get("accounts"), list) else 0,
        control_verdict=str(control.get("verdict"))[:40] if control else None,
        reason=str(data.get("reason", ""))[:300],
        has_html=has_html,
    )


def list_audits(base: Path, limit: int = 50, offset: int = 0) -> tuple[list[AuditSummary], int]:
    """Reports under ``base``, newest first, and how many there are. A missing folder lists none."""
    found: list[tuple[float, str, Path]] = []
    try:
        with os.scandir(base) as it:
            for entry in it:
                if len(found) >= MAX_LISTED:
                    break
                if not NAME_RE.fullmatch(entry.name) or not entry.is_dir():
                    continue
                try:
                    mtime = (Path(entry.path) / "report.json").stat().st_mtime
                except OSError:
                    continue
                found.append((mtime, entry.name, Path(entry.path)))
    except (FileNotFoundError, NotADirectoryError):
        return [], 0
    found.sort(key=lambda t: (-t[0], t[1]))
    page = found[offset : offset + limit]
    return [_summary(name, path, mtime) for mtime, name, path in page], len(found)


def report_file(base: Path, name: str, filename: str) -> Path | None:
    """The path of a report file to serve, or None if the name or file is not allowed or absent."""
    if filename not in FILES or not NAME_RE.fullmatch(name):
        return None
    root = base.resolve()
    path = (root / name / filename).resolve()
    if not path.is_relative_to(root) or path.parent.name != name or not path.is_file():
        return None
    return path
