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
      # the tiny pair, B1/B8/B32, calls interleaved: ms and minor page faults per forward
      OPENREC_MALLOC_TUNING=$setting python scripts/ab_env_inference.py --configs \
        configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml configs/rec/svtrv2/svtrv2_tiny_gtc_rctc.yml \
        --seconds "${SECONDS_PER_BATCH:-15}" --json "$OUT/models_${arm}_$i.json" | tee -a "$OUT/models.txt"
    fi
  done
done
