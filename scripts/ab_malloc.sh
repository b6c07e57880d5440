#!/usr/bin/env bash
# A/B of tune_malloc (openrec/engine/host_memory.py) in fresh inference-only processes, since the
# setting is per process and a process that trained first has already raised glibc's own thresholds
# (tools/bench_rec.py's rows do not move with it). OPENREC_MALLOC_TUNING=0 and =1 alternate, ROUNDS
# times; results under $OUT.
#   PART=eval SETS="<LMDB folders>" bash scripts/ab_malloc.sh  # eval_rec.py of the released model: wall
#                                                              # times (eval_rec_wall.txt), tables (must match)
#   PART=models bash scripts/ab_malloc.sh   # ms per forward of the tiny Mamba and attention models, B1/B8/B32
set -euo pipefail
OUT=${OUT:-/tmp/ab_malloc}; mkdir -p "$OUT"
PART=${PART:-models}
MODELS_PY='
import resource, statistics, sys, time, torch
from openrec.config import load_config
from openrec.engine.host_memory import tune_malloc
from openrec.modeling import build_model
from openrec.text import charset_from_config
tuned = tune_malloc()
models = []
for name in ("svtrv2_mamba_tiny_gtc_rctc", "svtrv2_tiny_gtc_rctc"):
    cfg = load_config(f"configs/rec/svtrv2/{name}.yml")
    models.append((name, build_model(cfg["Architecture"], charset_from_config(cfg)).eval()))
row = []
with torch.inference_mode():
    for batch in (1, 8, 32):
        x, times = torch.randn(batch, 3, 32, 128), {name: [] for name, _ in models}
        faults = {name: 0 for name, _ in models}  # minor page faults during the timed forwards
        for r in range(max(6, 200 // batch) + 2):
            for name, model in models:  # interleaved; the first two rounds warm up
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter(); model(x)
                if r >= 2:
                    times[name].append((time.perf_counter() - start) * 1e3)
                    faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        (mamba, attention), (fm, fa) = ((statistics.median(times[n]) for n, _ in models),
                                        (faults[n] / len(times[n]) for n, _ in models))
        row.append(f"B{batch}: mamba {mamba:.2f} ms ({fm:.0f} faults), attention {attention:.2f} ms ({fa:.0f}), "
                   f"ratio {attention / mamba:.2f}")
print(f"tuned {tuned} | " + " | ".join(row))
'
for i in $(seq 1 "${ROUNDS:-3}"); do
  for setting in 0 1; do
    arm=$([ $setting = 0 ] && echo default || echo tuned)
    if [ "$PART" = eval ]; then
      : "${SETS:?SETS: the LMDB folders to evaluate}"
      start=$(date +%s.%N)
      OPENREC_MALLOC_TUNING=$setting python tools/eval_rec.py --sets $SETS > "$OUT/eval_rec_${arm}_$i.txt" 2>&1
      python -c "import sys; print(f'$arm $i {float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$start" "$(date +%s.%N)" \
        | tee -a "$OUT/eval_rec_wall.txt"
    else
      OPENREC_MALLOC_TUNING=$setting PYTHONPATH=$PWD python -c "$MODELS_PY" | tee -a "$OUT/models.txt"
    fi
  done
done
