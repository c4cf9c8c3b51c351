"""Loading models and tokenizers from any of the forms a user names them by.

A model is named by a Hugging Face id, a local directory, a `.gguf` file, `default` (the
embedded SmolLM2-135M-Instruct, see specdec.default_models), `default-draft` (the draft LM distilled for it)
or `default-eagle` (the EAGLE head trained for it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from specdec.default_models import (
    DEFAULT_DRAFT,
    DEFAULT_EAGLE,
    DEFAULT_MODEL,
    SHIPPED_EAGLE,
    ensure_embedded_model,
    shipped_draft_dir,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    path_or_id: str
    gguf_file: str | None = None

    @classmethod
    def resolve(cls, spec: str) -> ModelSource:
        if spec == DEFAULT_MODEL:
            return cls(str(ensure_embedded_model()))
        if spec == DEFAULT_DRAFT:
            return cls(str(shipped_draft_dir()))
        if spec == DEFAULT_EAGLE:
            return cls(str(shipped_draft_dir(SHIPPED_EAGLE)))
        path = Path(spec).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise FileNotFoundError(f"GGUF file not found: {path}")
            return cls(str(path.parent), path.name)
        return cls(spec)

    def kwargs(self, trust_remote_code: bool) -> dict:
        kwargs: dict = {"trust_remote_code": trust_remote_code}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


def load_tokenizer(spec: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    source = ModelSource.resolve(spec)
    return AutoTokenizer.from_pretrained(source.path_or_id, **source.kwargs(trust_remote_code))


def load_model(
    spec: str, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False
) -> PreTrainedModel:
    source = ModelSource.resolve(spec)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(
        source.path_or_id, dtype=DTYPES[dtype], **source.kwargs(trust_remote_code)
    )
    return model.to(device).eval()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the token -> id map: equal fingerprints mean the same ids mean the same text."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocab.encode()).hexdigest()


def max_context(model: PreTrainedModel) -> int:
    config = model.config.get_text_config()
    return int(getattr(config, "max_position_embeddings", None) or 2048)
