"""`specdec health` (the container healthcheck, run every few seconds) and `specdec --help` load
neither torch nor transformers: checked with `python -X importtime`, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from specdec.cli.launcher import free_port

HEAVY = ("torch", "transformers")


def imported_modules(*python_args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    run = subprocess.run([sys.executable, "-X", "importtime", *python_args], capture_output=True, text=True, timeout=120)
    # importtime lines: "import time: self [us] | cumulative | imported package", nested by indentation.
    modules = {m.group(1).strip() for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(.+)$", run.stderr, re.M)}
    return modules, run


@pytest.mark.parametrize("argv", [("health", f"127.0.0.1:{free_port()}"), ("--help",), ("generate", "--help")])
def test_light_commands_import_neither_torch_nor_transformers(argv):
    modules, run = imported_modules("-m", "specdec", *argv)
    assert {"specdec.cli.main", "grpc"} <= modules  # the check really read the import list
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"`specdec {' '.join(argv)}` imports {heavy[:5]}"
    if argv[0] == "health":
        assert run.returncode == 1  # nothing listens there: NOT SERVING, said quickly


def test_a_heavy_command_does_load_torch():
    """The negative control: the same check sees torch where it is imported."""
    modules, _ = imported_modules("-c", "import specdec.runtime.sampling")
    assert {"torch", "specdec.runtime.sampling"} <= modules


def test_the_installed_console_script_runs():
    """The `specdec` script pip installs (pyproject's [project.scripts]) finds its entry point."""
    script = Path(sysconfig.get_path("scripts")) / "specdec"
    run = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "serve" in run.stdout and "health" in run.stdout
