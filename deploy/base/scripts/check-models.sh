#!/bin/sh
# check-models.sh MODEL...: exits 0 when every model named is ready to load from the model
# volume, else says which is missing and how to fill the volume, and exits 1. Runs as each
# pod's initContainer (it only looks: nothing is downloaded at pod start).
#
# Names, as the servers take them: "" (none: n-gram drafting), default-draft (shipped in the
# image), default (SmolLM2-135M-Instruct, converted into $SPECDEC_CACHE by `specdec prepare`),
# default-eagle (shipped in the image, but it reads the default target's embeddings: as default),
# an absolute path (a model directory or a .gguf file on the volume), or a Hugging Face id
# (a snapshot in $HF_HOME/hub, as `hf download` leaves it).
set -u
: "${SPECDEC_CACHE:=/models}" "${HF_HOME:=/models/huggingface}"
status=0
for model in "$@"; do
    case "$model" in
        "" | default-draft) continue ;;
        default | default-eagle) found="$SPECDEC_CACHE/SmolLM2-135M-Instruct/config.json" ;;
        /*.gguf) found="$model" ;;
        /*) found="$model/config.json" ;;
        *)
            repo="$HF_HOME/hub/models--$(printf '%s' "$model" | sed 's|/|--|g')"
            found="$repo/snapshots/<revision>/config.json"
            for file in "$repo"/snapshots/*/config.json; do
                found="$file"
                break
            done
            ;;
    esac
    if [ -e "$found" ]; then
        echo "check-models: $model is ready ($found)"
    else
        echo "check-models: model '$model' is not in the model volume (no $found)." >&2
        echo "check-models: fill the volume once with the specdec-prepare Job (kubectl -n specdec get job specdec-prepare;" >&2
        echo "check-models: its logs say what failed), then this pod starts; see docs/deploy.md, 'Models'." >&2
        status=1
    fi
done
exit "$status"
