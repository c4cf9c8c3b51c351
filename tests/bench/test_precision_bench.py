"""`specdec bench --dtypes`: end to end on tiny models, against a stand-in llama.cpp tree whose tools record
their command lines (the real converter and llama-bench are not needed), and llama-bench's JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from specdec.bench.llama_cpp import GGUF_TYPES, LlamaCpp, parse_bench_json
from specdec.cli.main import main
from tests.conftest import TINY_CHARS
from tests.tiny_models import char_tokenizer, save_tiny_lm

# What `llama-bench -m Q4_1.gguf -p 0 -n 16 -t 2 -o json` printed (build 10666), less the settings it echoes.
CAPTURED = {
    "build_commit": "unknown", "build_number": 0, "cpu_info": "Intel(R) Xeon(R) Processor", "gpu_info": "",
    "backends": "CPU", "model_filename": "/tmp/llscratch/Q4_1.gguf", "model_type": "llama 256M Q4_1",
    "model_size": 96576768, "model_n_params": 134515008, "n_batch": 2048, "n_ubatch": 512, "n_threads": 2,
    "type_k": "f16", "type_v": "f16", "n_gpu_layers": -1, "flash_attn": -1, "n_prompt": 0, "n_gen": 16,
    "n_depth": 0, "test_time": "2026-12-01T14:41:10Z", "avg_ns": 1377586266, "stddev_ns": 4147842274,
    "avg_ts": 190.991630, "stddev_ts": 170.326039,
    "samples_ns": [53818876, 2995740374, 48886912, 49881643, 3739603527],
    "samples_ts": [297.293, 5.34092, 327.286, 320.759, 4.27853],
}
SPEEDS = {"F32": 100.0, "F16": 150.0, "BF16": 160.0, "Q8_0": 200.0, "Q4_1": 400.0}  # the stand-in's, by GGUF type

# The stand-in tools (Python scripts): each first appends its argv and PYTHONPATH to calls.jsonl.
RECORD = """import json, os, sys
with open({calls!r}, "a") as f:
    f.write(json.dumps(sys.argv + [os.environ.get("PYTHONPATH", "")]) + "\\n")
"""
CONVERT = """open(sys.argv[sys.argv.index("--outfile") + 1], "w").write("F32")
"""
QUANTIZE = """import shutil
shutil.copy(sys.argv[1], sys.argv[2])
"""
BENCH = """from pathlib import Path
model, n, t = (sys.argv[sys.argv.index(flag) + 1] for flag in ("-m", "-n", "-t"))
record = dict({captured!r}, model_filename=model, n_gen=int(n), n_threads=int(t))
record["samples_ts"] = [1.0, {speeds!r}[Path(model).stem], 1e9]
print(json.dumps([record], indent=2))
"""


@pytest.fixture(scope="module")
def wide_models(tmp_path_factory) -> tuple[Path, Path]:
    """Target and draft 32 wide: int4 needs its groups of 32 inputs."""
    tokenizer = char_tokenizer(TINY_CHARS)
    return (save_tiny_lm(tmp_path_factory.mktemp("target32"), tokenizer, seed=1, hidden=32),
            save_tiny_lm(tmp_path_factory.mktemp("draft32"), tokenizer, seed=2, hidden=32))


def fake_llama_cpp(tree: Path) -> Path:
    """A llama.cpp tree whose converter, llama-quantize and llama-bench are stand-ins; returns their calls' log."""
    calls = tree / "calls.jsonl"
    (tree / "build" / "bin").mkdir(parents=True)
    for path, body in [(tree / "convert_hf_to_gguf.py", CONVERT), (tree / "build" / "bin" / "llama-quantize", QUANTIZE),
                       (tree / "build" / "bin" / "llama-bench", BENCH.format(captured=CAPTURED, speeds=SPEEDS))]:
        path.write_text(f"#!{sys.executable}\n" + RECORD.format(calls=str(calls)) + body)
        path.chmod(0o755)
    return calls


def test_sweep_reports_each_precision_exact_at_its_own_precision_next_to_llama_cpp(wide_models, tmp_path):
    target, draft = wide_models
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": text}]}) + "\n"
                               for text in ["abcab", "gfedcba"]))
    calls = fake_llama_cpp(tmp_path / "llama.cpp")
    out = tmp_path / "out"
    main(["bench", "--dtypes", "int8,int4,float32", "--prompts", str(prompts), "--target-model", str(target),
          "--draft-model", str(draft), "--max-new-tokens", "6", "--threads", "1", "--llama-cpp",
          str(tmp_path / "llama.cpp"), "--out", str(out)])

    rows = {row["precision"]: row for row in json.loads((out / "precision.json").read_text())["results"]}
    assert list(rows) == ["float32", "int8", "int4"] and [row["served"] for row in rows.values()] == list(rows)
    reference = rows["float32"]
    assert reference["agreement_with_float32"] == 1.0 and reference["identical_to_float32"] == 2
    assert reference["vs_float32"] == 1.0 and reference["log_likelihood_vs_float32"] == 0.0
    for row in rows.values():
        assert row["exact_prompts"] == 2, row  # draft=none and speculative, each equal to generate() there
        assert row["inexact_prompts"] == {"draft=none": [], "model adaptive k": []}
        assert row["none_tokens_per_second"] > 0 and row["speculative_tokens_per_second"] > 0
        assert 0 <= row["agreement_with_float32"] <= 1 and row["float32_mean_log_likelihood"] < 0
        assert row["llama_cpp_tokens_per_second"] == SPEEDS[row["llama_cpp_gguf"]]  # the median of the samples
    assert [rows[name]["llama_cpp_gguf"] for name in rows] == ["F32", "Q8_0", "Q4_1"]
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    bench_calls = [argv[1:-1] for argv in logged if argv[0].endswith("llama-bench")]
    assert bench_calls == [["-m", str(out / "gguf" / f"{kind}.gguf"), "-p", "0", "-n", "6", "-t", "1", "-o", "json"]
                           for kind in ("F32", "Q8_0", "Q4_1")]
    table = (out / "precision.md").read_text()
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + 3  # the header, a row each
    assert "| float32 |" in table and "1.00 (2/2)" in table and "with no server" in table


def test_llama_cpp_makes_the_gguf_type_of_each_precision_from_one_conversion(wide_models, tmp_path):
    calls = fake_llama_cpp(tmp_path / "llama.cpp")
    llama = LlamaCpp(tmp_path / "llama.cpp", tmp_path / "out", threads=3)
    paths = {name: llama.gguf(str(wide_models[0]), name) for name in [*GGUF_TYPES, "int4"]}

    assert {name: path.name for name, path in paths.items()} == {
        "float32": "F32.gguf", "float16": "F16.gguf", "bfloat16": "BF16.gguf", "int8": "Q8_0.gguf", "int4": "Q4_1.gguf"}
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    convert, *quantize = logged  # converted once, each type made once
    assert convert[1:6] == [str(wide_models[0]), "--outtype", "f32", "--outfile", str(paths["float32"])]
    assert convert[-1].split(":")[0] == str(tmp_path / "llama.cpp" / "gguf-py")
    assert [q[1:-1] for q in quantize] == [[str(paths["float32"]), str(paths[name]), GGUF_TYPES[name], "3"]
                                           for name in ("float16", "bfloat16", "int8", "int4")]


def test_llama_bench_json_gives_the_median_decode_speed_of_the_asked_test():
    prefill = dict(CAPTURED, n_prompt=512, n_gen=0, samples_ts=[900.0, 1000.0, 1100.0])
    text = json.dumps([prefill, CAPTURED], indent=2)
    assert parse_bench_json(text, 16) == 297.293  # the median: two stalled repetitions do not drag it down
    with pytest.raises(ValueError, match="no test of 32 tokens"):
        parse_bench_json(text, 32)


def test_a_tree_without_a_build_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="llama-bench"):
        LlamaCpp(tmp_path, tmp_path / "out", threads=1)


def test_the_command_line_refuses_unknown_precisions_and_llama_cpp_without_a_sweep(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--dtypes", "float32,int3"])
    assert "unknown precision int3" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--llama-cpp needs --dtypes"):
        main(["bench", "--llama-cpp", str(tmp_path)])
