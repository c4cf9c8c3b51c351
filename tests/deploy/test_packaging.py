"""A regular (non-editable) install, as the Docker image does it, carries and finds its data: the
bench's prompts, the distill prompt list and the shipped draft, through importlib.resources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import specdec
from specdec.bench.command import DEFAULT_PROMPTS
from specdec.default_models import shipped_draft_dir
from specdec.distill.command import PROMPTS_FILE
from specdec.distill.data import read_prompts

print(specdec.__file__)
assert len(read_prompts(DEFAULT_PROMPTS)) == 24 and len(read_prompts(PROMPTS_FILE)) > 1000
assert (shipped_draft_dir() / "model.safetensors").stat().st_size > 1_000_000
"""


def test_the_wheel_carries_its_data_and_finds_it_away_from_the_sources(tmp_path):
    # Built from a copy of what the Dockerfile copies: setuptools writes build/ next to the sources.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("specdec", "draft_service", "target_service", "orchestrator"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("specdec-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(installed)
    assert {"specdec/bench/dev.jsonl", "specdec/distill/prompts.txt",
            "specdec/default_models/smollm2-135m-draft/config.json"} <= names
    assert not [name for name in names if name.startswith(("tests/", "models/", "benchmarks/"))]

    # The extracted wheel first on the path, run from elsewhere: the repository is not where it looks.
    env = {**os.environ, "PYTHONPATH": str(installed)}
    run = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(installed))
