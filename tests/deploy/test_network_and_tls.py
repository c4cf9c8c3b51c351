"""What the NetworkPolicies and the TLS component promise, read from the rendered manifests (no cluster).

Network policies (deploy/base/networkpolicies.yaml, in every overlay): a small evaluator of
NetworkPolicy ingress semantics (`_allowed`) asks who may open a connection to which pod port, for
the peers a cluster really has: orchestrator, draft, target and prepare pods, the endpoint picker of
the gateway overlay, a Prometheus in a monitoring namespace, a pod of another namespace and a client
outside the cluster.

TLS (deploy/components/tls, deploy/overlays/tls, compose.tls.yaml): the certificate Secret mounted in
the three main containers, the SPECDEC_TLS_* variables pointing at its files, exec probes running
`specdec health` instead of native gRPC probes (which cannot speak TLS), and nothing else changed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import pytest

from tests.deploy.test_deploy import VALIDATED_OVERLAYS, _by_kind, _compose_config, _config, _parse_cli, rendered  # noqa: F401

NAMESPACE = "specdec"
ROLES = ("draft", "target", "orchestrator")
TLS_DIR = "/etc/specdec/tls"
TLS_SECRET = "specdec-tls"


# --- a NetworkPolicy ingress evaluator ---------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A connection's source: a pod (its labels, its namespace's labels) or, with pod=None, an address
    outside the cluster."""

    name: str
    pod: dict[str, str] | None
    namespace: str | None = None
    namespace_labels: dict[str, str] = field(default_factory=dict)


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    """A LabelSelector; {} selects everything."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def _peer_matches(rule_peer: dict, peer: Peer, policy_namespace: str) -> bool:
    assert "ipBlock" not in rule_peer, "the evaluator does not model ipBlock peers"
    if peer.pod is None:  # outside the cluster: only an ipBlock could match it
        return False
    if "namespaceSelector" in rule_peer:
        if not _matches(rule_peer["namespaceSelector"], peer.namespace_labels):
            return False
    elif peer.namespace != policy_namespace:  # a podSelector alone means the policy's namespace
        return False
    return _matches(rule_peer.get("podSelector", {}), peer.pod)


def _port_matches(rule_port: dict, port: int, named: dict[str, int]) -> bool:
    assert rule_port.get("protocol", "TCP") == "TCP"
    number = rule_port.get("port")
    if number is None:
        return True
    number = named.get(number, number)  # a named port: the destination container's port of that name
    return number <= port <= rule_port.get("endPort", number)


def _ingress_policies(docs: list[dict], pod_labels: dict[str, str]) -> list[dict]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"
            and "Ingress" in d["spec"].get("policyTypes", ["Ingress"])
            and _matches(d["spec"]["podSelector"], pod_labels)]


def _allowed(docs: list[dict], peer: Peer, workload: str, port: int) -> bool:
    """Whether `peer` may connect to TCP `port` of the pods of Deployment or Job `workload` (ingress
    side; egress is never restricted here, see test_egress_is_not_restricted)."""
    template = _templates(docs)[workload]
    labels = template["metadata"]["labels"]
    named = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    policies = _ingress_policies(docs, labels)
    if not policies:  # not isolated
        return True
    for policy in policies:
        namespace = policy["metadata"].get("namespace", NAMESPACE)
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            if sources and not any(_peer_matches(p, peer, namespace) for p in sources):
                continue
            ports = rule.get("ports")
            if ports and not any(_port_matches(p, port, named) for p in ports):
                continue
            return True
    return False


def _templates(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "Job")}


def _pod_peer(docs: list[dict], workload: str, namespace: str = NAMESPACE) -> Peer:
    return Peer(workload, _templates(docs)[workload]["metadata"]["labels"], namespace,
                {"kubernetes.io/metadata.name": namespace})


def _namespace_peer(name: str, namespace: str, extra_labels: dict[str, str] | None = None) -> Peer:
    return Peer(name, {"app.kubernetes.io/name": "prometheus"}, namespace,
                {"kubernetes.io/metadata.name": namespace, **(extra_labels or {})})


def _ports(docs: list[dict], workload: str) -> dict[str, int]:
    template = _templates(docs)[workload]
    return {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


PROMETHEUS = _namespace_peer("prometheus in `monitoring`", "monitoring")
LABELLED_PROMETHEUS = _namespace_peer("prometheus in a labelled namespace", "observability", {"specdec.io/scrape": "true"})
UNLABELLED_PROMETHEUS = _namespace_peer("prometheus in an unlabelled namespace", "observability")
OUTSIDE = Peer("a client outside the cluster", None)


# --- network policies -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_every_specdec_pod_is_isolated(overlay, rendered):
    """Each specdec workload is selected by exactly one ingress policy, in its namespace, which selects
    no other workload."""
    docs = rendered[overlay]
    policies = _by_kind(docs, "NetworkPolicy")
    assert set(policies) == {"draft", "target", "orchestrator", "specdec-prepare"}
    for policy in policies.values():
        assert policy["metadata"]["namespace"] == NAMESPACE
    for workload, template in _templates(docs).items():
        if workload == "specdec-epp":  # the gateway's endpoint picker: not a specdec service
            continue
        selecting = [p["metadata"]["name"] for p in _ingress_policies(docs, template["metadata"]["labels"])]
        assert selecting == [workload], (workload, selecting)


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_only_the_orchestrator_reaches_draft_and_target(overlay, rendered):
    docs = rendered[overlay]
    grpc = {role: _ports(docs, role)["grpc"] for role in ROLES}
    assert grpc == {"draft": 50052, "target": 50053, "orchestrator": 50051}
    orchestrator = _pod_peer(docs, "orchestrator")
    for upstream in ("draft", "target"):
        assert _allowed(docs, orchestrator, upstream, grpc[upstream]), upstream
        others = [_pod_peer(docs, w) for w in _templates(docs) if w != "orchestrator"]
        others += [
            _pod_peer(docs, "orchestrator", namespace="default"),  # the same labels in another namespace
            PROMETHEUS, LABELLED_PROMETHEUS, OUTSIDE,
        ]
        for peer in others:
            assert not _allowed(docs, peer, upstream, grpc[upstream]), (upstream, peer.name, peer.namespace)
        # Nor any other port of theirs, from the orchestrator (metrics are for Prometheus).
        assert not _allowed(docs, orchestrator, upstream, 9464), upstream
        assert not _allowed(docs, orchestrator, upstream, grpc[upstream] + 1), upstream


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_the_orchestrators_public_apis_are_open(overlay, rendered):
    docs = rendered[overlay]
    ports = _ports(docs, "orchestrator")
    peers = [_pod_peer(docs, w) for w in _templates(docs)]
    peers += [_pod_peer(docs, "orchestrator", namespace="default"), PROMETHEUS, UNLABELLED_PROMETHEUS, OUTSIDE]
    for peer in peers:
        for name in ("grpc", "http"):
            assert _allowed(docs, peer, "orchestrator", ports[name]), (name, peer.name)
    # Its metrics port is not public.
    assert not _allowed(docs, OUTSIDE, "orchestrator", ports["metrics"])
    assert not _allowed(docs, _pod_peer(docs, "draft"), "orchestrator", ports["metrics"])


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_metrics_only_from_a_monitoring_namespace(overlay, rendered):
    docs = rendered[overlay]
    for role in ROLES:
        metrics = _ports(docs, role)["metrics"]
        assert metrics == 9464
        assert _allowed(docs, PROMETHEUS, role, metrics), role
        assert _allowed(docs, LABELLED_PROMETHEUS, role, metrics), role
        assert not _allowed(docs, UNLABELLED_PROMETHEUS, role, metrics), role
        assert not _allowed(docs, OUTSIDE, role, metrics), role
        if role != "orchestrator":
            assert not _allowed(docs, PROMETHEUS, role, _ports(docs, role)["grpc"]), role
    # The Prometheus the KEDA triggers query lives in a namespace allowed to scrape.
    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            match = re.match(r"https?://[\w-]+\.([\w-]+)\.svc", trigger["metadata"]["serverAddress"])
            assert match, trigger["metadata"]["serverAddress"]
            prometheus = _namespace_peer("keda's prometheus", match.group(1))
            assert all(_allowed(docs, prometheus, role, 9464) for role in ROLES), match.group(1)


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_policies_cover_exactly_the_declared_ports(overlay, rendered):
    """Every port a specdec container declares is open to someone (a policy does not silently cut a
    port the pods serve), and every port a policy names is one the pods declare (no stale numbers)."""
    docs = rendered[overlay]
    peers = [_pod_peer(docs, w) for w in _templates(docs)] + [PROMETHEUS, LABELLED_PROMETHEUS, OUTSIDE]
    for role in ROLES:
        declared = set(_ports(docs, role).values())
        for port in declared:
            assert any(_allowed(docs, peer, role, port) for peer in peers), (role, port)
        policy = _by_kind(docs, "NetworkPolicy")[role]
        named = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
        assert named == declared, (role, named, declared)
    # The prepare Job listens on nothing and takes no connection at all.
    job = _by_kind(docs, "NetworkPolicy")["specdec-prepare"]["spec"]
    assert job["policyTypes"] == ["Ingress"] and not job.get("ingress")


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_upstream_addresses_are_allowed_paths(overlay, rendered):
    """The orchestrator's DRAFT_ADDRESS / TARGET_ADDRESS, through their Service's targetPort, land on a
    port the policies open to the orchestrator."""
    docs = rendered[overlay]
    config, services = _config(docs, "orchestrator"), _by_kind(docs, "Service")
    orchestrator = _pod_peer(docs, "orchestrator")
    for upstream in ("draft", "target"):
        match = re.fullmatch(r"dns:///([\w-]+)(?:\.[\w.-]+)?:(\d+)", config[f"{upstream.upper()}_ADDRESS"])
        assert match and match.group(1) == upstream
        (service_port,) = [p for p in services[upstream]["spec"]["ports"] if p["port"] == int(match.group(2))]
        container_port = _ports(docs, upstream).get(service_port["targetPort"], service_port["targetPort"])
        assert _allowed(docs, orchestrator, upstream, container_port), upstream


@pytest.mark.parametrize("overlay", VALIDATED_OVERLAYS)
def test_egress_is_not_restricted(overlay, rendered):
    """DNS, the OTLP collector and the prepare Job's downloads (PyPI or PIP_INDEX_URL, the hub or
    HF_ENDPOINT) need egress: no policy restricts it."""
    for policy in _by_kind(rendered[overlay], "NetworkPolicy").values():
        assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
        assert "egress" not in policy["spec"]


def test_gateway_endpoint_picker_reaches_the_pool_only(rendered):
    docs = rendered["gateway"]
    epp = _pod_peer(docs, "specdec-epp")
    assert _allowed(docs, epp, "orchestrator", _ports(docs, "orchestrator")["http"])  # requests and /metrics
    assert not _allowed(docs, epp, "draft", 50052) and not _allowed(docs, epp, "target", 50053)


def test_the_evaluator_sees_an_open_pod(rendered):
    """Without the draft's policy anything reaches it: the tests above would notice a missing one."""
    docs = [d for d in rendered["cpu"] if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "draft")]
    assert _allowed(docs, OUTSIDE, "draft", 50052)
    # And a policy whose peer lost its podSelector admits the whole namespace.
    docs = copy.deepcopy(rendered["cpu"])
    policy = _by_kind(docs, "NetworkPolicy")["target"]
    policy["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {}}]
    assert _allowed(docs, _pod_peer(docs, "draft"), "target", 50053)


# --- TLS: deploy/components/tls via deploy/overlays/tls -----------------------------------------


def _key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_tls_overlay_is_the_cpu_overlay_plus_tls(rendered):
    """The same objects as the cpu overlay; only the three Deployments (certificate mount, variables,
    probes) and the Services' appProtocol differ, and nothing else in them."""
    cpu, tls = {_key(d): d for d in rendered["cpu"]}, {_key(d): d for d in rendered["tls"]}
    assert set(cpu) == set(tls)
    changed = {k for k in cpu if cpu[k] != tls[k]}
    assert changed == {("Deployment", r) for r in ROLES} | {("Service", r) for r in ROLES}, changed
    for role in ROLES:
        before, after = copy.deepcopy(cpu["Deployment", role]), copy.deepcopy(tls["Deployment", role])
        for deployment in (before, after):
            pod = deployment["spec"]["template"]["spec"]
            pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "tls"]
            container = next(c for c in pod["containers"] if c["name"] == role)
            container["env"] = [e for e in container["env"] if not e["name"].startswith("SPECDEC_TLS_")]
            container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "tls"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                container[probe].pop("grpc", None)
                container[probe].pop("exec", None)
        assert before == after, role  # args, resources, timings, init containers: all the cpu overlay's
        ports_before = cpu["Service", role]["spec"]["ports"]
        ports_after = tls["Service", role]["spec"]["ports"]
        assert [{k: v for k, v in p.items() if k != "appProtocol"} for p in ports_before] == ports_after, role


def test_tls_secret_is_mounted_and_named_by_the_variables(rendered):
    from specdec.runtime.tls import ENV  # the variables the services and `specdec health` read

    deployments = _by_kind(rendered["tls"], "Deployment")
    expected = {ENV["cert"]: f"{TLS_DIR}/tls.crt", ENV["key"]: f"{TLS_DIR}/tls.key", ENV["ca"]: f"{TLS_DIR}/ca.crt"}
    for role in ROLES:
        pod = deployments[role]["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        # A kubernetes.io/tls Secret (tls.crt, tls.key) with the CA beside it (ca.crt, as cert-manager
        # writes it); required, not optional: without it the pod does not start in plaintext.
        assert volume["secret"]["secretName"] == TLS_SECRET and not volume["secret"].get("optional")
        assert "items" not in volume["secret"]
        assert volume["secret"]["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == 10001
        container = next(c for c in pod["containers"] if c["name"] == role)
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        assert mount == {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}, role
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in expected} == expected, role
        # Each file is a key of the Secret, under the mount.
        assert {v.rsplit("/", 1)[1] for v in expected.values()} == {"tls.crt", "tls.key", "ca.crt"}
        # The model check needs no certificate.
        assert all("tls" not in str(c) for c in pod["initContainers"]), role


def test_tls_probes_are_exec_probes_of_specdec_health(rendered, monkeypatch):
    """Native gRPC probes cannot speak TLS: each probe runs `specdec health` on the server's own port,
    over loopback, which reads the SPECDEC_TLS_* variables; the probes' timings stay the cpu overlay's."""
    cpu, tls = _by_kind(rendered["cpu"], "Deployment"), _by_kind(rendered["tls"], "Deployment")
    for role in ROLES:
        container = next(c for c in tls[role]["spec"]["template"]["spec"]["containers"] if c["name"] == role)
        plain = next(c for c in cpu[role]["spec"]["template"]["spec"]["containers"] if c["name"] == role)
        grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
        args = container["args"]
        assert args[args.index("--port") + 1] == str(grpc_port)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" not in container[probe] and plain[probe]["grpc"]["port"] == grpc_port, (role, probe)
            command = container[probe]["exec"]["command"]
            assert command == ["specdec", "health", f"127.0.0.1:{grpc_port}"], (role, probe)
            namespace = _parse_cli(command[1:], monkeypatch)
            assert namespace.address == f"127.0.0.1:{grpc_port}"
            # `specdec health` gives up after 2 s; the probe's timeout leaves room for Python to start.
            assert container[probe]["timeoutSeconds"] >= 5
            assert {k: v for k, v in container[probe].items() if k != "exec"} == \
                {k: v for k, v in plain[probe].items() if k != "grpc"}, (role, probe)


def test_tls_services_no_longer_claim_cleartext_http2(rendered):
    for overlay, expected in (("cpu", "kubernetes.io/h2c"), ("tls", None)):
        services = _by_kind(rendered[overlay], "Service")
        for role in ROLES:
            (grpc_port,) = [p for p in services[role]["spec"]["ports"] if p["name"] == "grpc"]
            assert grpc_port.get("appProtocol") == expected, (overlay, role)


# --- TLS in compose: compose.tls.yaml ------------------------------------------------------------


@pytest.mark.parametrize("base, with_tls", [("cpu", "tls"), ("gpu", "gpu-tls")])
def test_compose_tls_override(base, with_tls):
    from specdec.runtime.tls import ENV

    plain, tls = _compose_config(base)["services"], _compose_config(with_tls)["services"]
    assert set(plain) == set(tls)
    expected = {ENV["cert"]: f"{TLS_DIR}/tls.crt", ENV["key"]: f"{TLS_DIR}/tls.key", ENV["ca"]: f"{TLS_DIR}/ca.crt"}
    for role in ROLES:
        service = tls[role]
        # Commands, healthchecks and published ports are compose.yaml's (or compose.gpu.yaml's).
        for key in ("command", "healthcheck", "ports", "expose", "depends_on"):
            assert service.get(key) == plain[role].get(key), (role, key)
        assert {k: service["environment"].get(k) for k in expected} == expected, role
        assert {k: v for k, v in service["environment"].items() if k not in expected} == plain[role]["environment"]
        (mount,) = [v for v in service["volumes"] if v["target"] == TLS_DIR]
        assert mount["type"] == "bind" and mount["read_only"] is True, role
        assert [v for v in service["volumes"] if v["target"] != TLS_DIR] == plain[role]["volumes"], role
    # prepare serves nothing and gets no certificate.
    assert tls["prepare"] == plain["prepare"]
