"""Starts the three services as real processes on loopback ports, as `specdec up` does."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from specdec.serving import check_health

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(role: str, *args: str, metrics_port: int = 0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "specdec", "serve", role, "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, f"127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen, address: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{process.stdout.read()}")
        if asyncio.run(check_health(address, timeout_s=1.0)):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{process.args} not healthy after {timeout_s} s")


def stop(process: subprocess.Popen) -> str:
    """SIGTERM (graceful), then the process's output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.stdout.read() if process.stdout else ""


class Stack:
    """Target, draft and orchestrator processes; `address` is the public API."""

    def __init__(
        self, target_model: str, draft_model: str = "", *orchestrator_args: str, metrics: bool = False, threads: int = 0
    ) -> None:
        """threads: torch threads per model service; 1 suits tiny models (no thread contention)."""
        self.target_model = target_model
        self.metrics_ports = {role: free_port() if metrics else 0 for role in ("target", "draft", "orchestrator")}
        model_flags = ("--threads", str(threads))
        self.target, self.target_address = start_service(
            "target", "--model", target_model, *model_flags, metrics_port=self.metrics_ports["target"]
        )
        self.draft, self.draft_address = start_service(
            "draft", "--model", draft_model, *model_flags, metrics_port=self.metrics_ports["draft"]
        )
        self.processes = [self.target, self.draft]
        try:
            wait_healthy(self.target, self.target_address)
            wait_healthy(self.draft, self.draft_address)
            self.orchestrator, self.address = start_service(
                "orchestrator", "--draft-address", self.draft_address, "--target-address", self.target_address,
                "--tokenizer", target_model, *orchestrator_args, metrics_port=self.metrics_ports["orchestrator"],
            )
            self.processes.append(self.orchestrator)
            wait_healthy(self.orchestrator, self.address)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for process in reversed(self.processes):
            stop(process)
