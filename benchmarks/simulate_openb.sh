#!/usr/bin/env bash
# Replay the openb traces on a 64-GPU A100-80GB cluster under every policy (benchmarks/RESULTS.md,
# section "Simulator").  Usage: benchmarks/simulate_openb.sh [TRACE_DIR] [LOAD] [SEED]
# TRACE_DIR defaults to ../shared/traces/openb next to the repository; JSON results and plots
# go to $OUT (default: a fresh temporary directory), tables to stdout.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
traces="${1:-$repo/../shared/traces/openb}"
load="${2:-0.8}"
seed="${3:-0}"
out="${OUT:-$(mktemp -d)}"
if [[ ! -d "$traces" ]]; then
    echo "simulate_openb.sh: no trace directory $traces; pass it as the first argument" >&2
    exit 2
fi
jm="$repo/.venv/bin/jupyter-mig"
[[ -x "$jm" ]] || jm="jupyter-mig"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$traces"  # so that the tables name the trace files, not this machine's paths

for trace in default gpushare100 multigpu20; do
    csv="openb_pod_list_$trace.csv"
    echo "#### $trace (load $load, seed $seed)"
    echo
    echo '```'
    echo "\$ jupyter-mig simulate --pods $csv --nodes 8 --gpus-per-node 8" \
        "--gpu A100-80GB --load $load --seed $seed"
    "$jm" simulate --pods "$csv" --nodes 8 --gpus-per-node 8 --gpu A100-80GB \
        --load "$load" --seed "$seed" \
        --json "$out/openb-$trace-$load-$seed.json" --plot "$out/openb-$trace-$load-$seed.png"
    echo '```'
    echo
done
echo "JSON and plots: $out" >&2
