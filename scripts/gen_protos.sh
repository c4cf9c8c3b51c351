#!/usr/bin/env bash
# Regenerates the Python stubs in specdec/v1 from protos/. Run after editing a .proto.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. protos/specdec/v1/*.proto
