"""`specdec distill --method eagle`: an EAGLE-style head (specdec.runtime.eagle_head) for the target.

On the same data as the LM draft (data.py: the target's own answers and its top-k logits):
1. features: the target runs once over every prompt + answer (batched) and its final hidden states
   are stored as float16, one file per data shard (resumable);
2. the vocabulary slice: the `slice_size` tokens the target outputs most often in that data;
3. training (train.fit): per answer position i the head reads f_{i-1} and x_i, and its g_i is pulled
   towards f_i (smooth L1) and its slice logits towards the target's choice (CE on the argmax + CE
   against the top-k distribution, both over the slice). `ttt_steps` unrolled steps feed the head
   its own g in place of f (training-time test), each weighted half the one before.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from specdec.runtime.cached_lm import Step
from specdec.runtime.eagle_head import EagleConfig, EagleHead


@dataclass(frozen=True)
class EagleOptions:
    slice_size: int = 8192
    ttt_steps: int = 2
    reg_weight: float = 1.0  # smooth L1 between g and the target's feature
    hard_weight: float = 0.5
    soft_weight: float = 0.5


@dataclass(frozen=True)
class Example:
    """One answer: tokens x = prompt + answer[:-1], the target's features at each of its positions, and
    the target's top-k at the positions from `start` on (each predicts the next answer token)."""

    token_ids: torch.Tensor  # [S] int64
    features: torch.Tensor  # [S, d] float16: f_i
    start: int  # = len(prompt) - 1
    top_ids: torch.Tensor  # [S - start, K] int64
    top_logits: torch.Tensor  # [S - start, K] float32

    @property
    def num_targets(self) -> int:
        return self.top_ids.shape[0]


@torch.inference_mode()
def target_features(target, sequences: list[list[int]], device: str, batch_tokens: int = 4096) -> list[torch.Tensor]:
    """[len(seq), d] float16 final hidden states of the target over each sequence (batched by length)."""
    decoder = target.get_decoder()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    start = 0
    while start < len(order):
        width = len(sequences[order[min(len(order) - 1, start)]])
        rows = max(1, batch_tokens // max(width, 1))
        chunk = order[start : start + rows]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for b, i in enumerate(chunk):  # right padding: a causal pass never reads it
            ids[b, : len(sequences[i])] = torch.tensor(sequences[i])
            mask[b, : len(sequences[i])] = 1
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        for b, i in enumerate(chunk):
            out[i] = hidden[b, : len(sequences[i])].to("cpu", torch.float16)
        start += len(chunk)
    return out


def extract_features(target, data_dir: Path, device: str) -> list[Example]:
    """The examples of every data shard, extracting (and storing) the features of shards that lack them."""
    shards = sorted(Path(data_dir).glob("shard-*.pt"))
    examples: list[Example] = []
    for shard in tqdm(shards, desc="distill: target features", unit="shard", dynamic_ncols=True):
        records = [r for r in torch.load(shard, weights_only=True) if r["answer"]]
        path = shard.with_name(shard.name.replace("shard-", "features-"))
        sequences = [r["prompt"] + r["answer"][:-1] for r in records]
        if path.exists():
            features = torch.load(path, weights_only=True)
        else:
            features = target_features(target, sequences, device)
            torch.save(features, path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)
        for record, ids, feats in zip(records, sequences, features):
            examples.append(Example(torch.tensor(ids), feats, len(record["prompt"]) - 1,
                                    record["topk_ids"].long(), record["topk_logits"].float()))
    return examples


def frequent_tokens(examples: list[Example], size: int) -> torch.Tensor:
    """FR-Spec's slice, sorted by id: the `size` tokens the target chose most often; past the tokens it
    ever chose, those that came up most often among its top-k (tokens its sampled answers would use)."""
    chosen = Counter(int(t) for e in examples for t in e.top_ids[:, 0])
    listed = Counter(int(t) for e in examples for t in e.top_ids.flatten())
    ranked = sorted(listed.keys() | chosen.keys(), key=lambda t: (-chosen[t], -listed[t], t))[:size]
    return torch.tensor(sorted(ranked), dtype=torch.long)


def build_head(target_spec: str, target, examples: list[Example], options: EagleOptions) -> EagleHead:
    """A head shaped like the target's layers, attached to the target's tables, starting as "the next
    feature is the last one": fc passes the feature half through and the output norm is the target's."""
    head = EagleHead(EagleConfig.for_target(target_spec, target, options.slice_size))
    ids = frequent_tokens(examples, options.slice_size)
    head.slice_ids = torch.cat([ids, torch.zeros(head.config.slice_size - len(ids), dtype=torch.long)])
    head.attach_target(target)
    with torch.no_grad():
        d = head.config.hidden_size
        head.fc.weight.zero_()
        head.fc.weight[:, :d] = torch.eye(d)
        final_norm = getattr(target.get_decoder(), "norm", None)
        if final_norm is not None and getattr(final_norm, "weight", None) is not None:
            head.out_norm.weight.copy_(final_norm.weight.detach().float())
    return head


class EagleLoss:
    """train.fit's loss for the head: (loss, stats with "acc" = step 1's agreement with the target's argmax)."""

    def __init__(self, head: EagleHead, options: EagleOptions, bf16: bool) -> None:
        self.options, self.bf16 = options, bf16
        # Full vocabulary id -> index in the slice, -1 outside it.
        self._index = torch.full((head.config.vocab_size,), -1, dtype=torch.long)
        self._index[head.slice_ids] = torch.arange(head.config.slice_size)

    def __call__(self, head: EagleHead, batch: list[Example], device: str) -> tuple[torch.Tensor, dict]:
        width = max(e.token_ids.shape[0] for e in batch)
        d = head.config.hidden_size
        tokens = torch.zeros(len(batch), width, dtype=torch.long)
        features = torch.zeros(len(batch), width, d)
        rows, cols = [], []
        for b, e in enumerate(batch):
            tokens[b, : e.token_ids.shape[0]] = e.token_ids
            features[b, : e.token_ids.shape[0]] = e.features.float()
            rows += [b] * e.num_targets
            cols += range(e.start, e.start + e.num_targets)
        rows_t, cols_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        features, tokens = features.to(device), tokens.to(device)
        previous = torch.cat([torch.zeros_like(features[:, :1]), features[:, :-1]], dim=1)  # f_{i-1} at i
        wanted = features[rows_t, cols_t]  # [N, d] f_i
        top_ids = torch.cat([e.top_ids for e in batch]).to(device)  # [N, K]
        top_p = F.softmax(torch.cat([e.top_logits for e in batch]).to(device), dim=-1)
        index = self._index.to(device)
        label = index[top_ids[:, 0]]  # [N] the target's argmax in the slice, -1 outside
        top_index = index[top_ids]  # [N, K]
        in_slice = top_index >= 0
        soft_p = torch.where(in_slice, top_p, 0.0)
        soft_p = soft_p / soft_p.sum(-1, keepdim=True).clamp(min=1e-9)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16):
            outputs = head.unrolled(previous, tokens, self.options.ttt_steps)
        total = torch.zeros((), device=device)
        stats: dict = {"tokens": len(rows)}
        for step, g in enumerate(outputs):
            g = g[rows_t, cols_t].float()  # [N, d]
            logq = F.log_softmax(head.logits(g).float(), dim=-1)  # [N, slice]
            reg = F.smooth_l1_loss(g, wanted)
            hard = -(logq.gather(1, label.clamp(min=0)[:, None])[:, 0] * (label >= 0)).sum() / max(len(rows), 1)
            soft = -(soft_p * logq.gather(1, top_index.clamp(min=0))).sum(-1).mean()
            o = self.options
            total = total + 0.5**step * (o.reg_weight * reg + o.hard_weight * hard + o.soft_weight * soft)
            with torch.no_grad():
                acc = float((head.slice_ids[logq.argmax(-1)] == top_ids[:, 0]).float().mean())
            stats["acc" if step == 0 else f"acc{step + 1}"] = acc
            if step == 0:
                stats.update(reg=float(reg.detach()), hard=float(hard.detach()))
        return total, stats


@torch.inference_mode()
def chain_matches(head: EagleHead, target, prompt: list[int], answer: list[int], steps: int) -> list[list[bool]]:
    """[steps][len(answer)]: whether the head's t-th drafted token, drafted after the target's greedy
    prefix prompt + answer[:j - t + 1] with the drafts before it right, is the target's answer[j]."""
    ids = prompt + answer[:-1]
    feats = target_features(target, [ids], str(head.slice_ids.device))[0].float()[None]  # [1, S, d]
    previous = torch.cat([torch.zeros_like(feats[:, :1]), feats[:, :-1]], dim=1)
    outputs = head.unrolled(previous, torch.tensor([ids]), steps)
    start = len(prompt) - 1
    want = torch.tensor(answer)
    return [(head.slice_ids[head.logits(g[0, start:]).argmax(-1)] == want).tolist() for g in outputs]


def train_head(target_spec: str, target, examples: list[Example], options: EagleOptions, train_options, work: Path,
               device: str) -> EagleHead:
    from specdec.distill.train import fit

    torch.manual_seed(train_options.seed)
    head = build_head(target_spec, target, examples, options)  # a resumed run restores the slice with the weights
    loss = EagleLoss(head, options, train_options.bf16)
    trained = [p for p in head.parameters() if p.requires_grad]
    groups = [{"params": trained, "lr_scale": 1.0, "weight_decay": 0.0}]
    signature = {"head": asdict(head.config), "options": asdict(options)}
    head = fit(head, examples, loss, train_options, work, device, groups, signature, {},
               size=lambda example: example.num_targets)
    head.attach_target(target)  # the slice as trained (a resumed run's may differ from a fresh count)
    return head


def measure(target, head: EagleHead, tokenizer, prompts: list[str], max_new_tokens: int = 128,
            k_values=(2, 3, 4, 6)) -> dict:
    """Teacher-forced acceptance per drafted position on held-out prompts, greedy speculative replays, and c."""
    from specdec.distill.data import render
    from specdec.distill.eval import decode_calls, interleaved_medians, speculative_greedy, target_greedy_answers
    from specdec.runtime.eagle_lm import EagleLM
    from specdec.runtime.features import FeatureRows

    head = head.float().eval()
    prompt_ids = [render(tokenizer, p) for p in prompts]
    answers = target_greedy_answers(target, tokenizer, prompt_ids, max_new_tokens)
    steps = max(k_values)
    chains = [chain_matches(head, target, p, a, steps) for p, a in zip(prompt_ids, answers)]
    first = [m for chain in chains for m in chain[0]]
    result: dict = {"prompts": len(prompts), "tokens_per_prompt": max_new_tokens, "positions": len(first),
                    "slice_size": head.config.slice_size,
                    "slice_coverage": sum(t in set(head.slice_ids.tolist()) for a in answers for t in a) / len(first)}
    for t in range(min(steps, 3)):  # P(draft t+1 right | draft t right): drafts after t right ones
        pairs = [(chain[t][j], chain[t - 1][j - 1] if t else True) for chain in chains for j in range(t, len(chain[0]))]
        given = [ok for ok, before in pairs if before]
        result[f"acceptance_pos{t + 1}"] = sum(given) / max(len(given), 1)
    result["greedy_acceptance"] = result["acceptance_pos1"]
    for k in k_values:
        d, a, calls = map(sum, zip(*(speculative_greedy(chain, k) for chain in chains)))
        result[f"spec_acceptance_k{k}"] = a / d
        result[f"tokens_per_call_k{k}"] = len(first) / calls
    # c: one drafted token (the head's own guess fed back) against one target decode step.
    context = prompt_ids[0] + answers[0][:60]
    feats = FeatureRows(0, target_features(target, [context[:-1]], str(head.slice_ids.device))[0])
    eagle_lm = EagleLM(head, 1 << 26, len(context) + 8)
    calls = {
        "draft": (lambda: eagle_lm.forward([Step("s", context, 1, features=feats)]),
                  lambda i: eagle_lm.forward([Step("s", context + [context[(i + 7) % len(context)]], 1)])),
        "target": decode_calls(target, context),
    }
    times = interleaved_medians(calls, 40)
    result.update({"draft_step_ms": times["draft"] * 1e3, "target_step_ms": times["target"] * 1e3,
                   "c": times["draft"] / times["target"], "device": str(head.slice_ids.device),
                   "threads": torch.get_num_threads()})
    return result


def model_card(args, plan, examples: list[Example], times: dict, metrics: dict | None, head: EagleHead,
               argv: list[str]) -> str:
    c = head.config
    params = sum(p.numel() for p in head.parameters())
    tokens = sum(e.num_targets for e in examples)
    lines = [
        "---", "tags: [speculative-decoding, eagle, draft-head, distillation]", "---",
        f"# EAGLE draft head for `{c.target}`", "",
        "A one-layer head that drafts from the target's own final hidden states, trained with `specdec distill "
        "--method eagle` (`specdec serve draft --model THIS_DIR`; the target service sends the features).", "",
        "## Architecture",
        f"[feature ; embedding] -> linear {2 * c.hidden_size}->{c.hidden_size} -> one decoder layer at the target's width "
        f"({c.num_heads} heads, {c.num_kv_heads} KV heads, MLP {c.intermediate_size}) -> RMSNorm -> the target's output "
        f"layer restricted to its {c.slice_size} most frequent output tokens (FR-Spec). {params / 1e6:.2f} M own "
        f"parameters, stored as {args.export_dtype}; the embeddings and the output-layer slice are the target's, "
        "taken from it at load.", "",
        "## Recipe",
        f"- Data: the target's own answers (pass temperatures {plan.passes}, at most {plan.max_new_tokens} new tokens): "
        f"{len(examples)} answers, {tokens} answer positions; the target's features over every prompt + answer, "
        "extracted once.",
        f"- Loss per answer position and unrolled step s (weight 0.5^s, {args.ttt_steps} steps, the later ones reading "
        f"the head's own guesses): {args.reg_weight} x smooth L1(g, target feature) + {args.hard_weight} x CE(target "
        f"argmax) + {args.soft_weight} x CE(target top-{plan.topk}), over the slice.",
        f"- AdamW, lr {args.lr} (warm-up, cosine decay to 10%), {args.batch_tokens} answer tokens per step; "
        f"{times.get('train_seconds', 0) / 60:.1f} min ({times.get('train_steps', 0)} steps) on {times.get('device', '?')}; "
        f"held-out agreement {times.get('best_val_acc') or float('nan'):.3f} (every 25th answer).", "",
    ]
    if metrics:
        lines += [
            "## Measured (held-out prompts)",
            f"`{metrics['eval_prompts']}`: {metrics['prompts']} prompts, target-greedy answers of <= "
            f"{metrics['tokens_per_prompt']} tokens, {metrics['positions']} positions; fp32 on {metrics['device']}, "
            f"{metrics['threads']} torch threads.", "",
            "| metric | value |", "|---|---|",
            f"| slice coverage of the target's answer tokens | {metrics['slice_coverage']:.3f} |",
            *(f"| acceptance at drafted position {t} (given the drafts before it right) | {metrics[f'acceptance_pos{t}']:.3f} |"
              for t in (1, 2, 3) if f"acceptance_pos{t}" in metrics),
            *(f"| greedy speculative, k={k}: acceptance / tokens per target call | "
              f"{metrics[f'spec_acceptance_k{k}']:.3f} / {metrics[f'tokens_per_call_k{k}']:.2f} |"
              for k in (2, 3, 4, 6) if f"spec_acceptance_k{k}" in metrics),
            f"| head step (one drafted token) | {metrics['draft_step_ms']:.2f} ms |",
            f"| target decode step | {metrics['target_step_ms']:.2f} ms |",
            f"| draft cost c | {metrics['c']:.3f} |", "",
        ]
    lines += ["## Reproduce", "```sh", "specdec distill " + " ".join(argv), "```", ""]
    return "\n".join(lines)
