"""`specdec bench`'s and `specdec soak`'s command lines; the benchmark and the soak are imported when they run."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from specdec.default_models import DEFAULT_DRAFT, DEFAULT_MODEL
from specdec.runtime import precision_names

DEFAULT_PROMPTS = resources.files("specdec.bench") / "dev.jsonl"


def read_records(path: Path | Traversable, limit: int = 0) -> list[dict]:
    """A prompt set's records (JSONL: `messages`, optionally `id` and `category`), the first `limit` (0 = all)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records[: limit or None]


def add_parser(commands) -> None:
    bench = commands.add_parser("bench", help="benchmark specdec against draft=none and transformers, side by side")
    bench.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSONL, a `messages` list per line")
    bench.add_argument("--limit", type=int, default=0, help="use only the first N prompts (0 = all)")
    bench.add_argument("--repeats", type=int, default=1, help="run every prompt this many times per configuration")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--temperature", type=float, default=0.0)
    bench.add_argument("--ignore-eos", action="store_true",
                       help="with --concurrency: generate past EOS, so every output is --max-new-tokens long")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--target-model", default="default")
    bench.add_argument("--draft-model", default="", help="a draft model ('' = only the n-gram drafter)")
    bench.add_argument("--k", type=lambda s: [int(k) for k in s.split(",")], default=[2, 4, 6], help="fixed k values")
    bench.add_argument("--ngram-k", type=lambda s: [int(k) for k in s.split(",") if k], default=[],
                       help="fixed k values for the n-gram drafter too, e.g. 2,4")
    bench.add_argument("--lenience", type=lambda s: [float(x) for x in s.split(",")], default=[1.0],
                       help="lenience sweep for the model draft, e.g. 1,0.7,0.5")
    bench.add_argument("--threads", type=int, default=0,
                       help="torch threads for every model, services and peers alike (0 = torch's default); "
                            "on a shared machine 1 avoids the collapse of oversubscribed thread pools")
    bench.add_argument("--no-peers", dest="peers", action="store_false", help="skip the in-process transformers runs")
    bench.add_argument("--concurrency", type=_levels, default=[],
                       help="concurrency levels, e.g. 1,2,4,8,16: instead of the comparison, aggregate tokens/s and "
                            "per-stream latency of the default speculative configuration and draft=none at each "
                            "(no peers; --k, --ngram-k and --lenience are not used)")
    bench.add_argument("--dtypes", type=_dtypes, default=[],
                       help=f"precisions, e.g. float32,bfloat16,int8,int4 (of {','.join(precision_names.CHOICES)}): "
                            "instead of the comparison, one stack per precision (float32 always, the reference), "
                            "draft=none and the model draft at adaptive k through each: speed, agreement with "
                            "float32 and exactness against transformers at the same precision")
    bench.add_argument("--llama-cpp", type=Path, default=None, metavar="DIR",
                       help="with --dtypes: a llama.cpp source tree with a build; its llama-bench times the target "
                            "as GGUF at the matching types (F32, F16, BF16, Q8_0, Q4_1)")
    bench.add_argument("--out", type=Path, default=Path("bench-results"))
    bench.set_defaults(func=_run)


def _levels(text: str) -> list[int]:
    levels = sorted({int(level) for level in text.split(",")})
    if levels[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels are at least 1")
    return levels


def _dtypes(text: str) -> list[str]:
    names = list(dict.fromkeys(text.split(",")))
    if unknown := [name for name in names if name not in precision_names.CHOICES]:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(unknown)}; "
                                         f"choose from {', '.join(precision_names.CHOICES)}")
    return names


def _run(args: argparse.Namespace) -> None:
    if args.ignore_eos and not args.concurrency:
        sys.exit("specdec bench: --ignore-eos needs --concurrency (the transformers peers stop at EOS)")
    if args.concurrency and args.dtypes:
        sys.exit("specdec bench: --concurrency and --dtypes are two different runs; choose one")
    if args.llama_cpp and not args.dtypes:
        sys.exit("specdec bench: --llama-cpp needs --dtypes")
    if args.concurrency:
        from specdec.bench.concurrency import main
    elif args.dtypes:
        from specdec.bench.precision import main
    else:
        from specdec.bench.run import main

    main(args)


def add_soak_parser(commands) -> None:
    soak = commands.add_parser("soak", help="load-test a stack of its own: exact outputs, no errors, flat memory")
    soak.add_argument("--streams", type=int, default=16, help="concurrent greedy streams")
    soak.add_argument("--minutes", type=float, default=5.0, help="how long to keep them busy (a float: 0.2 works)")
    soak.add_argument("--max-new-tokens", type=int, default=32)
    soak.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSONL, a `messages` list per line")
    soak.add_argument("--limit", type=int, default=0, help="use only the first N prompts (0 = all)")
    soak.add_argument("--target-model", default=DEFAULT_MODEL)
    soak.add_argument("--draft-model", default=DEFAULT_DRAFT, help="'' = n-gram drafting only")
    soak.add_argument("--threads", type=int, default=0, help="torch threads per model service (0 = torch's default)")
    soak.add_argument("--out", type=Path, default=None, help="also write the summary here, as JSON")
    soak.set_defaults(func=_soak)


def _soak(args: argparse.Namespace) -> None:
    from specdec.bench.soak import main

    sys.exit(main(args))
