#!/usr/bin/env bash
# The main job, end to end: start the three services, stream one generation, stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PROMPT=${1:-"Why is the sky blue?"}
LOG=$(mktemp -t specdec-up.XXXXXX.log)

echo "Starting draft, target and orchestrator (logs: $LOG) ..."
"$BIN/specdec" up >"$LOG" 2>&1 &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT

for _ in $(seq 600); do
  if ! kill -0 "$UP" 2>/dev/null; then
    echo "specdec up exited early:" >&2; tail -n 30 "$LOG" >&2; exit 1
  fi
  if "$BIN/specdec" health localhost:50051 2>/dev/null; then break; fi
  sleep 1
done
grep -E "^specdec" "$LOG" || true
echo
echo "\$ specdec generate \"$PROMPT\""
"$BIN/specdec" generate "$PROMPT" --max-new-tokens 128
