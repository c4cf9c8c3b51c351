"""What `specdec bench` runs and what it records: configurations, runs, results."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from specdec.v1 import generation_pb2


@dataclass(frozen=True)
class Config:
    name: str
    draft: str = "none"  # services: "none", "model", "ngram"; peers: "" (in-process)
    k: int = 0  # 0 = adaptive (services) / the library's default (peers)
    lenience: float = 1.0
    peer: str = ""  # "generate", "assisted", "prompt_lookup"


@dataclass
class Run:
    tokens: list[int]
    seconds: float
    stats: generation_pb2.GenerationStats | None = None  # services only
    first_token_seconds: float = 0.0  # from the request's start to its first and last token chunks; services only
    last_token_seconds: float = 0.0


@dataclass
class Results:
    config: Config
    runs: list[Run] = field(default_factory=list)

    def total(self, name: str) -> float:
        return sum(getattr(run.stats, name) for run in self.runs if run.stats is not None)

    def tokens_per_second(self) -> list[float]:
        return [len(run.tokens) / run.seconds for run in self.runs]


def configs_for(args: argparse.Namespace) -> list[Config]:
    configs = [Config("draft=none")]
    if args.draft_model:
        configs += [Config(f"model k={k}", "model", k) for k in args.k]
        configs += [Config("model adaptive k", "model", 0)]
        configs += [Config(f"model adaptive k, lenience {l:g}", "model", 0, l) for l in args.lenience if l != 1.0]
    configs += [Config(f"ngram k={k}", "ngram", k) for k in args.ngram_k]
    configs += [Config("ngram adaptive k", "ngram", 0)]
    if args.peers:
        configs += [Config("transformers generate", peer="generate")]
        if args.draft_model:
            configs += [Config("transformers assisted", peer="assisted")]
        configs += [Config("transformers prompt lookup", peer="prompt_lookup")]
    return configs
