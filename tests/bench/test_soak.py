"""`specdec soak`: a short soak of the default models passes, and the judge fails what it should."""

from __future__ import annotations

import json

import pytest

from specdec.bench.soak import failures
from specdec.cli.main import main


def test_the_judge_fails_errors_mismatches_exits_and_memory_growth():
    rss = {role: {"warm_mib": 100.0, "end_mib": 101.0, "growth_pct": 1.0} for role in ("target", "draft")}
    clean = {"errors": {}, "mismatches": 0, "exited": [], "rss": rss}
    assert failures(clean) == []
    grown = {**clean, "rss": {**rss, "draft": {"warm_mib": 100.0, "end_mib": 112.0, "growth_pct": 12.0}}}
    assert failures(grown) == ["draft RSS grew 12.0% after warm-up"]
    assert failures({**clean, "rss": {"target": {"warm_mib": 100.0, "end_mib": 110.0, "growth_pct": 10.0}}})
    broken = {**clean, "errors": {"UNAVAILABLE": 2}, "mismatches": 1, "exited": ["target"]}
    assert failures(broken) == ["2 UNAVAILABLE errors", "1 outputs differ from their solo runs",
                                "the target service exited"]


def test_a_short_soak_of_the_default_models(default_model, tmp_path):
    """The CI-sized version of `specdec soak --streams 16 --minutes 5`, on the real default pair."""
    out = tmp_path / "soak.json"
    with pytest.raises(SystemExit) as exit_:
        main(["soak", "--streams", "16", "--minutes", "0.4", "--max-new-tokens", "24", "--limit", "8",
              "--threads", "1", "--out", str(out)])
    summary = json.loads(out.read_text())
    assert exit_.value.code == 0 and summary["failures"] == []
    assert summary["errors"] == {} and summary["mismatches"] == 0 and summary["exited"] == []
    assert summary["requests"] >= 16 and summary["tokens_per_second"] > 0
    assert 0 < summary["latency_median_s"] <= summary["latency_p95_s"]
    assert set(summary["rss"]) == {"target", "draft", "orchestrator"}
    assert all(rss["warm_mib"] > 0 and rss["end_mib"] > 0 for rss in summary["rss"].values())
    assert all(rss["growth_pct"] < 10 for rss in summary["rss"].values())
