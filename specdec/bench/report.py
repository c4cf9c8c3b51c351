"""`specdec bench` reports: the summary rows (speedup, acceptance, c, verify cost, the paper's
predicted speedup, time breakdown, wire bytes, lenience quality), per-category adaptive-k
comparison, the Markdown tables and the plot."""

from __future__ import annotations

import statistics
from pathlib import Path

from specdec.bench.configs import Config, Results
from specdec.bench.peers import Peers
from specdec.runtime.cached_lm import common_prefix_len


def summarize(results: dict[Config, Results], baseline: Results, peers: Peers | None, prompts: list[list[int]]) -> list[dict]:
    base_tps = statistics.median(baseline.tokens_per_second())
    step = baseline.total("target_seconds") / baseline.total("target_calls")  # one plain target step
    exact = {r.config.draft: r for r in results.values() if r.config.lenience == 1.0 and not r.config.peer}
    rows = []
    for r in results.values():
        tps = r.tokens_per_second()
        row = {
            "config": r.config.name,
            "tokens_per_second_median": statistics.median(tps),
            "tokens_per_second_min": min(tps),
            "tokens_per_second_max": max(tps),
            "speedup": statistics.median(tps) / base_tps,
            "same_as_target": all(a.tokens == b.tokens for a, b in zip(r.runs, baseline.runs)),
        }
        if r.config.peer:
            rows.append(row)
            continue
        generated, calls = r.total("generated_tokens"), r.total("target_calls")
        drafted, accepted = r.total("drafted_tokens"), r.total("accepted_tokens")
        elapsed, draft_s, target_s = r.total("elapsed_seconds"), r.total("draft_seconds"), r.total("target_seconds")
        draft_compute, target_compute = r.total("draft_compute_seconds"), r.total("target_compute_seconds")
        overhead = elapsed - draft_compute - target_compute  # orchestration + RPC + serialisation
        alpha = accepted / drafted if drafted else 0.0
        mean_k = drafted / calls
        c = draft_s / drafted / step if drafted else 0.0
        v = target_s / calls / step
        expected = (1 - alpha ** (mean_k + 1)) / (1 - alpha) if alpha < 1 else mean_k + 1
        row.update({
            "acceptance_rate": alpha,
            "lookup_drafted_share": r.total("lookup_drafted_tokens") / drafted if drafted else 0.0,
            "tokens_per_target_call": generated / calls,
            "mean_k": mean_k,
            "c": c,
            "verify_cost": v,
            "predicted_speedup": expected / (mean_k * c + v),
            "ms_per_iteration": {"draft": 1000 * draft_compute / calls, "verify": 1000 * target_compute / calls,
                                 "orchestration_rpc": 1000 * overhead / calls},
            "overhead_share": overhead / elapsed,
            "wire_bytes_per_token": r.total("wire_bytes") / generated,
        })
        if r.config.lenience != 1.0 and peers is not None and r.config.draft in exact:
            reference = exact[r.config.draft].runs
            row["agreement_with_exact"] = statistics.mean(
                common_prefix_len(a.tokens, b.tokens) / len(b.tokens) for a, b in zip(r.runs, reference)
            )
            row["target_mean_log_likelihood"] = statistics.mean(
                peers.mean_log_likelihood(p, run.tokens) for p, run in zip(prompts, r.runs)
            )
            row["exact_mean_log_likelihood"] = statistics.mean(
                peers.mean_log_likelihood(p, run.tokens) for p, run in zip(prompts, reference)
            )
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], greedy: bool) -> str:
    header = ["config", "tokens/s median (min–max)", "speedup", "predicted", "acceptance", "tokens/call", "c",
              "verify cost", "ms/iteration: draft · verify · orchestration+RPC (share)", "wire B/token"]
    header += ["= target"] if greedy else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        spec = "acceptance_rate" in r
        ms = r.get("ms_per_iteration", {})
        cells = [
            r["config"],
            f"{r['tokens_per_second_median']:.1f} ({r['tokens_per_second_min']:.1f}–{r['tokens_per_second_max']:.1f})",
            f"{r['speedup']:.2f}×",
            f"{r['predicted_speedup']:.2f}×" if spec and r["mean_k"] else "–",
            f"{r['acceptance_rate']:.2f}" if spec and r["mean_k"] else "–",
            f"{r['tokens_per_target_call']:.2f}" if spec else "–",
            f"{r['c']:.3f}" if spec and r["mean_k"] else "–",
            f"{r['verify_cost']:.2f}" if spec else "–",
            f"{ms['draft']:.1f} · {ms['verify']:.1f} · {ms['orchestration_rpc']:.1f} ({r['overhead_share']:.1%})"
            if spec else "–",
            f"{r['wire_bytes_per_token']:.0f}" if spec else "–",
        ]
        if greedy:
            cells.append("yes" if r["same_as_target"] else "no")
        lines.append("| " + " | ".join(cells) + " |")
    lenient = [r for r in rows if "agreement_with_exact" in r]
    if lenient:
        lines += ["", "| lenience config | speedup | agreement with exact | target log-lik (exact) |", "|---|---|---|---|"]
        lines += [f"| {r['config']} | {r['speedup']:.2f}× | {r['agreement_with_exact']:.2f} | "
                  f"{r['target_mean_log_likelihood']:.3f} ({r['exact_mean_log_likelihood']:.3f}) |" for r in lenient]
    return "\n".join(lines)


def by_category(results: dict[Config, Results], categories: list[str]) -> list[dict]:
    """Per prompt category: median tokens/s of each fixed k and of adaptive k, for each drafter."""
    rows = []
    for category in sorted(set(categories)):
        picked = [i for i, c in enumerate(categories) if c == category]

        def median_tps(r: Results) -> float:
            return statistics.median(len(r.runs[i].tokens) / r.runs[i].seconds for i in picked)

        for drafter in ("model", "ngram"):
            fixed = {r.config.k: median_tps(r) for r in results.values()
                     if r.config.draft == drafter and r.config.k and r.config.lenience == 1.0}
            adaptive = [median_tps(r) for r in results.values()
                        if r.config.draft == drafter and not r.config.k and r.config.lenience == 1.0]
            if fixed and adaptive:
                best_k = max(fixed, key=fixed.get)
                rows.append({"category": category, "drafter": drafter, "runs": len(picked), "best_fixed_k": best_k,
                             "best_fixed_tokens_per_second": fixed[best_k], "adaptive_tokens_per_second": adaptive[0],
                             "adaptive_vs_best_fixed": adaptive[0] / fixed[best_k]})
    return rows


def category_table(rows: list[dict]) -> str:
    lines = ["| category | drafter | runs | best fixed k | its tokens/s | adaptive tokens/s | adaptive / best |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['category']} | {r['drafter']} | {r['runs']} | {r['best_fixed_k']} | "
              f"{r['best_fixed_tokens_per_second']:.1f} | {r['adaptive_tokens_per_second']:.1f} | "
              f"{r['adaptive_vs_best_fixed']:.2f} |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_k, predicted) = plt.subplots(1, 2, figsize=(11, 4.2))
    fixed = [(int(r["config"].split("k=")[1]), r["speedup"]) for r in rows if r["config"].startswith("model k=")]
    if fixed:
        by_k.plot(*zip(*sorted(fixed)), "o-", label="model draft, fixed k")
    for r in rows:
        if "adaptive" in r["config"] and "lenience" not in r["config"]:
            by_k.axhline(r["speedup"], linestyle="--", label=r["config"], color="C1" if "model" in r["config"] else "C2")
    by_k.axhline(1.0, color="grey", linewidth=0.8)
    by_k.set(xlabel="k (drafted tokens per iteration)", ylabel="speedup vs draft=none", title="Speedup vs k")
    by_k.legend(fontsize=8)
    spec = [r for r in rows if r.get("mean_k")]
    predicted.scatter([r["predicted_speedup"] for r in spec], [r["speedup"] for r in spec])
    for r in spec:
        predicted.annotate(r["config"], (r["predicted_speedup"], r["speedup"]), fontsize=7)
    low = min([1.0] + [min(r["predicted_speedup"], r["speedup"]) for r in spec]) * 0.9
    high = max([1.0] + [max(r["predicted_speedup"], r["speedup"]) for r in spec]) * 1.1
    predicted.plot([low, high], [low, high], color="grey", linewidth=0.8)
    predicted.set(xlabel="predicted E / (k c + v)", ylabel="measured", title="Measured vs predicted speedup")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
