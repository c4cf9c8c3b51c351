"""The peers `specdec bench` compares against: transformers, in this process, on the same models."""

from __future__ import annotations

import argparse
import time

import torch

from specdec.bench.configs import Config, Run
from specdec.runtime.models import load_model
from specdec.runtime.precision import Precision, apply


class Peers:
    """transformers in one process: the baseline a user would otherwise pick."""

    def __init__(self, target_model: str, draft_model: str, precision: str = "float32") -> None:
        """precision: a resolved name (not auto), as the services get it: loaded in float32, then converted."""
        self.target = apply(load_model(target_model), Precision(precision))
        self.draft = apply(load_model(draft_model), Precision(precision)) if draft_model else None

    def run(self, config: Config, prompt_ids: list[int], args: argparse.Namespace, seed: int) -> Run:
        extra = {"generate": {}, "assisted": {"assistant_model": self.draft},
                 "prompt_lookup": {"prompt_lookup_num_tokens": 4}}[config.peer]
        sampling = {"do_sample": True, "temperature": args.temperature} if args.temperature else {"do_sample": False}
        torch.manual_seed(seed)
        ids = torch.tensor([prompt_ids])
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.target.generate(ids, max_new_tokens=args.max_new_tokens, **sampling, **extra)
        return Run(out[0, len(prompt_ids):].tolist(), time.perf_counter() - started)

    def mean_log_likelihood(self, prompt_ids: list[int], tokens: list[int]) -> float:
        """The target's mean log-probability of `tokens` after the prompt (temperature 1)."""
        with torch.inference_mode():
            logits = self.target(torch.tensor([prompt_ids + tokens])).logits[0, len(prompt_ids) - 1 : -1]
        return float(logits.log_softmax(-1).gather(1, torch.tensor(tokens)[:, None]).mean())
