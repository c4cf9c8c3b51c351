"""Starting the three services as local processes: what `specdec up`, `specdec bench` and the
tests run (the same `specdec serve ...` commands compose and Kubernetes run)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO

from specdec.cli.health import check_health
from specdec.runtime.tls import TlsFiles

ROLES = ("target", "draft", "orchestrator")
DEFAULT_PORTS = {"orchestrator": 50051, "draft": 50052, "target": 50053}
METRICS_PORT = 9464  # Prometheus; `specdec up` gives draft and target the next two


class ServiceFailed(RuntimeError):
    pass


@dataclass
class StackSpec:
    """What to start. Draft and target may run as several replicas each (`replicas`), the way a
    Kubernetes Deployment scales them: replica 0 is named after its role ("target") and listens on
    the role's port, the others ("target-1", ...) on free ports; the orchestrator gets all of a
    role's addresses and spreads sessions over them, as it does behind a headless Service."""

    target_model: str
    draft_model: str = ""  # "" = n-gram drafting only
    host: str = "127.0.0.1"  # an IP address when a role has several replicas
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))  # by process name
    metrics_ports: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))  # 0 = off
    model_flags: tuple[str, ...] = ()  # e.g. --dtype, --device, --threads for draft and target
    orchestrator_flags: tuple[str, ...] = ()
    replicas: dict[str, int] = field(default_factory=lambda: {"target": 1, "draft": 1})
    tls: TlsFiles | None = None  # one certificate for every service (see tls.write_stack_certificates)

    def __post_init__(self) -> None:
        for role in ("target", "draft"):
            for name in self.names(role)[1:]:
                self.ports.setdefault(name, free_port())
                self.metrics_ports.setdefault(name, free_port() if self.metrics_ports.get(role) else 0)

    def names(self, role: str) -> list[str]:
        """The processes of `role`, in start order."""
        count = self.replicas.get(role, 1)
        return [role] if count == 1 else [role, *(f"{role}-{i}" for i in range(1, count))]

    def address(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"

    def upstream(self, role: str) -> str:
        """The orchestrator's address for `role`: every replica's (gRPC's ipv4: list, round robin)."""
        addresses = [self.address(name) for name in self.names(role)]
        return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

    def command(self, name: str) -> list[str]:
        role = name.split("-")[0]
        command = [sys.executable, "-m", "specdec", "serve", role, "--host", self.host,
                   "--port", str(self.ports[name]), "--metrics-port", str(self.metrics_ports[name]),
                   "--metrics-host", self.host]
        if self.tls is not None:
            command += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key), "--tls-ca", str(self.tls.ca)]
        if role == "orchestrator":
            return [*command, "--draft-address", self.upstream("draft"), "--target-address", self.upstream("target"),
                    "--tokenizer", self.target_model, *self.orchestrator_flags]
        model = self.target_model if role == "target" else self.draft_model
        return [*command, "--model", model, *self.model_flags]


class LocalStack:
    """Target and draft first, then the orchestrator; each started once the ones before are healthy."""

    def __init__(self, spec: StackSpec, output: int | IO | None = None, log=print) -> None:
        """output: where the services' output goes (None = ours, subprocess.PIPE = kept for stop())."""
        self.spec = spec
        self.processes: dict[str, subprocess.Popen] = {}
        self._output = output
        self._log = log

    @property
    def address(self) -> str:
        return self.spec.address("orchestrator")

    def start(self, timeout_s: float = 600.0) -> LocalStack:
        spec = self.spec
        try:
            for group in ([*spec.names("target"), *spec.names("draft")], ["orchestrator"]):
                for name in group:
                    self.processes[name] = start_process(spec.command(name), self._output)
                for name in group:
                    wait_healthy(name, spec.address(name), self.processes[name], timeout_s, spec.tls)
                    self._log(f"specdec: {name} is healthy on {spec.address(name)}")
        except BaseException:
            self.stop()
            raise
        return self

    def exited(self) -> list[str]:
        return [role for role, process in self.processes.items() if process.poll() is not None]

    def stop(self) -> dict[str, str]:
        """Stops the front door first; returns each service's captured output, by process name."""
        return {name: stop_process(self.processes[name]) for name in reversed(list(self.processes))}

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_process(
    command: list[str], output: int | IO | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A `specdec serve` process that exits with this one (see die_with_parent), so none is orphaned.

    No preexec_fn: with one, Python forks, and gRPC's fork handlers run in the child before it
    execs, which aborts it now and then when this process has gRPC threads at work (seen in CI:
    "Epoll1Poller ... epoll_wait error: Bad file descriptor", exit -6). Without, Python uses vfork.
    """
    stderr = None if output is None else subprocess.STDOUT
    env = {**(os.environ if env is None else env), _PARENT_PID: str(os.getpid())}
    return subprocess.Popen(command, stdout=output, stderr=stderr, text=True, env=env)


_PARENT_PID = "SPECDEC_DIE_WITH_PARENT"  # set by start_process: the pid to die with


def die_with_parent() -> None:
    """Linux, first thing in `specdec serve`: SIGTERM when the process that started us dies."""
    parent = os.environ.pop(_PARENT_PID, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # it died before that took hold
        sys.exit("specdec: the process that started this service has exited")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(
    role: str, address: str, process: subprocess.Popen, timeout_s: float = 600.0, tls: TlsFiles | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise ServiceFailed(f"the {role} service exited with code {process.returncode} while starting\n{output}")
        if asyncio.run(check_health(address, timeout_s=1.0, tls=tls)):
            return
        time.sleep(0.25)
    raise ServiceFailed(f"the {role} service did not become healthy within {timeout_s:.0f} s")


def stop_process(process: subprocess.Popen, grace_s: float = 20.0) -> str:
    """SIGTERM (the services drain in-flight calls), SIGKILL after `grace_s`; returns captured output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stdout.read() if process.stdout else ""
