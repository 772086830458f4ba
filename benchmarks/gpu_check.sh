#!/usr/bin/env bash
# The GPU run, prepared (docs/speed.md): every check a lent GPU should answer, ending in one Markdown table
# (gpu_check.md) in $OUT, or in --out DIR, or in ./gpu_check_out.
#   bash benchmarks/gpu_check.sh                            # CUDA, SD 2.1 sizes, random official-layout weights
#   bash benchmarks/gpu_check.sh --device cpu --size tiny   # the same plumbing on the CPU
# The checks and their options: benchmarks/gpu_check.py (--only NAME ..., --steps K, --repeats R).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
