#!/usr/bin/env bash
# Builds the CUDA extension, runs the kernel tests and the ops benchmark, on a lent GPU machine:
#   bash scripts/gpu_kernels_check.sh            # build + tests/gpu + tests/ops + tools/bench_ops.py
#   SKIP_BUILD=1 bash scripts/gpu_kernels_check.sh   # reuse the build of a warm machine
#   PARTS="tests ops rec" ...   # choose: kernel tests, tools/bench_ops.py, tools/bench_rec.py (SIZES="tiny base" pairs)
#   PARTS=mix ...   # the recipe's train step (GTC head, bf16, graphed) at each of its batch shapes, Mamba-T vs
#                   # the twin, weighted by docs/bench/recipe_shape_mix.json (scripts/recipe_shape_mix.py)
#   PARTS=trainer ...   # the trainer's own step (grad clipping, scheduler, device-side finite check, graphed
#                       # encoder) for the two recipe configs at TRAINER_SHAPES (BxHxW), synthetic data only
#   PARTS=profile ...   # bench_rec.py --profile-detail of PROFILES (default: the recipe's 40x112 bucket) for both
# Expects .whl/ from scripts/prepare_gpu_carry.sh (carry it; also .prebuilt, if made, to skip the ~70 s
# build: scripts/gpu_build.sh). Results go to $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# The system compiler: the lent image's CXX wrapper links libstdc++ statically, and an extension built
# with it crashes on its first C++ exception instead of raising (csrc/README.md).
export CC=${OPENREC_CC:-gcc} CXX=${OPENREC_CXX:-g++}
nvidia-smi -L
source scripts/gpu_build.sh
[ "${SKIP_BUILD:-0}" = 1 ] || gpu_build
python3 -c "import openrec.ops as o; print('kernels:', o.cuda_kernels_status())"
PARTS=${PARTS:-tests ops}
if [[ $PARTS == *tests* ]]; then
OPENREC_REQUIRE_KERNELS=1 python3 -m pytest -q -p no:cacheprovider tests/gpu tests/ops ${PYTEST_ARGS:-} \
  > "$OUT/tests.log" 2>&1 || true
tail -30 "$OUT/tests.log"
fi
if [[ $PARTS == *ops* ]]; then
python3 tools/bench_ops.py --json "$OUT/bench_ops.json" ${BENCH_ARGS:-} > "$OUT/bench_ops.txt" 2>&1 || true
if [ "${DAS_MODES:-0}" = 1 ]; then  # compare the two DAS backward paths
OPENREC_DAS_BACKWARD=atomic python3 tools/bench_ops.py --ops das --skip-torch --json "$OUT/bench_das_atomic.json" \
  > "$OUT/bench_das_atomic.txt" 2>&1 || true
OPENREC_DAS_BACKWARD=owned python3 tools/bench_ops.py --ops das --skip-torch --json "$OUT/bench_das_owned.json" \
  > "$OUT/bench_das_owned.txt" 2>&1 || true
echo "== atomic DAS backward"; tail -14 "$OUT/bench_das_atomic.txt" | head -9
echo "== owned DAS backward"; tail -14 "$OUT/bench_das_owned.txt" | head -9
fi
echo "== bench_ops"; tail -32 "$OUT/bench_ops.txt"
fi
C=configs/rec/svtrv2
RECIPE_PAIR="$C/svtrv2_mamba_tiny_real.yml $C/svtrv2_tiny_real.yml"  # the mix, trainer and profile parts
if [[ $PARTS == *rec* ]]; then
  for size in ${SIZES:-tiny base}; do
    python3 tools/bench_rec.py --configs $C/svtrv2_mamba_${size}_gtc_rctc.yml $C/svtrv2_${size}_gtc_rctc.yml --rctc \
      --json "$OUT/bench_rec_$size.json" ${REC_ARGS:-} > "$OUT/bench_rec_$size.txt" 2>&1 || true
    echo "== bench_rec $size"; grep -A30 "^NVIDIA" "$OUT/bench_rec_$size.txt" || tail -20 "$OUT/bench_rec_$size.txt"
  done
fi
if [[ $PARTS == *mix* ]]; then
  python3 tools/bench_rec.py --configs $RECIPE_PAIR \
    --shape-mix docs/bench/recipe_shape_mix.json --json "$OUT/bench_rec_mix.json" ${MIX_ARGS:-} \
    > "$OUT/bench_rec_mix.txt" 2>&1 || true
  echo "== bench_rec recipe mix"; grep -A14 "^NVIDIA" "$OUT/bench_rec_mix.txt" || tail -20 "$OUT/bench_rec_mix.txt"
fi
if [[ $PARTS == *trainer* ]]; then
  for shape in ${TRAINER_SHAPES:-256x32x128 256x40x112 204x32x160}; do
    IFS=x read -r b h w <<< "$shape"
    for cfg in $RECIPE_PAIR; do
      python3 tools/bench_train_step.py --c $cfg --trainer --batch $b --height $h --width $w --steps ${TRAINER_STEPS:-30} \
        --o Global.cuda_graphs=true "Train.datasets=[{type: synth, num_samples: 1000, preset: scene, seed: 0}]" \
        >> "$OUT/trainer_step.txt" 2>&1 || echo "$cfg $shape failed" >> "$OUT/trainer_step.txt"
    done
  done
  echo "== trainer step"; grep "trainer step\|failed" "$OUT/trainer_step.txt"
fi
if [[ $PARTS == *profile* ]]; then
  python3 tools/bench_rec.py --configs $RECIPE_PAIR \
    --profile ${PROFILES:-train_graph:256:40x112:bf16} --profile-detail > "$OUT/profile_recipe.txt" 2>&1 || true
  echo "== profile"; grep -- "-- profile\|Self CUDA time total" "$OUT/profile_recipe.txt"
fi
