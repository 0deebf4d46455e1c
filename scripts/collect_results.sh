#!/usr/bin/env bash
# Copy each sweep's tidy results table and report (Markdown + PNG plots; no checkpoints) from the
# experiments root into results/, the committed record that a later run on another machine carries on.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/experiments}
for dir in "$ROOT"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/results.csv" ] || continue
  mkdir -p "results/$name"
  cp "$dir/results.csv" "results/$name/results.csv"
  [ -f "$dir/spec.json" ] && cp "$dir/spec.json" "results/$name/spec.json"
  if [ -d "$dir/report" ]; then
    rm -rf "results/$name/report"
    cp -r "$dir/report" "results/$name/report"
  fi
done
ls results
