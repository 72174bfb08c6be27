#!/usr/bin/env bash
# The GPU check: everything the CPU machines cannot verify, in one run of under 8 minutes on one
# H100 (budget per step below). Writes every output under $OUT (default: gpu_check/).
#
#   bash scripts/gpu_check.sh            # then read gpu_check/summary.txt
#
# 1. the test suite with --device cuda (device-dependent tests on the GPU, CLI tests through
#    --device auto; the slow SLURM and chaos tests are skipped)           ~3 min
# 2. benchmark.py --device cuda, every precision (fp32, tf32, bf16)       ~1 min
# 3. a 5-seed synthetic experiment with 2 local workers spread over the visible GPUs, then the
#    same on one worker: the histories must agree run for run (non-timing columns)  ~2 min
set -u
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
{
  echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
} > "$OUT/machine.txt" 2>&1
start=$(date +%s)

timeout 300 python -m pytest -q -m "not slow" --device cuda > "$OUT/pytest.txt" 2>&1
echo "pytest --device cuda: exit $? ($(tail -1 "$OUT/pytest.txt"))" > "$OUT/summary.txt"

timeout 120 python benchmark.py --device cuda --repeats 3 --precisions fp32,tf32,bf16 \
    --json "$OUT/benchmark_cuda.json" > "$OUT/benchmark.txt" 2>&1
echo "benchmark --device cuda: exit $?" >> "$OUT/summary.txt"

ARGS=(--dataset synthetic --train-size 20000 --test-size 2000 --epochs 3 --seeds 5 --strategies core
      --device auto --no-progress --precision bf16)
timeout 150 python experiments.py "${ARGS[@]}" --workers 2 --out "$OUT/workers2" > "$OUT/workers2.txt" 2>&1
echo "5 seeds, 2 workers: exit $?" >> "$OUT/summary.txt"
timeout 150 python experiments.py "${ARGS[@]}" --workers 1 --out "$OUT/workers1" > "$OUT/workers1.txt" 2>&1
echo "5 seeds, 1 worker: exit $?" >> "$OUT/summary.txt"
python - "$OUT" >> "$OUT/summary.txt" 2>&1 <<'PY'
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
def rows(d):
    with open(out / d / "metrics.csv") as f:
        return sorted(tuple((k, v) for k, v in r.items() if k not in ("epoch_time_s", "eval_time_s"))
                      for r in csv.DictReader(f))
same = rows("workers2") == rows("workers1")
print(f"2 workers equal 1 worker, run for run: {same}")
PY
echo "total: $(( $(date +%s) - start )) s" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"
