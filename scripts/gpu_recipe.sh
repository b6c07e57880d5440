#!/usr/bin/env bash
# The real-text recipe on a lent GPU machine (one H100/H200), from the repo root, carrying .whl and
# .carry (scripts/prepare_gpu_carry.sh: the LMDBs and wordfreq data as .carry/gpudata.tar.xz, the
# fonts of scripts/fetch_fonts.py as .carry/fonts.tar.xz; compressed, the working tree fits the
# device tool's 64 MiB; .prebuilt too, if made, to skip the ~70 s build: scripts/gpu_build.sh). Results go to $OUT.
#   bash scripts/gpu_recipe.sh ablation   # synth-only runs of the tiny Mamba, one per engine variant (VARIANTS), side
#                                         # by side; scored on the real training splits (held out here) + benchmarks
#   bash scripts/gpu_recipe.sh throughput # loader img/s (LOADER_WORKERS, default 7 and 15), the model's and the trainer's
#                                         # train step at batch 256 (STEP_BENCH=0: not), and with TRAIN_STEPS=N the
#                                         # training loop for N steps (RECIPE_ARGS="Global.profile_steps=[a,b]": a profile)
#   bash scripts/gpu_recipe.sh start      # the recipe configs (CONFIGS, side by side; default the Mamba one) in the
#                                         # background (setsid), then watch them for WATCH seconds (RECIPE_ARGS,
#                                         # SUFFIX: a variant; RUN_PLAN: runs with their own overrides, below)
#   bash scripts/gpu_recipe.sh finish     # watch until the runs end (RUNS: one of them), then eval_rec (per-sample
#                                         # predictions too, for tools/compare_rec.py; EVAL_SETS=config: the config's
#                                         # Eval sets instead of the benchmarks), releases (RELEASE=name) and a results
#                                         # tarball; EVAL=0: no eval_rec, every run's fp16 release comes back instead
#                                         # (evaluate it with eval_rec on any machine)
# A start or finish call that ends while runs still train returns progress.tar.gz (logs) and snapshot_RUN/
# (the fp16 weights of each run's last save), in case the machine is gone by the next call.
# A lent machine is held at most 30 minutes and goes back 30 s after a call ends: start and finish must
# run on the same one, in calls that follow each other at once. The recipe as in README (its 15 loader
# workers want the whole machine, so one model at a time; CONFIGS=svtrv2_tiny_real for the twin):
#   RECIPE_ARGS="Global.cuda_graphs=true" bash scripts/gpu_recipe.sh start
# A recipe change judged on held-out real crops, not the benchmarks (the _holdout config; the two runs in turn):
#   CONFIGS=svtrv2_mamba_tiny_real_holdout RECIPE_ARGS="Global.cuda_graphs=true" ... start, then EVAL_SETS=config ... finish
#   the same with SUFFIX=_arc RECIPE_ARGS="Global.cuda_graphs=true Train.datasets.0.style.p_arc=0.05"
# or both at once on a machine of two GPUs (nvidia-h100-x2: 32 cores, so each run keeps 15 loader workers),
# one line per run, "config|suffix|its own overrides" (each run gets a GPU of its own when there is one each):
#   RUN_PLAN=$'svtrv2_mamba_tiny_real_holdout||\nsvtrv2_mamba_tiny_real_holdout|_arc|Train.datasets.0.style.p_arc=0.05' \
#     RECIPE_ARGS="Global.cuda_graphs=true" bash scripts/gpu_recipe.sh start
# The lr-matched Mamba run of README:
#   CONFIGS=svtrv2_mamba_tiny_real SUFFIX=_lr5e-4 RECIPE_ARGS="Optimizer.lr=0.0005" bash scripts/gpu_recipe.sh start
set -uo pipefail
MODE=${1:?mode}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# Background runs live outside the working tree: the device tool re-syncs the tree at the start of every
# call, and a run that read its fonts through the tree's data link lost them mid-run (every synthetic
# sample then failed with "OSError: cannot open resource"). Data, a code snapshot and outputs go here.
WORK=${RECIPE_WORK:-/tmp/openrec_recipe}
GPUDATA=$WORK/gpudata
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$GPUDATA/site:$PWD PYTHONUNBUFFERED=1
# The system compiler: the lent image's CXX wrapper links libstdc++ statically, and an extension built
# with it crashes on its first C++ exception instead of raising (csrc/README.md).
export CC=${OPENREC_CC:-gcc} CXX=${OPENREC_CXX:-g++}
for tarball in .carry/*.tar.xz; do  # unpacked once per machine; a warm machine keeps them
  pack=$(basename $tarball .tar.xz)
  if [ ! -f $GPUDATA/$pack.unpacked ]; then  # font packs go beside the LMDBs: data/fonts*
    mkdir -p $GPUDATA && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
      $tarball $([ $pack = gpudata ] && echo $GPUDATA || echo $GPUDATA/data) && touch $GPUDATA/$pack.unpacked
  fi
done
ln -sfn $GPUDATA/data data
source scripts/gpu_build.sh
ls openrec/_C*.so >/dev/null 2>&1 || gpu_build || exit 1
python3 -c "import openrec.ops as o; print('kernels:', o.cuda_kernels_status())"
C=configs/rec/svtrv2
REAL_SPLITS="{type: lmdb, path: data/real_train/IIIT5k_train_2000}, {type: lmdb, path: data/real_train/SVT_train_257}, {type: lmdb, path: data/real_train/IC15_train_4468}"
BENCH="{type: lmdb, path: data/benchmarks/IIIT5k_3000}, {type: lmdb, path: data/benchmarks/SVT_647}, {type: lmdb, path: data/benchmarks/IC13_857}"
# Text fitted to the real training splits' statistics (about half UPPER, short common words, mean length ~5).
REAL_TEXT="text_mix: [0.8, 0.05, 0.1, 0.05, 0.0], case_weights: [0.25, 0.25, 0.5], word_temperature: 0.9, max_random_len: 8"

runs_alive() {  # a recipe run (RUNS: the one of that name) is still training
  pgrep -f "tools/train_rec.py.*output/recipe/${RUNS:-}" >/dev/null
}

watch_runs() {  # $1 = seconds; prints the last log line of each run every minute; returns early when all ended
  # (RUNS: only the run of that name, in finish as well: one run can be evaluated while the other trains)
  local until=$(( $(date +%s) + $1 )) tick=0
  while [ "$(date +%s)" -lt $until ]; do
    sleep 15; tick=$(( tick + 1 ))
    runs_alive || break
    [ $(( tick % 4 )) = 0 ] || continue
    for r in $WORK/output/recipe/*/; do printf '%s: %s\n' "$(basename $r)" "$(grep -E 'step [0-9]+/' $r/train.log 2>/dev/null | tail -1 | cut -c1-110)"; done
  done
}

snapshot_progress() {  # runs still training at the end of a call: their logs so far, and the fp16 weights of
  # each one's last save (Global.save_every) as a release folder, so that a machine lost before the next call
  # (device time spent, taken back) still leaves a model to evaluate (the release's meta names its step)
  local logs; logs=$(cd $WORK && ls output/recipe/*/history.jsonl output/recipe/*/train.log 2>/dev/null)
  [ -n "$logs" ] && tar -C $WORK -czf "$OUT/progress.tar.gz" $logs  # none yet right after a start with WATCH=0
  for R in $WORK/output/recipe/${RUNS:-*}/; do
    R=${R%/}; [ -f $R/latest.pth ] || continue
    python3 tools/export_release.py --checkpoint $R/latest.pth --out "$OUT/snapshot_$(basename $R)" > "$OUT/snapshot_$(basename $R).log" 2>&1 \
      && tail -1 "$OUT/snapshot_$(basename $R).log" || { echo "snapshot of $R failed:"; tail -5 "$OUT/snapshot_$(basename $R).log"; }
  done
}

plan_runs() {  # one line per run, "config|suffix|overrides": RUN_PLAN's lines, else each of CONFIGS with SUFFIX
  if [ -n "${RUN_PLAN:-}" ]; then printf '%s\n' "$RUN_PLAN" | grep -v '^[[:space:]]*$'
  else for cfg in ${CONFIGS:-svtrv2_mamba_tiny_real}; do echo "$cfg|${SUFFIX:-}|"; done; fi
}

launch_runs() {  # every planned run in the background (setsid). Several runs share the CPU cores for their
  # loaders (Train.num_workers = cores / runs - 1; RECIPE_ARGS can still set it) and, where the machine has a GPU
  # for each, get one GPU each (CUDA_VISIBLE_DEVICES); otherwise they share the GPU. DRY_RUN=1 prints the commands.
  local plan n gpus cores workers i=0 cfg suffix extra device
  plan=$(plan_runs); n=$(printf '%s\n' "$plan" | grep -c .)
  while IFS='|' read -r cfg suffix extra; do  # checked before any run starts
    [ -f "$C/$cfg.yml" ] || { echo "gpu_recipe: no config $C/$cfg.yml" >&2; return 1; }
  done <<< "$plan"
  local shared; shared=$(printf '%s\n' "$plan" | cut -d'|' -f1,2 | sort | uniq -d | tr '|' ' ')
  [ -z "$shared" ] || { echo "gpu_recipe: two runs would write one output folder ($shared): give them suffixes" >&2; return 1; }
  gpus=${GPU_COUNT:-$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)}
  cores=${CPU_COUNT:-$(nproc)}
  workers=""; [ "$n" -gt 1 ] && workers="Train.num_workers=$(( cores / n > 1 ? cores / n - 1 : 1 ))"
  while IFS='|' read -r cfg suffix extra; do
    device=""; [ "$n" -gt 1 ] && [ "$gpus" -ge "$n" ] && device=$i
    i=$(( i + 1 ))
    local cmd="python3 tools/train_rec.py --c $C/$cfg.yml --o Global.output_dir=$WORK/output/recipe/$cfg$suffix"
    cmd+=" Global.use_tensorboard=false $workers ${RECIPE_ARGS:-} $extra"
    if [ "${DRY_RUN:-0}" = 1 ]; then echo "${device:+CUDA_VISIBLE_DEVICES=$device }$cmd"; continue; fi
    # The outer redirection too: the shell that runs the backgrounded `cd && python3` list keeps this
    # script's stdout until the run ends, so `gpu_recipe.sh start | tail` would wait for the whole run.
    (cd $WORK/code && { [ -z "$device" ] || export CUDA_VISIBLE_DEVICES=$device; } \
      && PYTHONPATH=/tmp/site:$GPUDATA/site:$WORK/code setsid nohup $cmd \
      > $WORK/output/recipe/$cfg$suffix.stdout 2>&1 < /dev/null &) > /dev/null 2>&1 < /dev/null
  done <<< "$plan"
}

if [ "$MODE" = ablation ]; then
  STEPS=${STEPS:-1500}
  rm -rf output/ablation  # a warm machine keeps the last ablation's runs
  declare -A STYLE=(
    [default]="preset: default"
    [scene]="preset: scene"
    [scene_real_text]="preset: scene, style: {$REAL_TEXT}"
    [scene_real_text_uniform_colour]="preset: scene, style: {$REAL_TEXT, color_mode: uniform}"
    [scene_fonts]="preset: scene, font_dirs: [data/fonts]"  # the recipe's fonts (.carry/fonts.tar.xz)
    [scene_fonts_arc]="preset: scene, font_dirs: [data/fonts], style: {p_arc: 0.15}"  # + text along circular arcs
  )
  VARIANTS=${VARIANTS:-default scene scene_real_text scene_real_text_uniform_colour}
  for v in $VARIANTS; do
    python3 tools/train_rec.py --c $C/svtrv2_mamba_tiny_real.yml --o Global.max_steps=$STEPS Global.max_minutes=${MINUTES:-7} \
      Global.eval_every=null Global.save_every=null Global.log_every=100 Global.plot=false Global.use_tensorboard=false \
      "Train.datasets=[{type: synth, num_samples: 300000, seed: 0, ${STYLE[$v]}}]" Train.batch_size=128 \
      Train.num_workers=${WORKERS:-3} "Eval.datasets=[$REAL_SPLITS, $BENCH]" Eval.num_workers=1 \
      Global.output_dir=output/ablation/$v > "$OUT/ablation_$v.log" 2>&1 &
  done
  wait
  for v in $VARIANTS; do grep -E "step [0-9]+/" "$OUT/ablation_$v.log" | tail -1 | cut -c1-120; done
  python3 scripts/summarize_runs.py output/ablation/* --sets IIIT5k_train_2000 SVT_train_257 IC15_train_4468 \
    --json "$OUT/ablation.json"
elif [ "$MODE" = throughput ]; then
  for cfg in ${CONFIGS:-svtrv2_mamba_tiny_real}; do
    for w in ${LOADER_WORKERS:-7 15}; do  # LOADER_WORKERS=none: no loader benchmark
      [ "$w" = none ] && continue
      echo "$cfg loader, $w workers:"; python3 tools/bench_data.py --c $C/$cfg.yml --o Train.num_workers=$w ${RECIPE_ARGS:-} \
        --batches 60 --warmup 10 2>&1 | tail -1
    done
    if [ "${STEP_BENCH:-1}" = 1 ]; then
      echo "$cfg train step, B256 32x128 bf16 (model, loss, AdamW; then the trainer's own step):"
      python3 tools/bench_train_step.py --c $C/$cfg.yml --batch 256 --steps 30 --amp bf16 2>&1 | tail -1
      python3 tools/bench_train_step.py --c $C/$cfg.yml --batch 256 --steps 30 --amp bf16 --trainer 2>&1 | tail -2
    fi
    if [ -n "${TRAIN_STEPS:-}" ]; then  # the whole loop, loader and step together: img/s and data wait per log line
      rm -rf output/throughput/$cfg
      python3 tools/train_rec.py --c $C/$cfg.yml --o Global.max_steps=$TRAIN_STEPS Global.log_every=50 \
        Global.eval_every=null Global.save_every=null Global.use_tensorboard=false Global.plot=false \
        "Eval.datasets=[{type: lmdb, path: data/benchmarks/SVT_647}]" Global.output_dir=output/throughput/$cfg \
        ${RECIPE_ARGS:-} > "$OUT/train_$cfg.log" 2>&1
      echo "$cfg training loop, $TRAIN_STEPS steps:"; grep -E "step [0-9]+/" "$OUT/train_$cfg.log" | cut -c22-170 | tail -8
      grep -E "skipped samples|Error" "$OUT/train_$cfg.log" | tail -2
      if [ -f output/throughput/$cfg/profile_steps.txt ]; then  # Global.profile_steps in RECIPE_ARGS
        cp output/throughput/$cfg/profile_steps.txt "$OUT/profile_steps_$cfg.txt"; head -4 "$OUT/profile_steps_$cfg.txt"
      fi
      if [ "${EVAL_TIMING:-0}" = 1 ]; then  # the evaluation alone, on the loop's last checkpoint
        start=$(date +%s.%N)
        python3 tools/eval_rec.py --c output/throughput/$cfg/config.yml --o Global.checkpoints=output/throughput/$cfg/latest.pth \
          --sets data/benchmarks/IIIT5k_3000 data/benchmarks/SVT_647 data/benchmarks/IC13_857 > "$OUT/eval_$cfg.txt" 2>&1
        echo "$cfg eval_rec on the three benchmarks: $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s; $(grep Average "$OUT/eval_$cfg.txt")"
      fi
    fi
  done
elif [ "$MODE" = start ]; then
  # a snapshot of the code (kernels included) with its own data link, run from there
  rm -rf $WORK/code && mkdir -p $WORK/code $WORK/output/recipe && cp -r openrec tools configs $WORK/code/
  ln -sfn $GPUDATA/data $WORK/code/data
  launch_runs || exit 1
  watch_runs ${WATCH:-500}
  runs_alive && snapshot_progress
elif [ "$MODE" = finish ]; then
  watch_runs ${WATCH:-560}
  if runs_alive; then  # the logs so far come back
    snapshot_progress
    echo "still training"; exit 3
  fi
  mkdir -p "$OUT/results"
  # EVAL_SETS=config: the runs' own Eval sets (a _holdout config's held-out real crops), not the benchmarks
  sets=(--sets data/benchmarks/IIIT5k_3000 data/benchmarks/SVT_647 data/benchmarks/IC13_857)
  avg_sets=(IIIT5k_3000 SVT_647 IC13_857)
  if [ "${EVAL_SETS:-benchmarks}" = config ]; then
    sets=(); avg_sets=("IIIT5k_train_2000[holdout]" "SVT_train_257[holdout]" "IC15_train_4468[holdout]")
  fi
  for R in $WORK/output/recipe/${RUNS:-*}/; do
    R=${R%/}; name=$(basename $R)
    [ -f $R/latest.pth ] || continue
    tail -n 3 $R.stdout
    if [ "${EVAL:-1}" = 0 ]; then  # short of hold time: bring the fp16 weights back and evaluate them elsewhere
      python3 tools/export_release.py --checkpoint $R/latest.pth --out "$OUT/release_$name"
    else
      python3 tools/eval_rec.py --c $R/config.yml --o Global.checkpoints=$R/latest.pth --json "$OUT/results/${name}_eval.json" \
        --predictions "$OUT/results/${name}_predictions.tsv" "${sets[@]}" | tee "$OUT/results/${name}_eval.txt"
      [ "${RELEASE:-}" = "$name" ] && python3 tools/export_release.py --checkpoint $R/latest.pth --out "$OUT/release_$name"
    fi
    for f in history.jsonl train.log curves.png summary.json config.yml; do
      [ -f $R/$f ] && cp $R/$f "$OUT/results/${name}_$f"; done
  done
  python3 scripts/summarize_runs.py $WORK/output/recipe/*/ --sets "${avg_sets[@]}" | tee "$OUT/results/summary.txt"
  tar -C "$OUT" -czf "$OUT/results${RUNS:+_$RUNS}.tar.gz" results && rm -rf "$OUT/results"
fi
