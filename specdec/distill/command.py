"""`specdec distill`: train a small draft model for a target, on the target's own answers.

    specdec distill --target default --out DIR [--prompts FILE] [--gen-minutes N] [--minutes N]

Three stages, each resumable (their state lives in `--work`, default DIR/.distill):
1. data: the target answers the prompts (chat template; a greedy pass, then sampled passes) and
   its top-k logits at every answer position are stored once (data.py);
2. train: a narrow stock LlamaForCausalLM with the target's tokenizer, its tied embeddings
   initialised from the top principal directions of the target's embeddings, learns the target's
   next-token choice (cross-entropy on the target's argmax + cross-entropy against the target's
   top-k distribution), checkpointing to `--work/checkpoint.pt` (train.py);
3. export: DIR gets safetensors + config + tokenizer files (loads with
   AutoModelForCausalLM.from_pretrained and `specdec serve draft --model DIR`) and a model card
   README.md; with `--eval-prompts`, the card carries measured acceptance and draft cost c.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from specdec.default_models import DEFAULT_MODEL

PROMPTS_FILE = resources.files("specdec.distill") / "prompts.txt"  # the packaged prompt list


def add_parser(commands) -> None:
    p = commands.add_parser("distill", help="train a small draft model on the target's own answers",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=DEFAULT_MODEL, help="HF id, directory, .gguf file or 'default'")
    p.add_argument("--out", required=True, help="directory the draft model is written to")
    p.add_argument("--work", default="", help="data shards + checkpoint (default: OUT/.distill)")
    p.add_argument("--prompts", type=Path, default=PROMPTS_FILE,
                   help="one prompt per line, or a chat .jsonl (default: the packaged prompt list)")
    p.add_argument("--max-prompts", type=int, default=0, help="use only the first N prompts (0 = all)")
    p.add_argument("--method", choices=["lm", "eagle"], default="lm",
                   help="lm: a small causal LM drafting from tokens; eagle: a one-layer head drafting from the target's "
                        "features (served with them over the wire), on the same data")
    p.add_argument("--stage", choices=["all", "data", "train", "export"], default="all",
                   help="run up to and including this stage (all = data, train, export)")
    # data
    p.add_argument("--passes", default="0,0.8", help="temperature of each pass over the prompts (0 = greedy)")
    p.add_argument("--gen-minutes", type=float, default=30.0, help="time budget of data generation")
    p.add_argument("--gen-batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--topk", type=int, default=32, help="teacher logits stored per position")
    # model
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--max-context", type=int, default=0, help="max_position_embeddings (0 = the target's)")
    # eagle (the head is shaped like one of the target's layers)
    p.add_argument("--slice-size", type=int, default=8192,
                   help="eagle: the target's most frequent output tokens the head scores (FR-Spec)")
    p.add_argument("--ttt-steps", type=int, default=2,
                   help="eagle: unrolled steps per position, each after the head's own guess (training-time test)")
    p.add_argument("--reg-weight", type=float, default=1.0, help="eagle: weight of smooth L1 to the target's feature")
    # training
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget (summed over resumes)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0 = no limit)")
    p.add_argument("--batch-tokens", type=int, default=2048, help="answer tokens per optimizer step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hard-weight", type=float, default=1.0, help="weight of CE on the target's argmax")
    p.add_argument("--soft-weight", type=float, default=1.0, help="weight of CE against the target's top-k distribution")
    p.add_argument("--embed-lr-scale", type=float, default=0.3, help="embedding learning rate / --lr")
    p.add_argument("--bf16", action="store_true", help="autocast training matmuls to bfloat16 (CPUs with AMX, GPUs)")
    p.add_argument("--checkpoint-every-s", type=float, default=60.0)
    p.add_argument("--export-dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    # measurement
    p.add_argument("--eval-prompts", default="", help="held-out prompts (.jsonl or .txt) to measure acceptance and c on")
    p.add_argument("--eval-tokens", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto = cuda when available, else cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default; 1 is far faster on a CPU shared with other work)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from specdec.distill import data as distill_data
    from specdec.runtime.models import load_model, load_tokenizer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    out = Path(args.out)
    work = Path(args.work) if args.work else out / ".distill"
    work.mkdir(parents=True, exist_ok=True)
    stages = ["data", "train", "export"]
    last = len(stages) if args.stage == "all" else stages.index(args.stage) + 1

    tokenizer = load_tokenizer(args.target)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    target = load_model(args.target, "float32", device)
    prompts = distill_data.read_prompts(args.prompts)
    if args.max_prompts:
        prompts = prompts[: args.max_prompts]
    plan = distill_data.GenerationPlan(prompts, [float(t) for t in args.passes.split(",")], args.gen_batch_size,
                                       args.max_new_tokens, args.topk, args.seed)
    _write_json(work / "data-plan.json", {"prompts_file": args.prompts.name, "num_prompts": len(prompts),
                                          "passes": plan.passes, "batch_size": plan.batch_size,
                                          "max_new_tokens": plan.max_new_tokens, "topk": plan.topk, "seed": plan.seed})
    gen_started = time.monotonic()
    distill_data.generate_data(target, tokenizer, plan, work / "data", args.gen_minutes)
    _add_time(work, "data_seconds", time.monotonic() - gen_started)
    if last < 2:
        return

    from specdec.distill import eval as distill_eval
    from specdec.distill import train as distill_train

    options = distill_train.TrainOptions(
        minutes=args.minutes, max_steps=args.max_steps, batch_tokens=args.batch_tokens, lr=args.lr,
        hard_weight=args.hard_weight, soft_weight=args.soft_weight, checkpoint_every_s=args.checkpoint_every_s,
        seed=args.seed, embed_lr_scale=args.embed_lr_scale, bf16=args.bf16)
    if args.method == "eagle":
        run_eagle(args, target, tokenizer, plan, options, work, out, device, last)
        return
    records = distill_data.load_shards(work / "data")
    if not records:
        raise SystemExit("distill: no training data (raise --gen-minutes)")
    config = distill_train.DraftConfig(args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate,
                                       args.max_context)
    draft = distill_train.train(target, tokenizer, records, config, options, work, device)
    if last < 3:
        return

    metrics = measure_if_asked(args, work, lambda prompts: distill_eval.measure(target, draft, tokenizer, prompts,
                                                                               args.eval_tokens))
    distill_train.export(draft, tokenizer, out, args.export_dtype)
    summary = distill_train.data_summary(records)
    state = json.loads((work / "times.json").read_text()) if (work / "times.json").exists() else {}
    (out / "README.md").write_text(model_card(args, plan, summary, state, metrics, draft), encoding="utf-8")
    print(f"distill: draft written to {out}")


def run_eagle(args, target, tokenizer, plan, options, work: Path, out: Path, device: str, last: int) -> None:
    import torch

    from specdec.distill import eagle
    from specdec.runtime.eagle_head import save_head

    examples = eagle.extract_features(target, work / "data", device)
    if not examples:
        raise SystemExit("distill: no training data (raise --gen-minutes)")
    eagle_options = eagle.EagleOptions(args.slice_size, args.ttt_steps, args.reg_weight, args.hard_weight,
                                       args.soft_weight)
    head = eagle.train_head(args.target, target, examples, eagle_options, options, work, device)
    if last < 3:
        return
    metrics = measure_if_asked(args, work, lambda prompts: eagle.measure(target, head, tokenizer, prompts,
                                                                         args.eval_tokens))
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    save_head(head, out, dtypes[args.export_dtype])
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(out)  # the target's: the head's ids are its ids
    state = json.loads((work / "times.json").read_text()) if (work / "times.json").exists() else {}
    (out / "README.md").write_text(eagle.model_card(args, plan, examples, state, metrics, head, _argv_of(args)),
                                   encoding="utf-8")
    print(f"distill: eagle head written to {out}")


def measure_if_asked(args, work: Path, measure) -> dict | None:
    """With --eval-prompts: measure(prompts) -> metrics, printed and kept in WORK/metrics.json."""
    if not args.eval_prompts:
        return None
    from specdec.distill import data as distill_data

    metrics = measure(distill_data.read_prompts(Path(args.eval_prompts)))
    metrics["eval_prompts"] = Path(args.eval_prompts).name
    _write_json(work / "metrics.json", metrics)
    print("distill: " + json.dumps(metrics))
    return metrics


def model_card(args, plan, summary: dict, times: dict, metrics: dict | None, draft) -> str:
    cfg = draft.config
    params = sum(p.numel() for p in draft.parameters())
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [speculative-decoding, draft-model, distillation]", "---",
        f"# Draft model for `{args.target}`", "",
        "A small causal LM that shares the target's tokenizer, trained with `specdec distill` to predict the",
        "target's next token, for speculative decoding (`specdec serve draft --model THIS_DIR`).", "",
        "## Architecture",
        f"`LlamaForCausalLM`: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads "
        f"({cfg.num_key_value_heads} KV heads), MLP {cfg.intermediate_size}, vocabulary {cfg.vocab_size} (the target's), "
        f"tied input/output embeddings; {params / 1e6:.2f} M parameters, stored as {args.export_dtype} "
        "(load with `dtype=float32` / `--dtype float32` on CPU).", "",
        "## Recipe",
        "- Data: the target itself answers the prompts (its chat template, one user message), "
        f"pass temperatures {plan.passes} (0 = greedy), at most {plan.max_new_tokens} new tokens; "
        f"its top-{plan.topk} raw logits are stored at every answer position (the teacher runs once).",
        "- Init: the draft's tied embedding matrix is the target's embedding matrix projected on the top "
        f"{cfg.hidden_size} principal directions of the target's final hidden states (measured on 16 answers), final norm "
        "at 1, layers random. That projected head, fed the target's own projected hidden states, keeps the target's "
        f"argmax on {times.get('init', {}).get('projected_head_agreement', float('nan')):.0%} of those (in-sample) positions "
        "and ~35% of unseen ones at width 128: the narrow output layer is the draft's main limit.",
        f"- Every 25th answer is held out; the exported weights are the step with the best held-out agreement "
        f"({times.get('best_val_acc') or float('nan'):.3f} at step {times.get('best_step')}).",
        f"- Loss, on answer positions only: {args.hard_weight} x CE(target argmax) + {args.soft_weight} x "
        f"CE(target top-{plan.topk} softmax, draft log-softmax over the full vocabulary).",
        f"- AdamW, lr {args.lr} (warm-up, cosine decay to 10%), {args.batch_tokens} answer tokens per step, "
        f"time budget {args.minutes:g} min.", "",
        "## Data provenance",
        f"- Prompts: `{args.prompts.name}` ({plan_prompt_note(args)}); the packaged list (`specdec/distill/prompts.txt`) "
        "is written for this purpose, templated instructions over many topics and task kinds "
        "(`specdec/distill/promptgen.py`), with the evaluation set's prompts excluded.",
        f"- Answers: {summary['answers']} target answers, {summary['tokens']} tokens "
        f"({summary['greedy_tokens']} greedy, {summary['tokens'] - summary['greedy_tokens']} sampled).",
        "- No external data set; no text from the evaluation prompts' answers.", "",
        "## Training time",
        f"- Data generation: {times.get('data_seconds', 0) / 60:.1f} min; training: {times.get('train_seconds', 0) / 60:.1f} min "
        f"({times.get('train_steps', 0)} steps, {times.get('train_tokens', 0)} answer tokens seen), "
        f"device: {times.get('device', '?')}.", "",
    ]
    if metrics:
        lines += [
            "## Measured (held-out prompts)",
            f"On `{metrics['eval_prompts']}` ({metrics['prompts']} prompts, target-greedy answers of <= {metrics['tokens_per_prompt']} tokens, "
            f"{metrics['positions']} positions), fp32 on {metrics['device']}, {metrics['threads']} torch threads:", "",
            "| metric | value |", "|---|---|",
            f"| greedy acceptance (draft argmax == target argmax after the target's greedy prefix) | {metrics['greedy_acceptance']:.3f} |",
            f"| greedy speculative acceptance rate, k=4 | {metrics['spec_acceptance_k4']:.3f} |",
            f"| tokens per target call, k=4 | {metrics['tokens_per_call_k4']:.2f} |",
            f"| draft decode step (KV cache) | {metrics['draft_step_ms']:.2f} ms |",
            f"| target decode step (KV cache) | {metrics['target_step_ms']:.2f} ms |",
            f"| draft cost c = draft step / target step | {metrics['c']:.3f} |", "",
        ]
    lines += ["## Reproduce", "```sh", "specdec distill " + " ".join(_argv_of(args)), "```", ""]
    return "\n".join(lines)


def plan_prompt_note(args) -> str:
    return f"first {args.max_prompts} prompts" if args.max_prompts else "all prompts"


def _argv_of(args) -> list[str]:
    """The command that made the draft, with no path of the machine it ran on."""
    shown = {
        "out": "OUT_DIR",
        "prompts": "" if args.prompts == PROMPTS_FILE else args.prompts.name,
        "eval_prompts": Path(args.eval_prompts).name if args.eval_prompts else "",
    }
    keys = ["target", "out", "method", "prompts", "max_prompts", "passes", "gen_minutes", "gen_batch_size", "max_new_tokens",
            "topk"]
    keys += (["slice_size", "ttt_steps", "reg_weight"] if args.method == "eagle"
             else ["hidden", "layers", "heads", "kv_heads", "intermediate", "embed_lr_scale"])
    keys += ["minutes", "max_steps", "batch_tokens", "lr", "hard_weight", "soft_weight", "bf16", "threads", "export_dtype",
             "eval_prompts", "eval_tokens", "seed"]
    argv = []
    for key in keys:
        value = shown.get(key, getattr(args, key))
        if value in ("", None, False) or (key in ("max_prompts", "max_steps", "threads") and not value):
            continue
        if value is True:
            argv.append(f"--{key.replace('_', '-')}")
            continue
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2))


def _add_time(work: Path, key: str, seconds: float) -> None:
    path = work / "times.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    state[key] = state.get(key, 0.0) + seconds
    _write_json(path, state)
