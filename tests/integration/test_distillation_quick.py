"""``antidistill eval distillation --quick``: the whole pipeline on the real teacher, in the suite.

SmolLM2 behind the gateway (watermark on, 1,000 decoy account keys) -> 32 harvested answers -> a
tiny GPT-2 student trained on them and a control student trained identically on unmarked answers to
the same prompts -> both audited (reading mode + API mode) -> results.json; then the audit CLI on the
student's directory (``--suspect-path`` / ``--control-path``). Select it with ``-m distillation``.

Bounds (derived): a student that memorized its training answers (the QUICK student reaches a training
loss of ~0.05) gives a reading-mode log10 p in the hundreds (measured: -426 and -670 on two harvests
of 32 answers); we require <= -6 (the goal) and the harvester named, alone, among > 1,000 account
keys. Every null arm (control student, untouched teacher, random model)
is a valid test at any level, so each is <= 1e-3 with probability <= 1e-3; in ``null_runs`` R runs
with fresh keys the count of false verdicts at 1e-3 is Binomial(R, <= 1e-3): we allow its 1e-4
upper quantile (2 of 20).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from scipy import stats
from typer.testing import CliRunner

from antidistill.cli.main import app
from antidistill.evaluation.distillation import QUICK, run_distillation

pytestmark = [pytest.mark.model, pytest.mark.distillation]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("distillation")
    results = run_distillation(replace(QUICK, progress=False, threads=1), out)
    return out, results


def test_quick_pipeline_flags_the_student_and_names_the_harvester(run: tuple[Path, dict]) -> None:
    out, results = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["watermarked_student"]["p_value"] == results["watermarked_student"]["p_value"]
    assert results["n_account_keys"] > 1000
    wm = results["watermarked_student"]
    assert wm["log10_p"] <= -6, wm
    assert wm["accounts"] == ["harvester-0"] and wm["harvester_named"]
    assert wm["reading"]["log10_p"] <= -6 and wm["reading"]["accounts"] == ["harvester-0"]
    for name in ("control_student", "untouched_teacher", "random_model"):
        arm = results[name]
        assert arm["p_value"] > 1e-3 and arm["accounts"] == [], (name, arm)
    assert "p_value" in results["control_student"] and "accounts" in results["watermarked_student"]


def test_null_runs_with_fresh_keys_give_no_false_verdict(run: tuple[Path, dict]) -> None:
    _, results = run
    allowed = int(stats.binom.isf(1e-4, QUICK.null_runs, 1e-3))
    for arm in results["null_runs"].values():
        for test in ("reading", "api"):
            if test in arm:
                assert arm[test]["false_verdicts_at_alpha"] <= allowed, arm
                assert arm[test]["per_key_ks_p"] > 1e-4, arm  # per-key p-values uniform


def test_audit_cli_on_the_students_weights(run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run
    work = out / "work"
    config = tmp_path / "antidistill.toml"
    config.write_text(
        f'database_url = "sqlite:///{work / "marked" / "gateway.db"}"\n'
        f'[watermark]\nmaster_secret_file = "{work / "marked" / "wm.secret"}"\n'
    )
    report_dir = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "--suspect-path",
            str(work / "students" / "watermarked"),
            "--control-path",
            str(work / "students" / "control"),
            "--out",
            str(report_dir),
            "--prompts",
            "events",
            "--n-prompts",
            "16",
            "--max-tokens",
            "32",
            "--identity-samples",
            "1",
            "--min-tokens",
            "300",
            "--no-progress",
            "--no-canaries",
            "--no-similarity",
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((report_dir / "report.json").read_text())
    reading = next(t for t in report["tests"] if t["name"] == "radioactivity_reading")
    assert reading["log10_p"] <= -6 and report["verdict"] == "distilled", report["reason"]
    assert [a["account"] for a in report["accounts"]][:1] == ["harvester-0"]
    control = report["control"]
    c_reading = next(t for t in control["tests"] if t["name"] == "radioactivity_reading")
    assert c_reading["p_value"] > 1e-3 and control["accounts"] == []
    assert math.isfinite(report["log10_p"])
