#!/usr/bin/env bash
# GPU checks of the training pipeline, run on a lent GPU machine from the repo root:
#   bash scripts/gpu_train_check.sh ddp     # (2 GPUs) CUDA tests; 1 GPU x 256 vs 2 GPUs x 128: losses + img/s
#   bash scripts/gpu_train_check.sh train   # (1 GPU) CUDA tests; design config, bf16, synth + real_train, eval on benchmarks
#   bash scripts/gpu_train_check.sh segment # (1 GPU) the same run in segments: each call resumes from
#                                           # output/gpu_design/latest.pth (kept while the machine is warm)
#   bash scripts/gpu_train_check.sh curve   # (1 GPU) same seed, same batches, STEPS (300) steps of tiny
#                                           # SVTRv2Mamba: PyTorch ops fp32 vs CUDA kernels fp32 vs kernels bf16
#                                           # (CURVE=layer_norm / CURVE=dwconv: kernels bf16 with vs without the
#                                           # LayerNorm / fused depthwise-conv kernel; CURVE=linear: with vs
#                                           # without the column-sum bias gradients)
# Expects .whl/ and .gpudata/ made by scripts/prepare_gpu_carry.sh (carry both with the device tool).
set -euo pipefail
MODE=${1:?mode}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/.gpudata/site:$PWD PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi -L
D=.gpudata/data
CFG=configs/rec/svtrv2/svtrv2_mamba_gtc_rctc.yml
TRAIN_SETS="Train.datasets=[{type: synth, num_samples: 400000, preset: default, seed: 0}, {type: lmdb, path: $D/real_train/IIIT5k_train_2000}, {type: lmdb, path: $D/real_train/SVT_train_257}, {type: lmdb, path: $D/real_train/IC15_train_4468}]"
EVAL_SETS="Eval.datasets=[{type: lmdb, path: $D/benchmarks/IIIT5k_3000}, {type: lmdb, path: $D/benchmarks/SVT_647}, {type: lmdb, path: $D/benchmarks/IC13_857}]"

if [ "$MODE" = ddp ]; then
  python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tail -15
  COMMON=(Global.max_steps=160 Global.log_every=1 Global.use_tensorboard=false Global.plot=false "$TRAIN_SETS"
          "Eval.datasets=[]" Train.num_workers=12 Global.save_every=null)
  CUDA_VISIBLE_DEVICES=0 python3 tools/train_rec.py --c $CFG --o "${COMMON[@]}" Train.batch_size=256 \
      Global.output_dir=$OUT/one_gpu > $OUT/one_gpu.log 2>&1 || { tail -30 $OUT/one_gpu.log; exit 1; }
  torchrun --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=29511 tools/train_rec.py --c $CFG \
      --o "${COMMON[@]}" Train.batch_size=128 Global.output_dir=$OUT/two_gpu > $OUT/two_gpu.log 2>&1 || { tail -30 $OUT/two_gpu.log; exit 1; }
  python3 scripts/compare_runs.py $OUT/one_gpu/history.jsonl $OUT/two_gpu/history.jsonl --skip 40 | tee $OUT/ddp_compare.txt
elif [ "$MODE" = train ]; then
  python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tail -15
  STEPS=${STEPS:-2000}
  python3 tools/bench_train_step.py --c $CFG --batch 128 --steps 30 2>&1 | tail -3
  python3 tools/train_rec.py --c $CFG --o Global.max_steps=$STEPS Global.max_minutes=${MINUTES:-7} \
      Global.eval_every=1000 Global.save_every=1000 \
      Global.log_every=50 "$TRAIN_SETS" "$EVAL_SETS" Train.num_workers=14 Eval.num_workers=4 \
      LRScheduler.warmup_steps=300 Optimizer.lr=0.0008 Global.output_dir=$OUT/design 2>&1 | grep -v "^epoch" | tee $OUT/design.log | tail -40
  python3 tools/eval_rec.py --c $CFG --o Global.checkpoints=$OUT/design/latest.pth "$EVAL_SETS" --json $OUT/design_eval.json
  rm -f $OUT/design/*.pth; rm -rf $OUT/design/tensorboard
elif [ "$MODE" = curve ]; then
  # Same seed, same synthetic batches (12 workers, fixed order): does the fast path change training?
  TINY=configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml
  COMMON=(Global.max_steps=${STEPS:-300} Global.log_every=1 Global.use_tensorboard=false Global.plot=false
          Global.seed=7 "Train.datasets=[{type: synth, num_samples: 400000, preset: scene, seed: 3}]"
          "Eval.datasets=[]" Train.num_workers=12 Train.batch_size=128 Global.save_every=null)
  run() {  # name, env, amp
    env $2 python3 tools/train_rec.py --c $TINY --o "${COMMON[@]}" Global.use_amp=$3 Global.output_dir=$OUT/$1 \
      > $OUT/$1.log 2>&1 || { tail -30 $OUT/$1.log; exit 1; }
    rm -f $OUT/$1/*.pth
  }
  if [ "${CURVE:-ops}" = layer_norm ]; then  # the LayerNorm kernel against PyTorch's LayerNorm, kernels + bf16
    run ln_torch_bf16 OPENREC_LAYER_NORM=torch true
    run ln_kernel_bf16 OPENREC_LAYER_NORM=kernel true
    echo "== ln_torch_bf16 vs ln_kernel_bf16"
    python3 scripts/compare_runs.py $OUT/ln_torch_bf16/history.jsonl $OUT/ln_kernel_bf16/history.jsonl --skip 40 \
      | tee $OUT/curve_layer_norm.txt
  elif [ "${CURVE:-ops}" = dwconv ]; then  # the fused depthwise 3x3 kernel against cuDNN + bias + epilogue
    run dw_torch_bf16 OPENREC_DWCONV=torch true
    run dw_kernel_bf16 OPENREC_DWCONV=kernel true
    echo "== dw_torch_bf16 vs dw_kernel_bf16"
    python3 scripts/compare_runs.py $OUT/dw_torch_bf16/history.jsonl $OUT/dw_kernel_bf16/history.jsonl --skip 40 \
      | tee $OUT/curve_dwconv.txt
  elif [ "${CURVE:-ops}" = linear ]; then  # bias gradients on the column-sum kernel against autograd's sum
    run lin_torch_bf16 OPENREC_LINEAR=torch true
    run lin_kernel_bf16 OPENREC_LINEAR=kernel true
    echo "== lin_torch_bf16 vs lin_kernel_bf16"
    python3 scripts/compare_runs.py $OUT/lin_torch_bf16/history.jsonl $OUT/lin_kernel_bf16/history.jsonl --skip 40 \
      | tee $OUT/curve_linear.txt
  else
    run torch_fp32 OPENREC_CUDA_KERNELS=0 false
    run kernels_fp32 OPENREC_CUDA_KERNELS=1 false
    run kernels_bf16 OPENREC_CUDA_KERNELS=1 true
    for b in kernels_fp32 kernels_bf16; do
      echo "== torch_fp32 vs $b"
      python3 scripts/compare_runs.py $OUT/torch_fp32/history.jsonl $OUT/$b/history.jsonl --skip 40 | tee $OUT/curve_$b.txt
    done
  fi
elif [ "$MODE" = segment ]; then
  RUN=output/gpu_design
  RESUME=(); [ -f $RUN/latest.pth ] && RESUME=(Global.checkpoints=$RUN/latest.pth)
  python3 tools/train_rec.py --c $CFG --o Global.max_steps=${STEPS:-2600} Global.max_minutes=${MINUTES:-7.5} \
      Global.eval_every=650 Global.save_every=250 Global.log_every=50 "$TRAIN_SETS" "$EVAL_SETS" \
      Train.num_workers=14 Eval.num_workers=4 LRScheduler.warmup_steps=300 Optimizer.lr=0.0008 \
      Global.output_dir=$RUN "${RESUME[@]}" 2>&1 | grep -v "^epoch" | tail -25
  cp $RUN/history.jsonl $RUN/train.log $RUN/curves.png $RUN/summary.json $OUT/ 2>/dev/null || true
fi
