"""specdec.bench.front_doors on tiny models: both doors measured, outputs identical."""

from __future__ import annotations

import json
import subprocess
import sys


def test_front_doors_measures_both_doors_on_the_same_requests(tiny_target, tiny_draft, tmp_path):
    out = tmp_path / "doors.json"
    subprocess.run([sys.executable, "-m", "specdec.bench.front_doors", "--target-model", str(tiny_target),
                    "--draft-model", str(tiny_draft), "--limit", "3", "--max-new-tokens", "12", "--out", str(out)],
                   check=True, timeout=300, capture_output=True)
    results = json.loads(out.read_text())
    assert results["prompts"] == 3 and results["identical_outputs"] == 3
    assert all(results["median_ms"][door]["per_token"] > 0 for door in ("grpc", "http"))
    assert results["http_over_grpc"]["per_token"] > 0 and results["http_over_grpc"]["first_chunk"] > 0
