#!/usr/bin/env bash
# What a batch shape seen for the first time costs (tools/bench_new_shapes.py) and the evaluation's
# wall time with the released model, under two depthwise-convolution routings; then the depthwise
# kernel's GPU tests. On a lent GPU machine from the repo root, carrying .whl and .carry
# (scripts/prepare_gpu_carry.sh). Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 CC=${OPENREC_CC:-gcc} CXX=${OPENREC_CXX:-g++}
source scripts/gpu_build.sh
ls openrec/_C*.so >/dev/null 2>&1 || gpu_build || exit 1
DATA=/tmp/new_shape_data
[ -d $DATA/data ] || python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
  .carry/gpudata.tar.xz $DATA
C=configs/rec/svtrv2
ARMS=${ARMS:-auto kernel}
# OPENREC_CUDNN_ATTENTION=1: the switch arms keep cuDNN's attention backend, as the default was before
# 2026-12-07 (perf note 64); the --sdpa-without-cudnn arm takes it away, as the default does now.
OPENREC_CUDNN_ATTENTION=1 python3 tools/bench_new_shapes.py --configs $C/svtrv2_mamba_tiny_real.yml $C/svtrv2_tiny_real.yml \
  --env OPENREC_DWCONV --values $ARMS --sdpa-without-cudnn --shapes ${SHAPES:-3} --json "$OUT/new_shapes.json" 2>&1 | grep -v Warning
for arm in $ARMS; do  # the released Mamba-T on the three benchmarks, a fresh process each
  start=$(date +%s.%N)
  OPENREC_DWCONV=$arm python3 tools/eval_rec.py --sets $DATA/data/benchmarks/IIIT5k_3000 $DATA/data/benchmarks/SVT_647 \
    $DATA/data/benchmarks/IC13_857 > "$OUT/eval_release_$arm.txt" 2>&1
  echo "eval_rec, released model, OPENREC_DWCONV=$arm: $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s;" \
    "$(grep Average "$OUT/eval_release_$arm.txt")"
done
[ "${TESTS:-1}" = 1 ] && python3 -m pytest -q -x tests/gpu/test_dwconv_kernel.py 2>&1 | tail -3
