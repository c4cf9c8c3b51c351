"""Runs what the deployment files say, as local processes.

For each configuration (compose.yaml alone, with compose.gpu.yaml, with the observability profile, and
the rendered Kubernetes overlays cpu and gpu) this takes each service's entry point, command, args and
environment exactly as the container would get them (the image's ENTRYPOINT and ENV from the
Dockerfile, then compose's `command`/`environment` or the pod's `args`/`envFrom`/`env` with Kubernetes'
`$(VAR)` expansion and Downward API values), and starts them on loopback. Only what cannot run here is
substituted, each in one place (`_localize`):

- the init in front of `specdec` (tini) is dropped and `specdec` is this interpreter's `-m specdec`;
- `--host` is 127.0.0.1 and every port (gRPC and metrics) a free local one; an upstream address
  (`dns:///draft:50052`) becomes the local address of the service it names, once the test has checked
  that the name and port really are that service's;
- `--device` is cpu; the target model is the tiny test model `tiny_target`, a draft model `tiny_draft`
  (the same vocabulary), and `default-eagle` the head `tiny_eagle` (trained for `tiny_target`: features
  cross the wire as they would); the orchestrator's `--tokenizer` is `tiny_target` when it names the target's
  model and a model with another vocabulary otherwise, so the orchestrator's own start-up check decides;
- container paths (/models, /tmp) live under a temporary directory; an OTLP endpoint that names the
  compose collector goes to a fake collector in this process.

Then it waits for health, generates one short greedy completion through the orchestrator, runs each
role's health check (the compose healthcheck and the image's HEALTHCHECK), scrapes /metrics for the
series the autoscalers query, and stops the services with SIGTERM, which must end each one cleanly.
A configuration whose services disagree (a draft without the model the orchestrator's --default-draft
needs, an address that names the wrong port, a tokenizer that is not the target's) fails here.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from specdec.cli.launcher import DEFAULT_PORTS, METRICS_PORT, free_port, start_process, stop_process, wait_healthy
from specdec.default_models import DEFAULT_EAGLE
from specdec.v1 import generation_pb2, generation_pb2_grpc
from tests.deploy.test_deploy import COMPOSE_VARIANTS, ROOT, _compose_binary, _ok, _render, _run
from tests.tiny_models import char_tokenizer, save_tiny_lm

ROLES = ("target", "draft", "orchestrator")
PROMPT = "abcabcab"
NEW_TOKENS = 6
START_TIMEOUT_S = 120.0
# What a container's init looks like in front of `specdec` (the image's tini, Docker's --init).
INITS = ("tini", "docker-init", "tini-static")


# --- the image ------------------------------------------------------------------------------


@dataclass
class Image:
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]  # the CMD of HEALTHCHECK, exec form
    apt_packages: set[str]


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):  # comments, also inside a continued instruction
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def dockerfile_image() -> Image:
    """The runtime (last) stage of the Dockerfile: what every container starts from."""
    lines = _logical_lines((ROOT / "Dockerfile").read_text())
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    image = Image({}, [], [], [], set())
    for line in lines[last_from + 1:]:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                if key != "PATH":  # the image's venv on PATH; here, this interpreter
                    image.env[key] = value
        elif instruction == "ENTRYPOINT":
            image.entrypoint = json.loads(rest)
        elif instruction == "CMD":
            image.cmd = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            image.healthcheck = json.loads(rest.split(" CMD ", 1)[1])
        elif instruction == "RUN" and "apt-get install" in rest:
            image.apt_packages |= {word.split("=")[0] for word in rest.split() if re.match(r"^[a-z0-9][\w.+-]*=", word)}
    return image


# --- what each configuration runs --------------------------------------------------------------


@dataclass
class Container:
    """One service's container as the manifest defines it, before any substitution."""

    role: str
    argv: list[str]  # entry point + command, as the container runtime executes it
    env: dict[str, str]
    declared_ports: set[int]  # ports the manifest says the container listens on
    healthcheck: list[str] | None = None  # compose's own check (exec form), if any
    upstream: dict[str, int] = field(default_factory=dict)  # an address's service name -> container port


def _compose_config(variant: str, env: dict[str, str]) -> dict:
    clean = {"PATH": os.environ.get("PATH", ""), **env}  # no SPECDEC_* leaking in from this shell
    return json.loads(_ok(_run(_compose_binary(), *COMPOSE_VARIANTS[variant], "config", "--format", "json", env=clean)))


def compose_containers(variant: str, image: Image, env: dict[str, str]) -> tuple[dict[str, Container], dict]:
    config = _compose_config(variant, env)
    services = config["services"]
    containers = {}
    for role in ROLES:
        service = services[role]
        check = service.get("healthcheck", {})
        test = None if check.get("disable") else check.get("test")
        if test is not None:
            assert test[0] == "CMD", f"{role}: healthcheck {test} is not in exec form"
            test = test[1:]
        declared = {int(p) for p in service.get("expose", [])} | {int(p["target"]) for p in service.get("ports", [])}
        upstream = {name: port for name, other in services.items()
                    for port in {int(p) for p in other.get("expose", [])}}  # name -> any exposed port (checked later)
        containers[role] = Container(
            role=role,
            argv=[*(service.get("entrypoint") or image.entrypoint), *(service.get("command") or image.cmd)],
            env={**image.env, **{k: str(v) for k, v in (service.get("environment") or {}).items()}},
            declared_ports=declared,
            healthcheck=test,
            upstream=upstream,
        )
    return containers, services


def _quantity(value: str) -> float:
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value}"
    return float(match.group(1)) * suffixes.get(match.group(2), 1)


def _expand_k8s(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names expand, undefined ones stay as written, $$ escapes."""
    return re.sub(r"\$\$|\$\((\w+)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def kubernetes_containers(docs: list[dict], image: Image) -> dict[str, Container]:
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    containers = {}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        role = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == role)
        env = dict(image.env)
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            store = configmaps if "configMapRef" in source else secrets
            if ref["name"] not in store:
                assert ref.get("optional"), f"{role}: envFrom names {ref['name']!r}, which the overlay does not define"
                continue
            env.update({source.get("prefix", "") + k: v for k, v in store[ref["name"]].items()})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = _expand_k8s(var["value"], env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[var["name"]] = f"fake-{source['fieldRef']['fieldPath']}"
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"]
                kind, _, resource = ref["resource"].partition(".")
                amount = container["resources"][kind][resource]
                env[var["name"]] = str(math.ceil(_quantity(amount) / _quantity(ref.get("divisor", "1"))))
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                ref = source.get("configMapKeyRef") or source["secretKeyRef"]
                store = configmaps if "configMapKeyRef" in source else secrets
                if ref["key"] in store.get(ref["name"], {}):
                    env[var["name"]] = store[ref["name"]][ref["key"]]
                else:
                    assert ref.get("optional"), f"{role}: {var['name']} refers to a missing {ref['name']}/{ref['key']}"
        # The pod's command replaces the image's ENTRYPOINT; its args replace CMD.
        command = [_expand_k8s(a, env) for a in container["command"]] if "command" in container else image.entrypoint
        args = container.get("args", image.cmd if "command" not in container else [])
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        # An address names a Service; its port leads, through targetPort, to a container port.
        upstream = {}
        for name, service in services.items():
            target_pods = [d for d in docs if d["kind"] == "Deployment"
                           and _selects(service["spec"].get("selector", {}), d["spec"]["template"]["metadata"]["labels"])]
            for port in service["spec"]["ports"]:
                for target in target_pods:
                    target_container = target["spec"]["template"]["spec"]["containers"][0]
                    named = {p["name"]: p["containerPort"] for p in target_container.get("ports", [])}
                    target_port = port.get("targetPort", port["port"])
                    upstream[f"{name}:{port['port']}"] = named.get(target_port, target_port)
        containers[role] = Container(
            role=role,
            argv=[*command, *(_expand_k8s(a, env) for a in args)],
            env=env,
            declared_ports=set(ports.values()),
            upstream=upstream,
        )
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                probe_port = container[probe]["grpc"]["port"]
                containers[role].healthcheck = containers[role].healthcheck or ["grpc-probe", str(ports.get(probe_port, probe_port))]
    return containers


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- substitutions: only what cannot run here ---------------------------------------------------


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _set_flag(args: list[str], name: str, value: str) -> list[str]:
    for i, arg in enumerate(args):
        if arg == name:
            return [*args[:i + 1], value, *args[i + 2:]]
        if arg.startswith(name + "="):
            return [*args[:i], f"{name}={value}", *args[i + 1:]]
    return [*args, name, value]


def _serve_args(container: Container) -> list[str]:
    """What follows `specdec` in the container's argv; checks only an init comes before it."""
    argv = container.argv
    index = next((i for i, a in enumerate(argv) if Path(a).name == "specdec"), None)
    assert index is not None, f"{container.role}: the container does not run specdec: {argv}"
    wrapper = [a for a in argv[:index] if a != "--" and not a.startswith("-")]
    assert all(Path(a).name in INITS for a in wrapper), f"{container.role}: unexpected {argv[:index]} before specdec"
    args = argv[index + 1:]
    assert args[:2] == ["serve", container.role], f"{container.role}: runs `specdec {' '.join(args)}`"
    return args


@dataclass
class Local:
    role: str
    command: list[str]
    env: dict[str, str]
    port: int
    metrics_port: int
    container: Container
    args: list[str]  # the serve args after substitution


def _address_port(address: str) -> tuple[str, int]:
    match = re.fullmatch(r"(?:dns:///|dns:)?([\w.-]+):(\d+)", address)
    assert match, f"unexpected upstream address {address!r}"
    return match.group(1).split(".")[0], int(match.group(2))


def _localize(containers: dict[str, Container], models: dict[str, Path], tmp: Path,
              otlp_endpoints: dict[str, str]) -> dict[str, Local]:
    listen = {role: int(_flag(_serve_args(c), "--port") or DEFAULT_PORTS[role]) for role, c in containers.items()}
    ports = {role: free_port() for role in containers}
    target_model = _flag(_serve_args(containers["target"]), "--model") or "default"
    local = {}
    for role, container in containers.items():
        args = _serve_args(container)
        # The ports the server listens on are the ones the manifest declares (and probes).
        metrics = int(_flag(args, "--metrics-port") or METRICS_PORT)
        assert listen[role] in container.declared_ports, (
            f"{role} listens on {listen[role]}, the manifest declares {sorted(container.declared_ports)}")
        assert metrics == 0 or metrics in container.declared_ports, (
            f"{role}: metrics on {metrics}, the manifest declares {sorted(container.declared_ports)}")
        if container.healthcheck and container.healthcheck[0] == "grpc-probe":
            assert int(container.healthcheck[1]) == listen[role], f"{role}: probes port {container.healthcheck[1]}"
        args = _set_flag(args, "--host", "127.0.0.1")
        args = _set_flag(args, "--port", str(ports[role]))
        metrics_port = free_port()
        args = _set_flag(args, "--metrics-port", str(metrics_port))
        if role == "orchestrator":
            for upstream in ("draft", "target"):
                name, port = _address_port(_flag(args, f"--{upstream}-address") or "")
                if f"{name}:{port}" in container.upstream:  # Kubernetes: Service name and port
                    reaches = container.upstream[f"{name}:{port}"]
                else:  # compose: the service name, the container's own port
                    reaches = port if name in container.upstream else None
                assert name == upstream and reaches == listen[upstream], (
                    f"the orchestrator's --{upstream}-address {name}:{port} does not reach the {upstream} service "
                    f"(listening on {listen[upstream]})")
                args = _set_flag(args, f"--{upstream}-address", f"127.0.0.1:{ports[upstream]}")
            tokenizer = _flag(args, "--tokenizer") or "default"
            args = _set_flag(args, "--tokenizer", str(models["target"] if tokenizer == target_model else models["other"]))
        else:
            if (_flag(args, "--device") or "cpu") != "cpu":
                args = _set_flag(args, "--device", "cpu")
            model = _flag(args, "--model")
            if role == "target":
                args = _set_flag(args, "--model", str(models["target"]))
            elif model:  # a draft model (the orchestrator checks real pairings share a vocabulary)
                stands_in = "eagle" if model == DEFAULT_EAGLE else "target" if model == target_model else "draft"
                args = _set_flag(args, "--model", str(models[stands_in]))
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "")}
        for key, value in container.env.items():
            for prefix in ("/models", "/tmp", "/home/specdec"):
                if value == prefix or value.startswith(prefix + "/"):
                    value = str(tmp / prefix.strip("/")) + value[len(prefix):]
            if key.startswith("OTEL_EXPORTER_OTLP") and key.endswith("ENDPOINT") and value in otlp_endpoints:
                value = otlp_endpoints[value]
            env[key] = value
        for key in ("SPECDEC_CACHE", "HF_HOME", "HOME"):
            if key in env:
                Path(env[key]).mkdir(parents=True, exist_ok=True)
        local[role] = Local(role, [sys.executable, "-m", "specdec", *args], env, ports[role], metrics_port, container, args)
    return local


def _start(local: Local) -> subprocess.Popen:
    return start_process(local.command, subprocess.PIPE, env=local.env)


def _localize_check(check: list[str], own_port: int, local_port: int) -> list[str]:
    """A health check's argv, with `specdec` from here and its own address made local."""
    assert Path(check[0]).name == "specdec", f"health check {check} does not run specdec"
    out = [sys.executable, "-m", "specdec"]
    for arg in check[1:]:
        match = re.fullmatch(r"(127\.0\.0\.1|localhost|\[::1\]):(\d+)", arg)
        if match:  # its own port becomes the local one; any other port, one nothing listens on
            arg = f"127.0.0.1:{local_port if int(match.group(2)) == own_port else free_port()}"
        out.append(arg)
    return out


# --- the fake OTLP collector -------------------------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.services: set[str] = set()
        collector = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                for spans in request.resource_spans:
                    for attribute in spans.resource.attributes:
                        if attribute.key == "service.name":
                            collector.services.add(attribute.value.string_value)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


# --- running a configuration -----------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tiny_target, tiny_draft, tiny_eagle, tmp_path_factory) -> dict[str, Path]:
    other = save_tiny_lm(tmp_path_factory.mktemp("tiny-other-vocab"), char_tokenizer("hijklmn"), seed=3)
    return {"target": tiny_target, "draft": tiny_draft, "eagle": tiny_eagle, "other": other}


@pytest.fixture(scope="module")
def image() -> Image:
    return dockerfile_image()


def _greedy_reference(model_dir: Path, prompt: str, new_tokens: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = AutoTokenizer.from_pretrained(model_dir)(prompt)["input_ids"]
    with torch.no_grad():
        for _ in range(new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-new_tokens:]


def _generate(address: str) -> tuple[list[int], generation_pb2.GenerateResponse]:
    tokens, last = [], None
    with grpc.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        for chunk in stub.Generate(generation_pb2.GenerateRequest(prompt=PROMPT, max_new_tokens=NEW_TOKENS,
                                                                  ignore_eos=True), timeout=60):
            tokens.extend(chunk.token_ids)
            last = chunk
    return tokens, last


def _metric_names(port: int) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {name for family in text_string_to_metric_families(text)
            for name in (family.name, *(s.name for s in family.samples))}


def run_stack(local: dict[str, Local], image: Image, models: dict[str, Path]) -> dict:
    """Starts the services, checks they work together, stops them; returns what it saw."""
    processes: dict[str, subprocess.Popen] = {}
    seen: dict = {}
    try:
        for group in (("target", "draft"), ("orchestrator",)):
            for role in group:
                processes[role] = _start(local[role])
            for role in group:
                wait_healthy(role, f"127.0.0.1:{local[role].port}", processes[role], START_TIMEOUT_S)
        tokens, last = _generate(f"127.0.0.1:{local['orchestrator'].port}")
        seen["tokens"], seen["last"] = tokens, last
        # Each role's health checks: compose's own, and the image's HEALTHCHECK (what `docker run` gets).
        for role, service in local.items():
            container = service.container
            listen = int(_flag(_serve_args(container), "--port") or DEFAULT_PORTS[role])
            checks = [] if not container.healthcheck or container.healthcheck[0] == "grpc-probe" else [container.healthcheck]
            for check in [*checks, image.healthcheck]:
                command = _localize_check(check, listen, service.port)
                if check is image.healthcheck:  # the image's check finds the server the container runs (PID 1)
                    command += ["--pid", str(processes[role].pid)]
                result = subprocess.run(command, env=service.env, capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, f"{role}: health check {check} failed:\n{result.stdout}{result.stderr}"
        seen["metrics"] = {role: _metric_names(service.metrics_port) for role, service in local.items()}
    finally:
        outputs = {}
        for role in reversed(list(processes)):
            outputs[role] = stop_process(processes[role], grace_s=30)
        seen["outputs"] = outputs
        seen["returncodes"] = {role: p.returncode for role, p in processes.items()}
    return seen


def _check_run(local: dict[str, Local], seen: dict, models: dict[str, Path], autoscaled: set[str]) -> None:
    tokens, last = seen["tokens"], seen["last"]
    assert last.finish_reason == "length" and len(tokens) == NEW_TOKENS, (tokens, last)
    default_draft = _flag(local["orchestrator"].args, "--default-draft")
    if default_draft:
        assert last.stats.draft == default_draft
    if (_flag(local["target"].args, "--dtype") or "float32") == "float32":
        assert tokens == _greedy_reference(models["target"], PROMPT, NEW_TOKENS), "not the target's greedy output"
    exported = set().union(*seen["metrics"].values())
    assert not autoscaled - exported, f"the autoscalers query series no service exports: {sorted(autoscaled - exported)}"
    # SIGTERM after start: each service drains and exits 0.
    assert seen["returncodes"] == dict.fromkeys(local, 0), (seen["returncodes"], seen["outputs"])


COMPOSE_ENV = {
    "cpu": {},
    "gpu": {},
    # docs/deploy.md: turn export on whenever the profile is on.
    "observability": {"OTEL_TRACES_EXPORTER": "otlp"},
}


@pytest.mark.parametrize("variant", sorted(COMPOSE_VARIANTS))
def test_compose_services_run_together(variant, models, image, tmp_path):
    containers, services = compose_containers(variant, image, COMPOSE_ENV[variant])
    collector = _Collector() if "otel-collector" in services else None
    endpoints = {}
    if collector:
        for port in services["otel-collector"].get("expose", []):
            endpoints[f"http://otel-collector:{port}"] = f"http://127.0.0.1:{collector.port}"
    try:
        local = _localize(containers, models, tmp_path, endpoints)
        seen = run_stack(local, image, models)
    finally:
        if collector:
            collector.stop()
    _check_run(local, seen, models, autoscaled=set())
    if collector:
        assert {f"specdec-{role}" for role in ROLES} <= collector.services, collector.services


def _autoscaled_series(docs: list[dict]) -> set[str]:
    """specdec_* series named by the overlay's autoscalers (KEDA Prometheus triggers, HPA metrics)."""
    names = set()
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                names |= set(re.findall(r"specdec_\w+", trigger["metadata"].get("query", "")))
        elif doc["kind"] == "HorizontalPodAutoscaler":
            for metric in doc["spec"]["metrics"]:
                if metric["type"] in ("Pods", "Object", "External"):
                    names.add(metric[metric["type"].lower()]["metric"]["name"])
    return names


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_kubernetes_services_run_together(overlay, models, image, tmp_path):
    docs = list(yaml.safe_load_all(_render(overlay)))
    local = _localize(kubernetes_containers(docs, image), models, tmp_path, {})
    seen = run_stack(local, image, models)
    autoscaled = _autoscaled_series(docs)
    if overlay == "gpu":  # KEDA on Prometheus series, not CPU utilisation
        assert {"specdec_model_call_seconds_sum", "specdec_active_requests"} <= autoscaled, autoscaled
    _check_run(local, seen, models, autoscaled=autoscaled)


# --- the checks above can fail ------------------------------------------------------------------


def test_a_draft_without_the_model_the_orchestrator_expects_fails(models, image, tmp_path):
    """The disagreement today's compose.gpu.yaml had: the draft serves n-gram only while the orchestrator
    keeps --default-draft model. The orchestrator exits at start-up, and the run says why."""
    containers, _ = compose_containers("cpu", image, {"SPECDEC_DRAFT_MODEL": ""})
    local = _localize(containers, models, tmp_path, {})
    with pytest.raises(Exception, match="no model loaded"):
        run_stack(local, image, models)


def test_an_address_that_misses_its_service_fails(models, image, tmp_path):
    containers, _ = compose_containers("cpu", image, {})
    orchestrator = containers["orchestrator"]
    orchestrator.argv = [a.replace("draft:50052", "draft:50053") for a in orchestrator.argv]
    with pytest.raises(AssertionError, match="does not reach the draft service"):
        _localize(containers, models, tmp_path, {})


def test_sigterm_while_loading_ends_the_process(models, image, tmp_path):
    """SIGTERM is honoured before the server is up (model loading), not only once it serves."""
    docs = list(yaml.safe_load_all(_render("cpu")))
    target = _localize(kubernetes_containers(docs, image), models, tmp_path, {})["target"]
    process = _start(target)
    time.sleep(1.0)  # importing torch and loading the model
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=15)
    assert process.returncode in (-signal.SIGTERM, 0, 128 + signal.SIGTERM), stop_process(process)


def test_the_image_runs_specdec_under_an_init(image, rendered_docs):
    """Python as PID 1 ignores SIGTERM it has no handler for (as while a model loads): the image's
    entry point is tini, installed from Debian, and no pod replaces it with a command of its own."""
    assert Path(image.entrypoint[0]).name == "tini" and "tini" in image.apt_packages, image.entrypoint
    assert Path(image.entrypoint[-1]).name == "specdec"
    for overlay, docs in rendered_docs.items():
        for doc in docs:
            if doc["kind"] in ("Deployment", "Job"):
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    command = container.get("command")
                    assert command is None or Path(command[0]).name in INITS, (overlay, doc["metadata"]["name"], command)


@pytest.fixture(scope="module")
def rendered_docs() -> dict[str, list[dict]]:
    return {overlay: list(yaml.safe_load_all(_render(overlay))) for overlay in ("cpu", "gpu")}


def test_the_image_healthcheck_fails_without_a_server(image):
    """The image's HEALTHCHECK, asked about a process that runs no `specdec serve`, says unhealthy."""
    command = _localize_check(image.healthcheck, 0, 0) + ["--pid", str(os.getpid())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode != 0
    assert "specdec serve" in result.stderr
