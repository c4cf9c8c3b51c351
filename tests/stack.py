"""The three services as real processes on free loopback ports, as `specdec up` runs them."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from specdec.cli.launcher import ROLES, LocalStack, StackSpec, free_port, start_process
from specdec.runtime.tls import TlsFiles


def start_service(role: str, *args: str) -> tuple[subprocess.Popen, str]:
    """One `specdec serve ROLE` process (output captured) on a free port, and its address."""
    return start_service_on(free_port(), role, *args)


def start_service_on(port: int, role: str, *args: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "specdec", "serve", role, "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "0", *args]
    return start_process(command, subprocess.PIPE), f"127.0.0.1:{port}"


class Stack(LocalStack):
    def __init__(
        self, target_model: str, draft_model: str = "", *orchestrator_args: str, metrics: bool = False, threads: int = 0,
        target_replicas: int = 1, draft_replicas: int = 1, tls: TlsFiles | None = None, dtype: str = "float32",
    ) -> None:
        """threads: torch threads per model service; 1 suits tiny models (no thread contention).
        dtype: draft and target precision; float32 by default, which the tests' references are computed at
        (`auto` would pick by timing this machine)."""
        spec = StackSpec(
            target_model=target_model,
            draft_model=draft_model,
            ports={role: free_port() for role in ROLES},
            metrics_ports={role: free_port() if metrics else 0 for role in ROLES},
            model_flags=("--threads", str(threads), "--dtype", dtype),
            orchestrator_flags=orchestrator_args,
            replicas={"target": target_replicas, "draft": draft_replicas},
            tls=tls,
        )
        super().__init__(spec, output=subprocess.PIPE, log=lambda _: None)
        self.start(timeout_s=180)
        self.target_model = target_model
        self.target_address = spec.address("target")
        self.draft_address = spec.address("draft")
        self.metrics_ports = spec.metrics_ports

    def close(self) -> None:
        self.stop()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
