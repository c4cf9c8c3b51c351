"""`specdec bench` end to end on tiny models: every configuration runs and reports, greedy stays exact."""

from __future__ import annotations

import json

from specdec.cli.main import main


def test_bench_runs_every_configuration_and_writes_its_reports(tiny_target, tiny_draft, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(
        json.dumps({"id": f"p{i}", "category": "ab"[i % 2], "messages": [{"role": "user", "content": text}]}) + "\n"
        for i, text in enumerate(["abcab", "gfedcba", "aabbcc"])
    ))
    out = tmp_path / "out"
    main(["bench", "--prompts", str(prompts), "--target-model", str(tiny_target), "--draft-model", str(tiny_draft),
          "--max-new-tokens", "12", "--repeats", "2", "--k", "1,3", "--ngram-k", "2", "--lenience", "1,0.5", "--out", str(out)])

    report = json.loads((out / "results.json").read_text())
    rows = {row["config"]: row for row in report["results"]}
    assert set(rows) == {
        "draft=none", "model k=1", "model k=3", "model adaptive k", "model adaptive k, lenience 0.5",
        "ngram k=2", "ngram adaptive k", "transformers generate", "transformers assisted", "transformers prompt lookup",
    }
    exact = [name for name in rows if "lenience" not in name]
    assert [name for name in exact if not rows[name]["same_as_target"]] == []
    assert rows["draft=none"]["speedup"] == 1.0 and rows["draft=none"]["tokens_per_target_call"] == 1.0
    assert rows["model k=3"]["mean_k"] <= 3 and 0 <= rows["model k=3"]["acceptance_rate"] <= 1
    assert rows["model k=3"]["lookup_drafted_share"] == 0 and 0 <= rows["model adaptive k"]["lookup_drafted_share"] <= 1
    lenient = rows["model adaptive k, lenience 0.5"]
    assert 0 <= lenient["agreement_with_exact"] <= 1 and lenient["target_mean_log_likelihood"] < 0
    categories = {(row["category"], row["drafter"]): row for row in report["by_category"]}
    assert set(categories) == {("a", "model"), ("b", "model"), ("a", "ngram"), ("b", "ngram")}
    assert categories[("a", "model")]["runs"] == 4 and categories[("a", "model")]["best_fixed_k"] in (1, 3)
    assert (out / "plot.png").stat().st_size > 0 and "| draft=none |" in (out / "results.md").read_text()
