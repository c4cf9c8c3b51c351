"""`specdec bench --concurrency`: end to end on tiny models, and its aggregation on hand-computed numbers."""

from __future__ import annotations

import json

import pytest

from specdec.bench.concurrency import LevelRun, markdown_table, rejected_share, summarize, time_per_output_token
from specdec.bench.configs import Config, Results, Run
from specdec.cli.main import main
from specdec.v1 import generation_pb2

SPECULATIVE, NONE = Config("model adaptive k", "model", 0), Config("draft=none")


def timed(tokens: list[int], first: float, last: float, drafted: int = 0, accepted: int = 0, calls: int = 1) -> Run:
    stats = generation_pb2.GenerationStats(drafted_tokens=drafted, accepted_tokens=accepted, target_calls=calls)
    return Run(tokens, last, stats, first_token_seconds=first, last_token_seconds=last)


def test_bench_at_two_concurrency_levels_reports_both_configurations_with_greedy_outputs_unchanged(
        tiny_target, tiny_draft, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": text}]}) + "\n"
                               for text in ["abcab", "gfedcba", "aabbcc", "fgfgab"]))
    out = tmp_path / "out"
    main(["bench", "--concurrency", "2,1", "--prompts", str(prompts), "--target-model", str(tiny_target),
          "--draft-model", str(tiny_draft), "--max-new-tokens", "10", "--ignore-eos", "--threads", "1",
          "--out", str(out)])

    results = json.loads((out / "concurrency.json").read_text())["results"]
    rows = {(row["config"], row["concurrency"]): row for row in results}
    assert set(rows) == {(config, level) for config in ("model adaptive k", "draft=none") for level in (1, 2)}
    for row in results:
        assert row["requests"] == 4 and row["tokens"] == 4 * 10 and row["tokens_per_second"] > 0
        assert row["reference_concurrency"] == 1 and row["mismatches"] == 0 and row["mismatched_prompts"] == []
        assert 0 < row["ttft_ms_p50"] <= row["ttft_ms_p95"] and 0 < row["tpot_ms_p50"] <= row["tpot_ms_p95"]
    assert rows["draft=none", 1]["rejected_share"] == 0 and 0 <= rows["model adaptive k", 2]["rejected_share"] < 1
    assert rows["model adaptive k", 1]["vs_lowest_level"] == 1 and rows["draft=none", 2]["vs_draft_none"] == 1
    assert (out / "concurrency.png").stat().st_size > 0
    table = (out / "concurrency.md").read_text()
    assert len(table.splitlines()) == 4 and "| 2 |" in table and "0/4" in table


def test_time_per_output_token_leaves_out_the_first_token():
    assert time_per_output_token(timed([1, 2, 3, 4, 5], first=0.2, last=1.0)) == pytest.approx(0.2)  # 0.8 s / 4
    assert time_per_output_token(timed([7], first=0.3, last=0.3)) is None


def test_rejected_share_counts_rejected_drafts_over_every_row_the_target_scored():
    runs = [timed([1], 0, 1, drafted=6, accepted=2, calls=3), timed([1], 0, 1, drafted=0, accepted=0, calls=5)]
    assert rejected_share(Results(SPECULATIVE, runs)) == pytest.approx(4 / 14)  # (6 - 2) / (6 + 3 + 0 + 5)
    assert rejected_share(Results(NONE, [])) == 0.0


def test_summarize_gives_throughput_ratios_latency_percentiles_and_mismatches():
    rounds = {
        (1, SPECULATIVE.name): [LevelRun(2.0, {0: timed([1, 2, 3], 0.1, 0.5, drafted=4, accepted=2, calls=2),
                                               1: timed([4, 5], 0.2, 0.3, drafted=2, accepted=2, calls=1)})],
        (2, SPECULATIVE.name): [LevelRun(1.0, {1: timed([4, 6], 0.2, 0.3), 0: timed([1, 2, 3], 0.1, 0.5)})],
        (1, NONE.name): [LevelRun(4.0, {0: timed([1, 2, 3], 0.1, 0.5), 1: timed([4, 5], 0.2, 0.3)})],
        (2, NONE.name): [LevelRun(2.5, {0: timed([1, 2, 3], 0.1, 0.5), 1: timed([4, 5], 0.2, 0.3)})],
    }
    rows = {(r["config"], r["concurrency"]): r for r in summarize([SPECULATIVE, NONE], rounds, [1, 2])}
    one = rows[SPECULATIVE.name, 1]
    assert one["tokens"] == 5 and one["tokens_per_second"] == 2.5 and one["vs_draft_none"] == 2.0  # 5/2 over 5/4
    assert one["tpot_ms_p50"] == pytest.approx(150) and one["tpot_ms_p95"] == pytest.approx(200)  # 0.2 and 0.1 s
    assert one["ttft_ms_p50"] == pytest.approx(150) and one["ttft_ms_p95"] == pytest.approx(200)
    assert one["rejected_share"] == pytest.approx(2 / 9) and one["mismatches"] == 0  # (6 - 4) / (6 + 3)
    two = rows[SPECULATIVE.name, 2]
    assert two["vs_lowest_level"] == 2.0 and two["vs_draft_none"] == 2.5 and two["mismatches"] == 1
    assert two["mismatched_prompts"] == [1] and rows[NONE.name, 2]["vs_lowest_level"] == 1.6
    table = markdown_table(list(rows.values()), [SPECULATIVE, NONE], [1, 2], greedy=True)
    assert "| 2 | 5.0 (2.00×) | 150.0 / 200.0 | 150 / 200 | 0.0% | 1/2 | 2.0 (1.60×) |" in table
