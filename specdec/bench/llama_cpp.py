"""llama.cpp as a peer of `specdec bench --dtypes`: the same target as GGUF files at the matching precisions,
timed by llama.cpp's own `llama-bench` (pure decode in one process, no server).

The target is converted once to an F32 GGUF with the tree's convert_hf_to_gguf.py (which needs its
requirements, sentencepiece among them, in this Python), and llama-quantize makes the other types from
it; every file is cached under --out/gguf.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from specdec.runtime.models import ModelSource

GGUF_TYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int8": "Q8_0", "int4": "Q4_1"}


class LlamaCpp:
    """A llama.cpp source tree with a build (build/bin/llama-bench, build/bin/llama-quantize)."""

    def __init__(self, tree: Path, out: Path, threads: int) -> None:
        self.tree, self.threads = tree, threads
        self.bin = tree / "build" / "bin"
        self.gguf_dir = out / "gguf"
        self.log = out / "llama_cpp.log"
        for tool in ("llama-bench", "llama-quantize"):
            if not (self.bin / tool).is_file():
                raise FileNotFoundError(f"{self.bin / tool} not found: --llama-cpp names a llama.cpp tree with a build")

    def gguf(self, target_model: str, precision: str) -> Path:
        """The target as a GGUF file of the type that pairs with `precision` (a resolved name), made once."""
        path = self.gguf_dir / f"{GGUF_TYPES[precision]}.gguf"
        if path.is_file():
            return path
        self.gguf_dir.mkdir(parents=True, exist_ok=True)
        f32 = self.gguf_dir / "F32.gguf"
        if not f32.is_file():
            source = ModelSource.resolve(target_model)
            if source.gguf_file or not Path(source.path_or_id).is_dir():
                raise ValueError(f"--llama-cpp converts a model directory; {target_model!r} is not one")
            # The tree's own gguf-py first: the converter is written against it, not the installed package.
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(self.tree / "gguf-py"),
                                                                            os.environ.get("PYTHONPATH")]))}
            self._run([sys.executable, str(self.tree / "convert_hf_to_gguf.py"), source.path_or_id,
                       "--outtype", "f32", "--outfile", str(f32)], env)
        if path != f32:
            self._run([str(self.bin / "llama-quantize"), str(f32), str(path), GGUF_TYPES[precision], str(self.threads)])
        return path

    def decode_tokens_per_second(self, model: Path, new_tokens: int) -> float:
        """llama-bench's decode speed for `new_tokens` tokens after an empty prompt: the median of its repetitions."""
        command = [str(self.bin / "llama-bench"), "-m", str(model), "-p", "0", "-n", str(new_tokens),
                   "-t", str(self.threads), "-o", "json"]
        return parse_bench_json(self._run(command), new_tokens)

    def _run(self, command: list[str], env: dict[str, str] | None = None) -> str:
        """The command's stdout; it and its stderr go to the log too, which a failure points to."""
        with open(self.log, "a") as log:
            print("$ " + " ".join(command), file=log, flush=True)
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            log.write(done.stdout)
        if done.returncode:
            raise RuntimeError(f"{Path(command[0]).name} exited with code {done.returncode}; see {self.log}")
        return done.stdout


def parse_bench_json(text: str, new_tokens: int) -> float:
    """Decode tokens/s from `llama-bench -o json`: the test with no prompt and `new_tokens` generated.

    The median of its repetitions, not llama-bench's mean: on a shared machine one stalled repetition
    would drag the mean far down (as our own medians are kept from)."""
    record = next((r for r in json.loads(text) if r["n_prompt"] == 0 and r["n_gen"] == new_tokens), None)
    if record is None:
        raise ValueError(f"llama-bench reported no test of {new_tokens} tokens after an empty prompt")
    return statistics.median(record["samples_ts"])
