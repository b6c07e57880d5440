#!/usr/bin/env bash
# Old tree vs new tree on CPU inference, fresh processes alternating (the CPU counterpart of
# scripts/ab_trees.sh; how docs/bench/cpu_scan_fused/ was made). Each process times the tiny Mamba and
# attention models side by side (scripts/ab_env_inference.py without --env), so every row also has
# its in-process ratio, which the machine's drift between processes does not move.
#   rm -rf _old && mkdir _old && git archive OLD_REV openrec csrc setup.py tools configs scripts \
#     | tar -x -C _old --exclude='openrec/pretrained/*'
# OLD_REV needs scripts/ab_env_inference.py with the configs-only mode (6fbf4bd or later): each tree
# times itself with its own copy, since the script puts its own tree first on the import path.
#   bash scripts/ab_trees_cpu.sh      # REPS (3), BATCHES ("1 8 32"), SECONDS_PER_BATCH (15); results under $OUT
set -euo pipefail
OUT=${OUT:-/tmp/ab_trees_cpu}; mkdir -p "$OUT"
[ -d _old/openrec ] || { echo "ab_trees_cpu: prepare _old first (see the header)"; exit 1; }
ROOT=$PWD
for dir in "$ROOT" "$ROOT/_old"; do  # each tree's own C++ CPU kernels (no CUDA build)
  (cd "$dir" && OPENREC_CUDA=0 python setup.py build_ext --inplace > "$OUT/build_$(basename "$dir").log" 2>&1)
done
C=configs/rec/svtrv2
for rep in $(seq 1 "${REPS:-3}"); do
  for tree in old new; do
    dir=$ROOT; [ $tree = old ] && dir=$ROOT/_old
    (cd "$dir" && PYTHONPATH=$dir python scripts/ab_env_inference.py --configs $C/svtrv2_mamba_tiny_gtc_rctc.yml \
      $C/svtrv2_tiny_gtc_rctc.yml --batches ${BATCHES:-1 8 32} --seconds "${SECONDS_PER_BATCH:-15}" \
      --json "$OUT/${tree}_$rep.json") > "$OUT/${tree}_$rep.txt"
    echo "$tree $rep: $(grep -E '^B' "$OUT/${tree}_$rep.txt" | awk '{printf "%s %s %s ms; ", $1, $2, $3}')"
  done
done
