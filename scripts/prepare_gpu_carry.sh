#!/usr/bin/env bash
# Prepares what scripts/gpu_train_check.sh needs on a lent GPU machine that has no package index:
#   .whl/      wheels for Python 3.12 of what its image lacks (lmdb, wordfreq's dependencies, font packages)
#   .gpudata/  site/wordfreq (English data only: the full wheel is 57 MB) and data/ (the LMDBs from ../shared)
#   .carry/    gpudata.tar.xz (.gpudata compressed: LMDB pages are half padding) and fonts.tar.xz (the
#              fonts of scripts/fetch_fonts.py, when FONTS=1); the recipe script unpacks them
#   .prebuilt/ with PREBUILT_PYTHON=path (a Python 3.12 whose torch is the GPU machines' CUDA build,
#              e.g. a venv with torch==2.11.0 from the package index): the extensions compiled here for
#              PREBUILT_ARCH (default 9.0a: the lent machines export TORCH_CUDA_ARCH_LIST=9.0a), stamped (scripts/prebuilt_ext.py); the GPU scripts use them instead of compiling
#              when the stamp matches (~3 MiB; PREBUILT_ONLY=1 makes only this, e.g. after a csrc/ edit)
# The folders are git-ignored (.git/info/exclude) and passed with the device tool's `carry`: .whl and
# .carry for the recipe, .prebuilt for any GPU script (the tree, the wheels and .gpudata uncompressed
# exceed the tool's 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
if [ -n "${PREBUILT_PYTHON:-}" ]; then  # compiled in a copy, so the tree keeps this machine's own build
  grep -qx '/.prebuilt/' .git/info/exclude 2>/dev/null || printf '/.prebuilt/\n' >> .git/info/exclude
  tree=$(mktemp -d)
  cp -r setup.py pyproject.toml README.md csrc openrec "$tree"/
  find "$tree/openrec" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
  # part of the stamp: it must equal the GPU machine's TORCH_CUDA_ARCH_LIST (9.0a in the lent image, checked
  # 2026-12-08; scripts/gpu_build.sh falls back to 9.0 only where it is unset)
  export TORCH_CUDA_ARCH_LIST=${PREBUILT_ARCH:-9.0a}
  (cd "$tree" && OPENREC_CUDA=1 OPENREC_CPU=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} CC=gcc CXX=g++ \
    "$PREBUILT_PYTHON" setup.py build_ext --inplace > build.log 2>&1) || { tail -30 "$tree/build.log"; exit 1; }
  "$PREBUILT_PYTHON" scripts/prebuilt_ext.py pack .prebuilt --root "$tree"
  rm -rf "$tree"
  [ "${PREBUILT_ONLY:-0}" = 1 ] && exit 0
fi
mkdir -p .whl .gpudata/site .gpudata/data
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || printf '/.whl/\n/.gpudata/\n' >> .git/info/exclude
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || printf '/.carry/\n' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  lmdb==3.0.0 ftfy==6.3.1 langcodes==3.5.1 locate==1.1.1 msgpack==1.2.4 regex wcwidth
python3 -m pip wheel -q --no-deps -w .whl font-roboto font-source-sans-pro font-source-serif-pro font-caladea \
  font-lato font-manrope font-fredoka-one font-hanken-grotesk font-intuitive font-fjallaone font-rhd
W=$(python3 -c "import wordfreq, os; print(os.path.dirname(wordfreq.__file__))")
rm -rf .gpudata/site/wordfreq && cp -r "$W" .gpudata/site/wordfreq
find .gpudata/site/wordfreq/data -type f ! -name '*_en.msgpack.gz' -delete
rm -rf .gpudata/site/wordfreq/__pycache__
for d in benchmarks/IIIT5k_3000 benchmarks/SVT_647 benchmarks/IC13_857 \
         real_train/IIIT5k_train_2000 real_train/SVT_train_257 real_train/IC15_train_4468; do
  mkdir -p ".gpudata/data/$(dirname $d)" && rm -rf ".gpudata/data/$d" && cp -r "../shared/$d" ".gpudata/data/$d"
done
mkdir -p .carry
tar -C .gpudata -cf - data site | xz -9 -T0 > .carry/gpudata.tar.xz
if [ "${FONTS:-0}" = 1 ]; then  # pinned by the manifest committed beside the recipe configs
  rm -rf .carry/fonts && python3 scripts/fetch_fonts.py --out .carry/fonts --manifest configs/rec/svtrv2/fonts_manifest.tsv
  tar -C .carry -cf - fonts | xz -9 -T0 > .carry/fonts.tar.xz && rm -rf .carry/fonts
fi
du -sh .whl .gpudata .carry/*
