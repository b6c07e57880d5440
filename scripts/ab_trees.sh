#!/usr/bin/env bash
# Old tree vs new tree at model level, on one GPU machine, alternating runs (same process kind, same
# machine): the way docs/bench/ab_tiles_base_* were made.
#   here:        rm -rf _old && mkdir _old && git archive OLD_REV openrec csrc setup.py tools configs scripts \
#                  | tar -x -C _old --exclude='openrec/pretrained/*'       # untracked: travels with the tree
#   GPU machine: bash scripts/ab_trees.sh   # carry .whl; results in $OUT/ab_{old,new}_{1,2}.{txt,json}
# SIZE (base) picks the config pair; ROWS ("long-text,train bf16": comma-separated) the bench_rec rows; REPS (2).
# Trees whose csrc/ and setup.py are the same share the new tree's build.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -d _old/openrec ] || { echo "ab_trees: prepare _old first (see the header)"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16 PYTHONUNBUFFERED=1
# The system compiler: the lent image's CXX wrapper links libstdc++ statically, and an extension built
# with it crashes on its first C++ exception instead of raising (csrc/README.md).
export CC=${OPENREC_CC:-gcc} CXX=${OPENREC_CXX:-g++}
ROOT=$PWD
# Trees with the same CUDA/C++ sources share one build (a Python-only change needs no second one).
same_sources=0; diff -rq csrc _old/csrc >/dev/null && cmp -s setup.py _old/setup.py && same_sources=1
[ $same_sources = 1 ] || (cd _old && OPENREC_CUDA=1 python3 setup.py build_ext --inplace > "$OUT/build_old.log" 2>&1) &
OPENREC_CUDA=1 python3 setup.py build_ext --inplace > "$OUT/build_new.log" 2>&1
wait
[ $same_sources = 1 ] && cp openrec/_C*.so _old/openrec/ && echo "ab_trees: same csrc and setup.py, one build for both trees"
C=configs/rec/svtrv2 SIZE=${SIZE:-base}
IFS=, read -r -a ROW_ARGS <<< "${ROWS:-long-text,train bf16}"
for rep in $(seq 1 "${REPS:-2}"); do
  for tree in old new; do
    dir=$ROOT; [ $tree = old ] && dir=$ROOT/_old
    (cd "$dir" && PYTHONPATH=/tmp/site:$dir python3 tools/bench_rec.py --configs $C/svtrv2_mamba_${SIZE}_gtc_rctc.yml \
      $C/svtrv2_${SIZE}_gtc_rctc.yml --rctc --rows "${ROW_ARGS[@]}" --json "$OUT/ab_${tree}_$rep.json" \
      > "$OUT/ab_${tree}_$rep.txt" 2>&1)
    echo "== $tree rep $rep"; grep -E "long-text|train" "$OUT/ab_${tree}_$rep.txt" | tail -8
  done
done
