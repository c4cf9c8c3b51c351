"""The model volume's scripts (deploy/base/scripts): the prepare Job's fetch-models.sh fills the
volume, each pod's initContainer runs check-models.sh, which only looks and fails fast, saying what
is missing. Run here with sh, `specdec` and `hf` stubbed by scripts that record their calls and
leave the files the real commands leave."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "base" / "scripts"
HUB_ID = "HuggingFaceTB/SmolLM2-1.7B-Instruct"


@pytest.fixture
def volume(tmp_path) -> dict[str, str]:
    models = tmp_path / "models"
    models.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    # Stubs: `specdec prepare` writes the converted default model, `hf download ID` a snapshot.
    (bin_dir / "specdec").write_text(
        '#!/bin/sh\necho "specdec $*" >> "$CALLS"\n[ "$1" = prepare ] || exit 3\n'
        'mkdir -p "$SPECDEC_CACHE/SmolLM2-135M-Instruct" && echo {} > "$SPECDEC_CACHE/SmolLM2-135M-Instruct/config.json"\n')
    (bin_dir / "hf").write_text(
        '#!/bin/sh\necho "hf $*" >> "$CALLS"\n[ "$1" = download ] || exit 3\n'
        'd="$HF_HOME/hub/models--$(echo "$2" | sed "s|/|--|g")/snapshots/abc123"\nmkdir -p "$d" && echo {} > "$d/config.json"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SPECDEC_CACHE": str(models),
            "HF_HOME": str(models / "huggingface"), "CALLS": str(calls)}


def _run(script: str, env: dict[str, str], *models: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPTS / script), *models], env=env, capture_output=True, text=True, timeout=60)


def _calls(env: dict[str, str]) -> list[str]:
    path = Path(env["CALLS"])
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("model", ["default", "default-eagle", HUB_ID, "/models/mine", "/models/mine.gguf"])
def test_check_fails_fast_and_says_what_is_missing(volume, model):
    result = _run("check-models.sh", volume, model)
    assert result.returncode == 1
    assert f"model '{model}' is not in the model volume" in result.stderr and "specdec-prepare" in result.stderr
    assert _calls(volume) == []  # it only looks


def test_check_passes_models_that_need_no_volume(volume):
    assert _run("check-models.sh", volume, "", "default-draft").returncode == 0


def test_fetch_fills_the_volume_once_and_check_then_passes(volume):
    first = _run("fetch-models.sh", volume, HUB_ID, "default", HUB_ID, "default-draft")
    assert first.returncode == 0, first.stderr
    assert _calls(volume) == ["hf download " + HUB_ID + ' --exclude *.gguf --exclude onnx/* --exclude *.onnx',
                              "specdec prepare"]
    assert _run("check-models.sh", volume, HUB_ID, "default", "default-draft").returncode == 0
    # The EAGLE head ships in the image but reads the default target's embeddings from the volume.
    assert _run("check-models.sh", volume, "default-eagle").returncode == 0
    # A second run (the Job applied again) downloads nothing from the hub.
    assert _run("fetch-models.sh", volume, HUB_ID).returncode == 0
    assert len([c for c in _calls(volume) if c.startswith("hf ")]) == 1


def test_fetch_fails_when_a_download_fails(volume):
    (Path(volume["PATH"].split(":")[0]) / "hf").write_text("#!/bin/sh\nexit 7\n")
    result = _run("fetch-models.sh", volume, HUB_ID)
    assert result.returncode != 0
